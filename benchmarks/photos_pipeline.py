"""End-to-end speed of faces in photographs and videos: detection, cropping, classification, records.

    .venv/bin/python benchmarks/photos_pipeline.py              # about two minutes on 2 busy cores
    .venv/bin/python benchmarks/photos_pipeline.py --repeat 10  # steadier numbers on a quiet machine

Photographs are scikit-image's (inside its wheel): the astronaut (512×512, one face); a 1280×720 group of six
face photographs from ``lfw_subset`` pasted 110 px wide over a photograph without people; the astronaut scaled to
6,000×6,000 (36 megapixels, detected at 1,280 px by CenterFace, 1,600 by Haar). For each and each detector:
detection and classification in memory, and ``fer-predict`` on the file (decoding and writing included). Video: a
640×480 MJPG file of 100 frames, the astronaut's head and shoulders moving in each, through ``fer-predict`` with
CenterFace following the faces between whole-frame looks (the default), CenterFace on every whole frame
(``--track-every 1``) and Haar. Models: ``fer-best`` and the default of ``fer-predict`` (the most accurate
shipped), each at its fastest variant that passed the accuracy gate, as ``fer-predict`` runs them.
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
from fer_runtime.faces import DETECTORS, classify_faces, make_detector  # noqa: E402
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


VIDEO_RUNS = {"centerface, following (default)": [], "centerface, every frame whole": ["--track-every", "1"],
              "haar": ["--detector", "haar"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs for the in-memory timings")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime and OpenCV threads (default: all cores)")
    args = parser.parse_args(argv)
    import cv2
    from PIL import Image

    if args.threads:
        cv2.setNumThreads(args.threads)
    default = best_model(threads=args.threads, variant="auto")
    models = {"fer-best": load_classifier(REPO / "exported" / "fer-best.onnx", threads=args.threads, variant="auto"),
              default.name: default.runner}
    print(f"# photos_pipeline: {describe_machine()}\n")
    print("Models as run: " + ", ".join(f"{m} → {model.path.name}" for m, model in models.items()) + "\n")
    detectors = {name: make_detector(name, **({"threads": args.threads} if name == "centerface" else {})) for name in DETECTORS}
    print(f"In memory (best of {args.repeat}): detection, then classification of the faces found.\n")
    print("| picture | detector | faces found | detect ms | " + " | ".join(f"classify ms, {m}" for m in models) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(models))
    pictures = photographs()
    for name, rgb in pictures.items():
        for detector_name, detector in detectors.items():
            faces = detector.detect(rgb)
            detect = best_of(args.repeat, lambda: detector.detect(rgb))
            classify = {m: best_of(args.repeat, lambda model=model: classify_faces(faces, model)) for m, model in models.items()}
            print(f"| {name} | {detector_name} | {len(faces)} | {detect * 1000:.0f} | " + " | ".join(f"{classify[m] * 1000:.1f}" for m in models) + " |")

    threads = ["--threads", str(args.threads)] if args.threads else []
    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i, (name, rgb) in enumerate(pictures.items()):
            path = tmp / f"photo{i}.jpg"
            Image.fromarray(rgb).save(path, quality=90)
            files.append((name, path))
        video = tmp / "clip.avi"
        write_video(video)
        print("\nfer-predict on files (JPEG quality 90 / MJPG; decoding, detection, classification, JSON records), one run each, "
              "model loading included.\n")
        print("| input | detector | " + " | ".join(f"seconds, {m}" for m in models) + " | " + " | ".join(f"rate, {m}" for m in models) + " |")
        print("|---|---|" + "---:|" * (2 * len(models)))
        for name, path in files:
            for detector_name in DETECTORS:
                cells = {m: cli_seconds([str(path), "--model", str(model.requested or model.path), "--detector", detector_name, *threads])[0]
                         for m, model in models.items()}
                print(f"| {name} (JPEG) | {detector_name} | " + " | ".join(f"{cells[m]:.2f}" for m in models) + " | "
                      + " | ".join(f"{1 / cells[m]:.2f} photos/s" for m in models) + " |")
        for run, flags in VIDEO_RUNS.items():
            cells = {m: cli_seconds([str(video), "--model", str(model.requested or model.path), *flags, *threads])[0] for m, model in models.items()}
            print(f"| video 640×480, 100 frames, 1 face | {run} | " + " | ".join(f"{cells[m]:.2f}" for m in models) + " | "
                  + " | ".join(f"**{100 / cells[m]:.1f} frames/s**" for m in models) + " |", flush=True)


if __name__ == "__main__":
    main()
