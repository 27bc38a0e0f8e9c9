"""Face detectors side by side, and the calibration of CenterFace's crop, on FER2013 faces and photographs.

    .venv/bin/python benchmarks/face_detection.py                  # all 2,872 validation faces: about 15 minutes on 2 cores
    .venv/bin/python benchmarks/face_detection.py --faces 600      # a quicker look

1. **Pasted faces**: FER2013's validation faces (``make_splits(val_fraction=0.1, seed=0)``, never learned), three
   to a 640×480 picture over photographs without people from scikit-image, 90–160 px, upright and rotated by
   15°, 30° and 45° before pasting (half of them each way). A face counts as found when a box overlaps the pasted
   square by IoU > 0.3 (a tilted face's box is not its square); precision is found ÷ boxes. For each detector
   (``centerface`` as shipped, ``haar`` as shipped): recall, precision, and ``fer-best``'s accuracy on the crops it
   cuts, against the same faces' original crops.
2. **Small faces** of 16–64 px, upright: recall and accuracy.
3. **CenterFace's crop**: where FER2013's square lies relative to the landmarks (median side and offset, in
   eye-to-mouth distances), then the classifier's accuracy on upright and 30° faces for crop sides and offsets
   around that and with and without turning the crop so the eyes are level. The most accurate are
   :data:`fer_runtime.centerface.CROP_SIDE`, ``CROP_DOWN`` and ``DEFAULT_ALIGN``.
4. **Photographs**: scikit-image's astronaut and matplotlib's Grace Hopper, upright and turned ±15/30/45°,
   the astronaut scaled so that her face is 23 px, scikit-image's ``camera`` (a profile): found or not.

Prints Markdown tables headed by the date, CPU and load; ``--json FILE`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from face_crop_margin import accuracy, add_face_arguments, describe_machine, validation_faces  # noqa: E402

from fer_runtime import centerface  # noqa: E402
from fer_runtime.centerface import square_of  # noqa: E402
from fer_runtime.classifier import load_classifier  # noqa: E402
from fer_runtime.composites import DetectionScore, background, paste_faces, skimage_backgrounds  # noqa: E402
from fer_runtime.faces import cut_square, make_detector, to_gray  # noqa: E402

CANVAS = (480, 640)
PER_PICTURE = 3
SIZES = (90, 160)
ANGLES = (0, 15, 30, 45)
SMALL_SIZES = (16, 20, 24, 32, 48, 64)
SECTIONS = ("pasted", "crop", "small", "photographs")
MIN_IOU = 0.3
SIDES = (2.2, 2.4, 2.6, 2.8, 3.0)
DOWNS = (0.1, 0.2, 0.3, 0.4)
# hand-drawn face boxes (x, y, width, height) in the upright photographs
ASTRONAUT_FACE = (172, 60, 104, 104)
HOPPER_FACE = (190, 150, 150, 170)


def rotate(face: np.ndarray, angle: float) -> np.ndarray:
    """``face`` turned by ``angle`` degrees (counter-clockwise as seen) about its centre, edges repeated."""
    import cv2

    h, w = face.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(face, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def composites(faces, sizes, angles, photos, rng):
    """[(composite, indices)]: PER_PICTURE faces a picture, face i turned by angles[i] before pasting."""
    out = []
    for start in range(0, len(faces), PER_PICTURE):
        index = list(range(start, min(start + PER_PICTURE, len(faces))))
        pasted = [rotate(faces[i], angles[i]) if angles[i] else faces[i] for i in index]
        out.append((paste_faces(pasted, [sizes[i] for i in index], background(photos, *CANVAS, rng), rng), index))
    return out


def detect_all(pictures, detector, n):
    """Score, and for each face the detected Face (None when missed) with the picture it is in."""
    score = DetectionScore()
    found: list = [None] * n
    for composite, index in pictures:
        faces = detector.detect(composite.image)
        for i, (j, _) in zip(index, score.add(composite.boxes, [f.box for f in faces], MIN_IOU)):
            if j is not None:
                found[i] = (faces[j], composite)
    return score, found


def precision(score: DetectionScore) -> float:
    return score.found / max(1, score.found + score.false_positives)


def calibrate(found, pasted, n) -> dict:
    """Where the pasted square lies relative to the landmarks of the upright faces CenterFace found."""
    sides, downs = [], []
    for i in range(n):
        if found[i] is None:
            continue
        marks = found[i][0].landmarks
        eyes, mouth = marks[:2].mean(0), marks[3:5].mean(0)
        d = float(np.hypot(*(mouth - eyes)))
        x, y, s, _ = pasted[i]
        sides.append(s / d)
        downs.append((y + s / 2 - eyes[1]) / d)
    return {"side_median": float(np.median(sides)), "side_p10_p90": [float(v) for v in np.percentile(sides, [10, 90])],
            "down_median": float(np.median(downs)), "down_p10_p90": [float(v) for v in np.percentile(downs, [10, 90])]}


def crops_with(found, side: float, down: float, align: bool) -> list[np.ndarray]:
    saved = centerface.CROP_SIDE, centerface.CROP_DOWN
    centerface.CROP_SIDE, centerface.CROP_DOWN = side, down
    try:
        return [cut_square(hit[1].image, square_of(hit[0].landmarks, align)) for hit in found if hit is not None]
    finally:
        centerface.CROP_SIDE, centerface.CROP_DOWN = saved


def photographs() -> dict[str, tuple[np.ndarray, tuple]]:
    """name → (gray picture, where the face is as (centre x, centre y, side)), or None for 'no true box'."""
    import cv2
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    base = {"astronaut": (to_gray(data.astronaut()), ASTRONAUT_FACE),
            "Grace Hopper": (to_gray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))), HOPPER_FACE)}
    out = {}
    for name, (gray, (x, y, w, h)) in base.items():
        centre = np.array([x + w / 2, y + h / 2])
        for angle in (0, 15, -15, 30, -30, 45, -45):
            hh, ww = gray.shape
            matrix = cv2.getRotationMatrix2D((ww / 2, hh / 2), angle, 1.0)
            turned = cv2.warpAffine(gray, matrix, (ww, hh), borderMode=cv2.BORDER_REFLECT)
            out[f"{name} {angle:+d}°"] = (turned, (*(matrix[:, :2] @ centre + matrix[:, 2]), max(w, h)))
    astronaut, (x, y, w, h) = base["astronaut"]
    scale = 23 / w
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out["astronaut, face 23 px"] = (np.pad(small, 100, mode="edge"), (100 + (x + w / 2) * scale, 100 + (y + h / 2) * scale, 23))
    out["camera (profile)"] = (to_gray(data.camera()), (230, 160, 80))
    return out


def found_in(gray, truth, detector) -> tuple[bool, int]:
    """Whether a box is centred within half a face side of the true centre; and how many other boxes."""
    cx, cy, side = truth
    boxes = [f.box for f in detector.detect(gray)]
    hits = [b for b in boxes if math.hypot(b[0] + b[2] / 2 - cx, b[1] + b[3] / 2 - cy) < side / 2]
    return bool(hits), len(boxes) - min(1, len(hits))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_face_arguments(parser, small_faces=300)
    parser.add_argument("--detectors", nargs="+", default=["centerface", "haar"])
    parser.add_argument("--angles", type=int, nargs="+", default=list(ANGLES), help="turn the pasted faces by these degrees")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to measure (default: all)")
    args = parser.parse_args(argv)
    data, faces, labels = validation_faces(args)
    n = len(faces)
    model = load_classifier(args.model, variant="auto")
    photos = skimage_backgrounds()
    rng = np.random.default_rng(args.seed)
    sizes = rng.integers(SIZES[0], SIZES[1] + 1, n)
    signs = np.where(np.arange(n) % 2 == 0, 1, -1)
    detectors = {name: make_detector(name, min_size=16) for name in args.detectors}
    _, original_pred = accuracy(model, list(faces), labels)
    results: dict = {"machine": describe_machine(), "faces": n, "model": model.path.name, "detectors": {}}
    print(f"# face_detection: {results['machine']}")
    print(f"{n} validation faces of {data.name}, {PER_PICTURE} per {CANVAS[1]}×{CANVAS[0]} picture, sides {SIZES[0]}–{SIZES[1]} px, "
          f"model {model.path.name}; found: IoU > {MIN_IOU}\n")

    print("| detector | angle | recall | precision | mean IoU | accuracy on found | original crops, same faces |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    found_by: dict = {}
    pictures_by: dict = {}
    for angle in args.angles:
        pictures_by[angle] = composites(faces, sizes, signs * angle, photos, np.random.default_rng(args.seed + angle))
        for name, detector in detectors.items():
            score, found = detect_all(pictures_by[angle], detector, n)
            found_by[(name, angle)] = found
            hit = np.array([f is not None for f in found])
            acc, _ = accuracy(model, [f[0].crop for f in found if f is not None], labels[hit])
            orig = float((original_pred[hit] == labels[hit]).mean()) if hit.any() else float("nan")
            results["detectors"].setdefault(name, {})[angle] = {"recall": score.recall, "precision": precision(score),
                                                                "mean_iou": score.mean_iou, "accuracy": acc, "original_accuracy": orig}
            print(f"| {name} | {angle}° | {score.recall:.1%} | {precision(score):.1%} | {score.mean_iou:.3f} | {acc:.2%} | {orig:.2%} |",
                  flush=True)
    if len(detectors) > 1:
        print("\nThe model's accuracy on the faces that every detector found, each cut by its own detector:\n")
        print("| angle | faces | " + " | ".join(detectors) + " | original crops |")
        print("|---:|---:|" + "---:|" * (len(detectors) + 1))
        for angle in args.angles:
            both = [i for i in range(n) if all(found_by[(d, angle)][i] is not None for d in detectors)]
            cells = [accuracy(model, [found_by[(d, angle)][i][0].crop for i in both], labels[both])[0] for d in detectors]
            results.setdefault("found_by_all", {})[angle] = {"faces": len(both), **dict(zip(detectors, cells))}
            original = float((original_pred[both] == labels[both]).mean()) if both else float("nan")
            print(f"| {angle}° | {len(both)} | " + " | ".join(f"{c:.2%}" for c in cells) + f" | {original:.2%} |")

    if "centerface" in detectors and "crop" in args.sections and {0, 30} <= set(args.angles):
        pasted = [None] * n
        for composite, index in pictures_by[0]:
            for i, box in zip(index, composite.boxes):
                pasted[i] = box
        geometry = calibrate(found_by[("centerface", 0)], pasted, n)
        results["centerface_geometry"] = geometry
        print(f"\nFER2013's square against CenterFace's landmarks (upright faces found): side {geometry['side_median']:.2f} "
              f"(p10–p90 {geometry['side_p10_p90'][0]:.2f}–{geometry['side_p10_p90'][1]:.2f}) eye-to-mouth distances, centre "
              f"{geometry['down_median']:.2f} ({geometry['down_p10_p90'][0]:.2f}–{geometry['down_p10_p90'][1]:.2f}) of them below the eyes\n")
        print("Accuracy of the model on CenterFace's crops by crop side and offset (in eye-to-mouth distances), eyes levelled "
              "or not, on the faces found upright and at 30°:\n")
        print("| side | down | upright, levelled | upright, not | 30°, levelled | 30°, not |")
        print("|---:|---:|---:|---:|---:|---:|")
        results["crop_grid"] = []
        for side in SIDES:
            for down in DOWNS:
                cells = []
                for angle in (0, 30):
                    found = found_by[("centerface", angle)]
                    hit = np.array([f is not None for f in found])
                    for align in (True, False):
                        acc, _ = accuracy(model, crops_with(found, side, down, align), labels[hit])
                        cells.append(acc)
                results["crop_grid"].append({"side": side, "down": down, "accuracy": cells})
                print(f"| {side:.1f} | {down:.1f} | " + " | ".join(f"{c:.2%}" for c in cells) + " |", flush=True)

    if "small" in args.sections:
        small_faces(faces, labels, detectors, photos, model, min(args.small_faces, n), args.seed, results)
    if "photographs" in args.sections:
        photograph_table(detectors, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"\nwrote {args.json}")


def small_faces(faces, labels, detectors, photos, model, m, seed, results) -> None:
    print(f"\nSmall faces ({m} faces per size, upright):\n")
    print("| side px | " + " | ".join(f"recall, {d} | accuracy, {d}" for d in detectors) + " |")
    print("|---:|" + "---:|---:|" * len(detectors))
    results["small_faces"] = {}
    for side in SMALL_SIZES:
        pictures = composites(faces[:m], [side] * m, [0] * m, photos, np.random.default_rng(seed + side))
        cells = []
        for name, detector in detectors.items():
            score, found = detect_all(pictures, detector, m)
            hit = np.array([f is not None for f in found])
            acc, _ = accuracy(model, [f[0].crop for f in found if f is not None], labels[:m][hit])
            results["small_faces"].setdefault(name, {})[side] = {"recall": score.recall, "accuracy": acc}
            cells += [f"{score.recall:.1%}", f"{acc:.2%}"]
        print(f"| {side} | " + " | ".join(cells) + " |", flush=True)


def photograph_table(detectors, results) -> None:
    print("\nPhotographs (found: a box centred within half a face side of the face; other boxes: false):\n")
    print("| photograph | " + " | ".join(detectors) + " |")
    print("|---|" + "---|" * len(detectors))
    results["photographs"] = {}
    for name, (gray, truth) in photographs().items():
        cells = []
        for detector_name, detector in detectors.items():
            hit, false = found_in(gray, truth, detector)
            results["photographs"].setdefault(detector_name, {})[name] = {"found": hit, "false": false}
            cells.append(("found" if hit else "missed") + (f", {false} false" if false else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
