"""The saliency pictures of docs/explanations.md and REPORT.md, from faces that may be published: scikit-image's
astronaut (Eileen Collins, NASA, public domain), matplotlib's Grace Hopper and the drawn demo faces of
:mod:`fer_runtime.synthetic`. Never FER2013's: its faces are not ours to publish.

    .venv/bin/python -m fer_train.explain.pictures [--model exported/fer-best.onnx] [--out report/figures]

Each face's map by every method (the runtime's ``Explainer``, as the TUI draws it: in colour over the dimmed
face), with the map's faithfulness on that face, and the face with its least salient half hidden by the default
method's map. Writes ``<out>/saliency-publishable-<model>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fer_runtime import explain as rt
from fer_runtime.contract import CLASS_NAMES
from fer_runtime.faces import detect_faces, largest
from fer_runtime.synthetic import make_faces

from .saliency import SaliencyMaps
from .sheets import methods_sheet

ROOT = Path(__file__).resolve().parents[2]
DRAWN = (3, 5, 0, 4)  # Happy, Surprise, Angry, Sad


def publishable_faces() -> tuple[np.ndarray, list[str]]:
    """uint8 (N, 48, 48) and a name for each: the astronaut's and Grace Hopper's faces (found by the runtime's
    detector), then drawn faces."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    photos = {"astronaut": skimage.data.astronaut(),
              "Grace Hopper": np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))}
    faces, names = [], []
    for name, photo in photos.items():
        face = largest(detect_faces(photo))
        if face is not None:
            faces.append(face.crop)
            names.append(name)
    drawn, labels = make_faces(len(DRAWN), seed=5, labels=np.array(DRAWN))
    faces += list(drawn)
    names += [f"drawn {CLASS_NAMES[c]}" for c in labels]
    return np.stack(faces).astype(np.uint8), names


def publishable_sheet(model: str | Path, out: str | Path, threads: int = 2) -> Path:
    explainer = rt.Explainer(model, threads=threads)
    faces, names = publishable_faces()
    logits = explainer.logits(faces)
    classes = logits.argmax(1)
    maps, scores = {}, {}
    for name in rt.METHODS:
        if explainer.method_problem(name) is not None:
            continue
        maps[name] = explainer.maps(name, faces, classes)
        scores[name] = np.array([rt.face_faithfulness(explainer.logits, f, m, c).score for f, m, c in zip(faces, maps[name], classes)])
    sheet = SaliencyMaps(faces, classes, logits, maps)
    stem = Path(model).name[:-len(".onnx")]
    title = (f"{stem}: where it looks for the class it predicts, by method (faithfulness on the face: the gain in deletion "
             "and insertion area over random pixels)")
    return methods_sheet(sheet, explainer.class_names, Path(out) / f"saliency-publishable-{stem}.png", title=title,
                         scores=scores, masked=rt.DEFAULT_METHOD, heads=names)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "exported" / "fer-best.onnx"))
    p.add_argument("--out", default=str(ROOT / "report" / "figures"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    print(publishable_sheet(args.model, args.out, args.threads))


if __name__ == "__main__":
    main()
