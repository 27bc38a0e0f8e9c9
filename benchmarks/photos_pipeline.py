"""End-to-end speed of faces in photographs and videos: detection, cropping, classification, records.

    .venv/bin/python benchmarks/photos_pipeline.py              # about two minutes on 2 busy cores
    .venv/bin/python benchmarks/photos_pipeline.py --repeat 10  # steadier numbers on a quiet machine

Photographs are scikit-image's (inside its wheel): the astronaut (512×512, one face); a 1280×720 group of six
face photographs from ``lfw_subset`` pasted 110 px wide over a photograph without people; the astronaut scaled to
6,000×6,000 (36 megapixels, detected at 1,600 px). For each: ``predict_faces`` in memory (detection and
classification separately), and ``fer-predict`` on the file (decoding and writing included). Video: a 640×480 MJPG
file of 100 frames, the astronaut's head and shoulders in each, through ``fer-predict`` (every frame, and
``--stride 5``). Models: ``fer-best`` and the default of ``fer-predict`` (the most accurate shipped).
Prints Markdown tables headed by the date, CPU and load.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from face_crop_margin import describe_machine  # noqa: E402

from fer_runtime.catalog import best_model  # noqa: E402
from fer_runtime.classifier import load_classifier  # noqa: E402
from fer_runtime.composites import background, paste_faces, skimage_backgrounds  # noqa: E402
from fer_runtime.faces import FaceDetector, classify_faces, to_gray  # noqa: E402
from fer_runtime.predict_cli import main as fer_predict  # noqa: E402


def photographs() -> dict[str, np.ndarray]:
    import cv2
    from skimage import data

    astronaut = data.astronaut()
    rng = np.random.default_rng(0)
    lfw = (data.lfw_subset()[:6] * 255).round().astype(np.uint8)
    group = paste_faces(list(lfw), [110] * 6, background(skimage_backgrounds(), 720, 1280, rng), rng).image
    return {"astronaut 512×512, 1 face": astronaut,
            "group 1280×720, 6 faces": cv2.cvtColor(group, cv2.COLOR_GRAY2RGB),
            "astronaut 6000×6000 (36 MP), 1 face": cv2.resize(astronaut, (6000, 6000), interpolation=cv2.INTER_LINEAR)}


def write_video(path: Path, frames: int = 100) -> None:
    import cv2
    from skimage import data

    portrait = cv2.resize(data.astronaut()[0:300, 60:360], (400, 400), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480))
    for i in range(frames):
        frame = np.full((480, 640, 3), 80, np.uint8)
        x = 40 + (i % 50) * 3
        frame[40:440, x:x + 400] = portrait
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cli_seconds(args: list[str]) -> tuple[float, str]:
    """Wall time of one fer-predict run (records to a string), and what it said on stderr."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with redirect_stdout(out), redirect_stderr(err):
        code = fer_predict(args + ["--no-progress"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"fer-predict {' '.join(args)} failed:\n{err.getvalue()}")
    return seconds, err.getvalue()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs for the in-memory timings")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime and OpenCV threads (default: all cores)")
    args = parser.parse_args(argv)
    import cv2
    from PIL import Image

    if args.threads:
        cv2.setNumThreads(args.threads)
    default = best_model(threads=args.threads)
    models = {"fer-best": load_classifier(REPO / "exported" / "fer-best.onnx", threads=args.threads), default.name: default.classifier}
    print(f"# photos_pipeline: {describe_machine()}\n")
    detector = FaceDetector()
    print("In memory (`predict_faces` parts, best of {}): detection, then classification of the faces found.\n".format(args.repeat))
    print("| picture | faces found | detect ms | " + " | ".join(f"classify ms, {m}" for m in models) + " | "
          + " | ".join(f"faces/s, {m}" for m in models) + " |")
    print("|---|---:|---:|" + "---:|" * (2 * len(models)))
    pictures = photographs()
    for name, rgb in pictures.items():
        gray = to_gray(rgb)
        faces = detector.detect(gray)
        detect = best_of(args.repeat, lambda: detector.detect(gray))
        classify = {m: best_of(args.repeat, lambda model=model: classify_faces(faces, model)) for m, model in models.items()}
        rates = {m: len(faces) / (detect + classify[m]) for m in models}
        print(f"| {name} | {len(faces)} | {detect * 1000:.0f} | " + " | ".join(f"{classify[m] * 1000:.1f}" for m in models) + " | "
              + " | ".join(f"{rates[m]:.1f}" for m in models) + " |")

    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i, (name, rgb) in enumerate(pictures.items()):
            path = tmp / f"photo{i}.jpg"
            Image.fromarray(rgb).save(path, quality=90)
            files.append((name, path))
        video = tmp / "clip.avi"
        write_video(video)
        print("\nfer-predict on files (JPEG quality 90 / MJPG; decoding, detection, classification, JSON records), one run each.\n")
        print("| input | " + " | ".join(f"seconds, {m}" for m in models) + " | " + " | ".join(f"rate, {m}" for m in models) + " |")
        print("|---|" + "---:|" * (2 * len(models)))
        for name, path in files:
            cells = {m: cli_seconds([str(path), "--model", str(model.path)])[0] for m, model in models.items()}
            print(f"| {name} (JPEG) | " + " | ".join(f"{cells[m]:.2f}" for m in models) + " | "
                  + " | ".join(f"{1 / cells[m]:.2f} photos/s" for m in models) + " |")
        for stride in (1, 5):
            cells = {m: cli_seconds([str(video), "--model", str(model.path), "--stride", str(stride)])[0] for m, model in models.items()}
            frames = 100 // stride
            print(f"| video 640×480, 100 frames, 1 face, stride {stride} | " + " | ".join(f"{cells[m]:.2f}" for m in models) + " | "
                  + " | ".join(f"{frames / cells[m]:.1f} analysed frames/s" for m in models) + " |")
    print("\nSeconds are whole runs of fer-predict, loading the model included (about 0.1 s for fer-best, 0.5 s for an ensemble).")


if __name__ == "__main__":
    main()
