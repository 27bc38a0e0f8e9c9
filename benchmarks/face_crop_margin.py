"""How should a face found by OpenCV's Haar cascade be cropped so that it looks like FER2013's own faces?

    .venv/bin/python benchmarks/face_crop_margin.py               # all 2,872 validation faces (25–50 min on 2 busy cores)
    .venv/bin/python benchmarks/face_crop_margin.py --faces 600   # a quicker look

FER2013's faces were cut out of web images around the box of OpenCV's face detector (``fer-predict --detector
haar``; the default detector, CenterFace, is calibrated by ``benchmarks/face_detection.py``). To find the cut, this
pastes FER2013's validation faces (the 1/10 of Training that the study holds out: ``make_splits(val_fraction=0.1,
seed=0)``, as training does; never a face the model learned) three to a 640×480 picture, at random sizes of
64–160 px and random places, over photographs without people that ship in scikit-image, detects them again,
and crops each found face with several margins. Reported:

1. detection: recall (a found box with IoU ≥ 0.5 per pasted face), mean IoU, the side of the found box over the
   pasted one and its centre offset (where FER2013's cut lies relative to the detector's box), false detections
   per picture, time per picture — for fer_runtime.haar's defaults (alt2, minNeighbors 5), OpenCV's
   "default" cascade (minNeighbors 5 and 3);
2. the accuracy of the model (``exported/fer-best.onnx``) on the re-detected faces for each margin, beside its
   accuracy on the same faces' original crops and on the pasted box itself (the loss from resampling alone), and
   McNemar's test of each margin against the best on the same faces; the best is ``fer_runtime.haar.DEFAULT_MARGIN``;
3. faces of 24–96 px with that margin: where detection and classification give out (``fer_runtime.haar.DEFAULT_MIN_SIZE``).

Prints Markdown tables with the date and the CPU; ``--json FILE`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_runtime.classifier import load_classifier  # noqa: E402
from fer_runtime.composites import DetectionScore, background, paste_faces, skimage_backgrounds  # noqa: E402
from fer_runtime.faces import crop_face  # noqa: E402
from fer_runtime.haar import DEFAULT_CASCADE, DEFAULT_NEIGHBORS, HaarDetector  # noqa: E402
from fer_runtime.io import default_data_path, load_source  # noqa: E402
from fer_runtime.splits import make_splits  # noqa: E402

MARGINS = (-0.1, -0.05, -0.025, 0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3)
# (cascade, minNeighbors): fer_runtime.haar's defaults first (the best margin and the small-face sweep are theirs)
CONFIGS = tuple(dict.fromkeys(((DEFAULT_CASCADE, DEFAULT_NEIGHBORS), ("alt2", 5), ("default", 5), ("default", 3))))
CANVAS = (480, 640)  # height, width
PER_PICTURE = 3
SIZES = (64, 160)  # pasted face sides, px, uniform
SMALL_SIZES = (24, 32, 40, 48, 64, 96)


def describe_machine() -> str:
    """Date, CPU model (lscpu) and core count, for the head of a benchmark's output."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if sys.platform.startswith("linux") else ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name:")), platform.processor())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"
    import cv2
    import onnxruntime

    return (f"{time.strftime('%Y-%m-%d')}, {model or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores "
            f"(load average {load}), OpenCV {cv2.__version__}, onnxruntime {onnxruntime.__version__}")


def make_composites(faces: np.ndarray, sizes_of, photos, rng) -> list:
    """Pictures of PER_PICTURE faces each; returns [(composite, face indices)]."""
    out = []
    for start in range(0, len(faces), PER_PICTURE):
        index = list(range(start, min(start + PER_PICTURE, len(faces))))
        composite = paste_faces([faces[i] for i in index], [sizes_of(i) for i in index], background(photos, *CANVAS, rng), rng)
        out.append((composite, index))
    return out


def detect_all(composites, detector: HaarDetector, n_faces: int):
    """Detection score, the found box of every face (None when missed), seconds per picture."""
    score = DetectionScore()
    found: list = [None] * n_faces
    start = time.perf_counter()
    for composite, index in composites:
        boxes = detector.boxes(composite.image)
        for i, (j, _) in zip(index, score.add(composite.boxes, boxes)):
            if j is not None:
                found[i] = (boxes[j], composite)
    return score, found, (time.perf_counter() - start) / max(1, len(composites))


