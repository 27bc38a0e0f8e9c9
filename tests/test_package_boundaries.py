"""The three packages and what each may import.

``fer_runtime`` runs and explains exported models on machines without torch (and without a terminal UI), so
importing it must load neither torch nor textual; ``fer_tui`` adds textual, never torch (a training job runs
``fer-train`` in its own process); ``fer_train`` never imports the TUI. The checks that load modules run in
a fresh interpreter, because this test process has long imported everything. A second check reads the
source: no package imports another in a circle, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fer_runtime", "fer_train", "fer_tui")


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":  # importing it would start the program
            names.append(".".join(parts))
    return names


def _loaded_after_import(names: list[str]) -> set[str]:
    code = (f"import importlib, json, sys\nfor n in {names!r}: importlib.import_module(n)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


def _top(loaded: set[str], *roots: str) -> set[str]:
    return {m for m in loaded if m.split(".")[0] in roots}


def test_every_runtime_module_loads_neither_torch_nor_textual():
    loaded = _loaded_after_import(_modules("fer_runtime"))
    assert "fer_runtime.explain" in loaded
    assert not _top(loaded, "torch", "textual", "fer_train", "fer_tui", "onnx")


def test_every_tui_module_loads_no_torch():
    loaded = _loaded_after_import(_modules("fer_tui"))
    assert "fer_tui.app" in loaded and "textual" in loaded
    assert not _top(loaded, "torch", "fer_train")


def _imports_of(module: str) -> set[str]:
    """The project modules that ``module`` imports anywhere in its source (top level or inside functions)."""
    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    known = {m for p in PACKAGES for m in _modules(p)}
    return {m for m in found if m in known and m != module}


def test_fer_train_never_imports_the_tui_and_the_runtime_imports_neither():
    for module in _modules("fer_train"):
        assert not {m for m in _imports_of(module) if m.startswith("fer_tui")}, module
    for module in _modules("fer_runtime"):
        assert not {m for m in _imports_of(module) if m.startswith(("fer_tui", "fer_train"))}, module


def test_no_import_circles():
    graph = {m: {i for i in _imports_of(m) if not m.startswith(i + ".")}  # a module may read its own package's __init__
             for p in PACKAGES for m in _modules(p)}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph.get(module, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [module, nxt]
                raise AssertionError("import circle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_import_of_our_packages_names_a_module_that_exists():
    """A module moved to another package leaves no import behind that only fails when its function runs."""
    known = {m for p in PACKAGES for m in _modules(p)}
    missing = []
    for module in sorted(known):
        path = ROOT / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] not in PACKAGES:
                    continue
                if base not in known:  # `from pkg import name`: pkg must exist; name may be a module or an attribute
                    missing.append(f"{module}: {base}")
            elif isinstance(node, ast.Import):
                missing += [f"{module}: {a.name}" for a in node.names if a.name.split(".")[0] in PACKAGES and a.name not in known]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)
