"""Build hook: the wheel carries the default model family, so that ``pip install`` alone predicts.

Everything else about the distribution is in pyproject.toml. The family (``exported/fer-best.*``: the most
accurate model, its gate-passing speed variants, its explanation graphs and the one weights file they share) is
copied into ``fer_runtime/models/`` of the built package; git keeps a single copy of it, in ``exported/``. An
editable install reads the checkout's ``exported/`` instead. ``fer_runtime.catalog.default_model_dirs`` looks in
``exported/`` first and in the bundled folder only when no ``exported/`` has models.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED_FAMILY = "fer-best"  # tests/test_base_install.py checks the wheel holds it and nothing else of exported/
BUNDLED_PACKAGE_DIR = ("fer_runtime", "models")  # fer_runtime.catalog.BUNDLED_DIR


class BuildWithModels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        files = sorted(p for p in (ROOT / "exported").glob(BUNDLED_FAMILY + ".*") if p.is_file() and not p.name.endswith(".tmp.onnx"))
        if not files:
            raise SystemExit(f"exported/ holds no {BUNDLED_FAMILY}.* files to bundle: build from a checkout with its shipped models")
        target = Path(self.build_lib).joinpath(*BUNDLED_PACKAGE_DIR)
        self.mkpath(str(target))
        for path in files:
            self.copy_file(str(path), str(target / path.name))


setup(cmdclass={"build_py": BuildWithModels})