def accuracy(model, crops: list[np.ndarray], labels: np.ndarray) -> tuple[float, np.ndarray]:
    if not crops:
        return float("nan"), np.empty(0, np.int64)
    predicted = model.predict_logits(np.stack(crops)).argmax(1)
    return float((predicted == labels).mean()), predicted


def geometry(found, pasted_boxes) -> dict:
    """Side of the found box over the pasted one, and the found centre's offset in pasted sides (+ = right/down)."""
    ratios, dx, dy = [], [], []
    for hit, truth in zip(found, pasted_boxes):
        if hit is None:
            continue
        (x, y, w, h), (tx, ty, tw, th) = hit[0], truth
        ratios.append(w / tw)
        dx.append((x + w / 2 - tx - tw / 2) / tw)
        dy.append((y + h / 2 - ty - th / 2) / th)
    return {"side_ratio_median": float(np.median(ratios)), "side_ratio_p10_p90": [float(v) for v in np.percentile(ratios, [10, 90])],
            "centre_dx": float(np.mean(dx)), "centre_dy": float(np.mean(dy))}


def add_face_arguments(parser: argparse.ArgumentParser, small_faces: int) -> None:
    """The flags that choose the faces, the model and where numbers go (shared with face_detection.py)."""
    parser.add_argument("--data", type=Path, default=None, help="FER2013 CSV (default: $FER_DATA or the shared copy)")
    parser.add_argument("--model", type=Path, default=REPO / "exported" / "fer-best.onnx")
    parser.add_argument("--faces", type=int, default=0, help="use the first N validation faces (default: all)")
    parser.add_argument("--small-faces", type=int, default=small_faces, help="faces per size in the small-face sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every number here")


def validation_faces(args) -> tuple[Path, np.ndarray, np.ndarray]:
    """(the data file, the first ``--faces`` validation faces, their labels): the faces training never saw."""
    data = args.data or default_data_path()
    if data is None:
        sys.exit("no FER2013 data: pass --data or set FER_DATA")
    val = make_splits(load_source(data), val_fraction=0.1, seed=0).val
    n = len(val) if args.faces <= 0 else min(args.faces, len(val))
    return data, val.images[:n], val.labels[:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_face_arguments(parser, small_faces=600)
    args = parser.parse_args(argv)
    data, faces, labels = validation_faces(args)
    n = len(faces)
    model = load_classifier(args.model)
    photos = skimage_backgrounds()
    rng = np.random.default_rng(args.seed)
    print(f"# face_crop_margin: {describe_machine()}")
    print(f"{n} validation faces of {data.name}, {PER_PICTURE} per {CANVAS[1]}×{CANVAS[0]} picture, sides {SIZES[0]}–{SIZES[1]} px; "
          f"model {args.model.name}\n")

    sizes = rng.integers(SIZES[0], SIZES[1] + 1, n)
    composites = make_composites(faces, lambda i: sizes[i], photos, rng)
    pasted = [None] * n
    for composite, index in composites:
        for i, box in zip(index, composite.boxes):
            pasted[i] = (box, composite)
    original_acc, original_pred = accuracy(model, list(faces), labels)
    results: dict = {"machine": describe_machine(), "faces": n, "model": args.model.name, "original_accuracy": original_acc,
                     "configs": {}}

    print("| cascade | minNeighbors | recall | mean IoU | found side / pasted (median, p10–p90) | centre offset x, y | "
          "false detections / picture | ms / picture |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    per_margin: dict = {}
    correct: dict = {}  # (cascade, neighbors) → margin → whether each found face was classified right
    for cascade, neighbors in CONFIGS:
        detector = HaarDetector(min_size=24, margin=0.0, cascade=cascade, min_neighbors=neighbors)
        score, found, seconds = detect_all(composites, detector, n)
        geo = geometry(found, [p[0] for p in pasted])
        print(f"| {cascade} | {neighbors} | {score.recall:.1%} | {score.mean_iou:.3f} | {geo['side_ratio_median']:.3f} "
              f"({geo['side_ratio_p10_p90'][0]:.2f}–{geo['side_ratio_p10_p90'][1]:.2f}) | {geo['centre_dx']:+.3f}, {geo['centre_dy']:+.3f} | "
              f"{score.false_positives / len(composites):.3f} | {seconds * 1000:.0f} |")
        hit = np.array([f is not None for f in found])
        rows, correct[(cascade, neighbors)] = {}, {}
        for margin in MARGINS:
            crops = [crop_face(f[1].image, f[0], margin) for f in found if f is not None]
            acc, pred = accuracy(model, crops, labels[hit])
            correct[(cascade, neighbors)][margin] = pred == labels[hit]
            rows[margin] = {"accuracy": acc, "agreement": float((pred == original_pred[hit]).mean()),
                            "accuracy_all": float((pred == labels[hit]).sum() / n)}
        oracle, _ = accuracy(model, [crop_face(p[1].image, p[0], 0.0) for p in pasted], labels)
        per_margin[(cascade, neighbors)] = rows
        results["configs"][f"{cascade}/{neighbors}"] = {"recall": score.recall, "mean_iou": score.mean_iou, **geo,
                                                         "false_per_picture": score.false_positives / len(composites),
                                                         "ms_per_picture": seconds * 1000, "found": int(hit.sum()),
                                                         "original_accuracy_found": float((original_pred[hit] == labels[hit]).mean()),
                                                         "pasted_box_accuracy": oracle,
                                                         "margins": {str(m): r for m, r in rows.items()}}

    heads = [f"{c}/{k}" for c, k in CONFIGS]
    best = max(MARGINS, key=lambda m: per_margin[CONFIGS[0]][m]["accuracy"])
    results["best_margin"] = best
    print(f"\nAccuracy of {args.model.name} on the faces each detector found, cropped with each margin (per side, in box sides); "
          "in brackets: agreement with its prediction on the original crop. Last column: against the best margin of "
          f"{heads[0]}, on the same faces, the faces that margin gets right and the best does not (+) and the reverse (−); "
          "≈ where McNemar's test (95 %) sees no difference.\n")
    print("| margin | " + " | ".join(heads) + f" | vs {best:+.3f}, {heads[0]} |")
    print("|---:|" + "---:|" * (len(heads) + 1))
    for margin in MARGINS:
        cells = [f"{per_margin[c][margin]['accuracy']:.2%} ({per_margin[c][margin]['agreement']:.1%})" for c in CONFIGS]
        ours, theirs = correct[CONFIGS[0]][margin], correct[CONFIGS[0]][best]
        gained, lost = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
        same = abs(gained - lost) <= 1.96 * (gained + lost) ** 0.5
        cells.append("best" if margin == best else f"+{gained} −{lost}{' ≈' if same else ''}")
        print(f"| {margin:+.3f} | " + " | ".join(cells) + " |")
    configs = results["configs"]
    print("| original 48×48 crops of the same faces | " + " | ".join(f"{configs[h]['original_accuracy_found']:.2%}" for h in heads) + " | |")
    print(f"| the pasted box, no detection (all {n} faces) | " + " | ".join(f"{configs[h]['pasted_box_accuracy']:.2%}" for h in heads) + " | |")
    print(f"\nOriginal crops, all {n} faces: {original_acc:.2%} (the model's recorded validation accuracy covers the same faces).")
    print(f"Best margin for {heads[0]}: {best:+.3f}")

    print(f"\nSmall faces ({min(args.small_faces, n)} faces per size, {heads[0]}, margin {best:+.3f}, min_size 16):\n")
    print("| face side px | recall | mean IoU | accuracy, found faces | original crops, same faces |")
    print("|---:|---:|---:|---:|---:|")
    m = min(args.small_faces, n)
    detector = HaarDetector(min_size=16, margin=best, cascade=CONFIGS[0][0], min_neighbors=CONFIGS[0][1])
    results["small_faces"] = {}
    for side in SMALL_SIZES:
        small = make_composites(faces[:m], lambda i: side, photos, rng)
        score, found, _ = detect_all(small, detector, m)
        hit = np.array([f is not None for f in found])
        acc, _ = accuracy(model, [crop_face(f[1].image, f[0], best) for f in found if f is not None], labels[:m][hit])
        orig = float((original_pred[:m][hit] == labels[:m][hit]).mean()) if hit.any() else float("nan")
        results["small_faces"][side] = {"recall": score.recall, "mean_iou": score.mean_iou, "accuracy": acc, "original_accuracy": orig}
        print(f"| {side} | {score.recall:.1%} | {score.mean_iou:.3f} | {acc:.2%} | {orig:.2%} |")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
