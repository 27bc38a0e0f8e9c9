"""How faithful each saliency method is, for every shipped model: deletion and insertion curves on validation faces.

    .venv/bin/python benchmarks/explain_faithfulness.py [--faces 200] [--threads 2] [--sweep-faces 100]

For each model and method (at the settings of ``fer_runtime.explain.METHODS``, integrated gradients
(``MEASURED_ONLY``) beside them, and random pixels for reference),
the maps of ``--faces`` validation faces of the real FER2013 (the first of a seeded shuffle) for the predicted
class, then their deletion and insertion curves with grey and blur removal (``fer_runtime.explain.faithfulness``),
and the time one face's map takes (``Explainer.face_saliency`` on ``--time-faces`` faces, ``--threads`` threads,
as the TUI runs it). ``--sweep-faces`` faces of ``fer-best`` also go through other settings of each method (grey
removal), which is how the settings were chosen.

Writes ``report/faithfulness.json`` (every number, with the date and CPU), ``report/figures/faithfulness.png``
(mean curves: numbers only, no face) and the tables in docs/explanations.md between their markers; the test
``tests/test_explain_faithfulness.py`` fails when those tables drift from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_runtime.explain import (MEASURED_ONLY, METHODS, REMOVALS, ExplainError, Explainer, Method, curves,  # noqa: E402
                                 face_faithfulness, random_maps)
from fer_runtime.explain.faithfulness import STEPS  # noqa: E402
from fer_train.explain.faithfulness_docs import DOCS, RESULTS, write_tables  # noqa: E402
from fer_runtime.io import default_data_path, load_source  # noqa: E402
from fer_runtime.splits import make_splits  # noqa: E402

MODELS = ("cnn", "dnn", "cnn-semi", "fer-best")

FIGURE = ROOT / "report" / "figures" / "faithfulness.png"
SEED = 36
MEASURED = {**METHODS, **MEASURED_ONLY}  # what the tables hold: every method offered, and integrated gradients beside them
# Other settings tried on fer-best (grey removal), beside each method's chosen ones on the same faces.
SWEEP = {
    **{f"{name} (chosen)": method for name, method in MEASURED.items()},
    "gradient, no blur": METHODS["gradient"].with_(smooth=0.0),
    "gradient, blur σ 3": METHODS["gradient"].with_(smooth=3.0),
    "smoothgrad, 10 copies": METHODS["smoothgrad"].with_(samples=10),
    "smoothgrad, noise 25 %": METHODS["smoothgrad"].with_(noise=0.25),
    "smoothgrad, no blur": METHODS["smoothgrad"].with_(smooth=0.0),
    "occlusion, 8 px stride 4": METHODS["occlusion"].with_(patch=8, stride=4),
    "occlusion, 6 px stride 3": METHODS["occlusion"].with_(patch=6, stride=3),
    "integrated, 32 steps": MEASURED_ONLY["integrated"].with_(samples=32),
    "gradcam-middle, blur σ 2": METHODS["gradcam-middle"].with_(smooth=2.0),
}

def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()

def measure(explainer: Explainer, method: Method | None, faces: np.ndarray, classes: np.ndarray, removals) -> dict:
    """Mean (and standard error of) deletion and insertion areas per removal, and the mean curves."""
    t0 = time.perf_counter()
    maps = random_maps(len(faces), SEED) if method is None else explainer.maps(method, faces, classes)
    seconds = time.perf_counter() - t0
    out = {"map_seconds_batched": round(seconds / len(faces), 4)}
    for removal in removals:
        c = curves(explainer.logits, faces, maps, classes, removal)
        d, i = c.deletion_auc, c.insertion_auc
        out[removal] = {"deletion": round(float(d.mean()), 4), "deletion_se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
                        "insertion": round(float(i.mean()), 4), "insertion_se": round(float(i.std(ddof=1) / np.sqrt(len(i))), 4),
                        "deletion_curve": np.round(c.deletion.mean(0), 4).tolist(), "insertion_curve": np.round(c.insertion.mean(0), 4).tolist()}
    return out

def face_seconds(explainer: Explainer, method: Method, faces: np.ndarray) -> float:
    """Median seconds of one face's map as the TUI makes it: the face's probabilities, then the map (the first call,
    which opens sessions, not counted)."""
    return float(np.median([_time_one(explainer, method, f) for f in faces][1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--faces", type=int, default=200)
    p.add_argument("--sweep-faces", type=int, default=100)
    p.add_argument("--time-faces", type=int, default=11)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None)
    p.add_argument("--exported", default=str(ROOT / "exported"))
    p.add_argument("--sweep-only", action="store_true", help="measure the sweep again into the existing results")
    p.add_argument("--tui-only", action="store_true", help="time the TUI's path again into the existing results")
    p.add_argument("--update", action="store_true",
                   help="measure only --models again (a model that was replaced), keeping the other models' numbers in "
                        "the existing results; each entry records its date")
    args = p.parse_args()

    val = make_splits(load_source(args.data or default_data_path())).val
    rows = np.sort(np.random.default_rng(SEED).permutation(len(val.images))[:args.faces])
    faces = val.images[rows].astype(np.float32)
    result = {"date": datetime.now(timezone.utc).date().isoformat(), "cpu": _cpu(), "threads": args.threads, "faces": len(faces),
              "split": "val", "steps": STEPS, "removals": list(REMOVALS), "methods": {n: m.describe() for n, m in MEASURED.items()},
              "models": {}, "sweep": {}}
    if args.tui_only:
        result = {**json.loads(RESULTS.read_text()), "tui": tui_timing(Path(args.exported), args.models, faces, args)}
        finish(result)
        return
    if args.sweep_only:
        result = {**json.loads(RESULTS.read_text()), "sweep": {}, "sweep_date": result["date"]}
        sweep(result, Explainer(Path(args.exported) / "fer-best.onnx", threads=args.threads), faces, args)
        finish(result)
        return
    if args.update:
        result = updated(json.loads(RESULTS.read_text()), result, args.models, sweep_again="fer-best" in args.models and args.sweep_faces)
    for stem in args.models:
        explainer = Explainer(Path(args.exported) / f"{stem}.onnx", threads=args.threads)
        classes = explainer.logits(faces).argmax(1)
        entry = result["models"][stem] = {"accuracy_on_faces": round(float((classes == val.labels[rows]).mean()), 4),
                                          "date": result["date"], "methods": {}}
        for name in list(MEASURED) + ["random"]:
            t0 = time.perf_counter()
            try:
                numbers = measure(explainer, None if name == "random" else MEASURED[name], faces, classes, REMOVALS)
            except ExplainError as exc:  # dnn has no conv layer: no Grad-CAM
                entry["methods"][name] = {"missing": str(exc)}
                continue
            if name != "random":
                numbers["face_seconds"] = round(face_seconds(explainer, MEASURED[name], faces[:args.time_faces]), 4)
            entry["methods"][name] = numbers
            print(f"{stem:9} {name:15} " + "  ".join(f"{r}: del {numbers[r]['deletion']:.3f} ins {numbers[r]['insertion']:.3f}" for r in REMOVALS)
                  + f"  {numbers.get('face_seconds', 0) * 1000:.0f} ms/face  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if stem == "fer-best" and args.sweep_faces:
            sweep(result, explainer, faces, args)
    timed = {**result.get("tui", {}), **tui_timing(Path(args.exported), args.models, faces, args)}
    result["tui"] = {label: numbers for label, numbers in timed.items() if numbers}  # an --update placeholder not timed again goes
    finish(result)


def updated(old: dict, fresh: dict, models: list[str], sweep_again: bool) -> dict:
    """The existing results made ready to measure ``models`` again on the same faces and settings: those models'
    entries and their TUI timings are emptied in place, so the tables keep their order (and the sweep is emptied
    when ``fer-best`` is among them: it is measured again whole); the other models keep their numbers and their date
    (an entry without one was measured on the results' own date)."""
    for key in ("faces", "split", "steps", "removals", "methods"):
        if old[key] != json.loads(json.dumps(fresh[key])):
            raise SystemExit(f"--update: {RESULTS} was measured with {key} = {old[key]!r}, this run has {fresh[key]!r}; "
                             "measure every model again (without --update)")
    result = {**old, "date": fresh["date"], "cpu": fresh["cpu"], "threads": fresh["threads"]}
    result["models"] = {stem: {} if stem in models else {"date": old["date"], **entry} for stem, entry in old["models"].items()}
    result["tui"] = {label: {} if label.split(" ", 1)[0] in models else numbers for label, numbers in old.get("tui", {}).items()}
    if sweep_again:
        result["sweep"], result["sweep_date"] = {}, fresh["date"]
    return result


def tui_timing(exported: Path, models, faces: np.ndarray, args) -> dict:
    """The Saliency view's path for a new face, per model: the map of ``auto`` (and of Grad-CAM, the fast
    alternative), then the map's faithfulness on the face (the view shows the map first); medians in seconds."""
    out = {}
    for stem in models:
        explainer = Explainer(exported / f"{stem}.onnx", threads=args.threads)
        for method in ("auto", "gradcam"):
            if explainer.method_problem(explainer.resolve(method)) is not None:
                continue
            sample = faces[:args.time_faces]
            explainer.face_saliency(sample[0], method=method, faithfulness=False)  # opens the sessions
            maps, scores = [], []
            for face in sample[1:]:
                result = explainer.face_saliency(face, method=method, faithfulness=False)
                t0 = time.perf_counter()
                face_faithfulness(explainer.logits, face, result.values, result.class_index)
                maps.append(result.seconds)
                scores.append(time.perf_counter() - t0)
            out[f"{stem} {result.method}"] = {"map": round(float(np.median(maps)), 4), "faithfulness": round(float(np.median(scores)), 4),
                                              "load": round(os.getloadavg()[0], 1)}
            print(f"tui {stem:9} {result.method:10} map {np.median(maps) * 1000:.0f} ms, score {np.median(scores) * 1000:.0f} ms", flush=True)
    return out


def sweep(result: dict, explainer: Explainer, faces: np.ndarray, args) -> None:
    """Every setting of :data:`SWEEP` on the first ``--sweep-faces`` faces, grey removal."""
    sub = faces[:args.sweep_faces]
    classes = explainer.logits(sub).argmax(1)
    for label, method in SWEEP.items():
        numbers = measure(explainer, method, sub, classes, ("grey",))
        numbers["face_seconds"] = round(face_seconds(explainer, method, sub[:args.time_faces]), 4)
        result["sweep"][label] = {"method": method.describe(), **numbers}
        print(f"sweep {label:28} del {numbers['grey']['deletion']:.3f} ins {numbers['grey']['insertion']:.3f}", flush=True)
    result["sweep_faces"] = len(sub)


def finish(result: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, FIGURE)
    write_tables(result, DOCS)
    print(f"wrote {RESULTS.relative_to(ROOT)}, {FIGURE.relative_to(ROOT)} and the tables in {DOCS.relative_to(ROOT)}")


def _time_one(explainer: Explainer, method: Method, face: np.ndarray) -> float:
    t0 = time.perf_counter()
    explainer.maps(method, face[None], explainer.logits(face[None]).argmax(1))
    return time.perf_counter() - t0

def plot(result: dict, path: Path) -> None:
    """Mean deletion and insertion curves, one panel per model and curve (grey removal solid, blur dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"])
    fig, axes = plt.subplots(2, len(models), figsize=(3.4 * len(models), 6), sharex=True, sharey=True, squeeze=False)
    fractions = np.linspace(0, 1, result["steps"] + 1)
    colours = dict(zip(list(MEASURED) + ["random"], plt.get_cmap("tab10").colors))
    for col, stem in enumerate(models):
        for row, kind in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            for name, numbers in result["models"][stem]["methods"].items():
                if "missing" in numbers:
                    continue
                for removal, style in (("grey", "-"), ("blur", "--")):
                    ax.plot(fractions, numbers[removal][f"{kind}_curve"], style, color=colours[name], lw=1.2 if name != "random" else 2,
                            label=name if removal == "grey" else None)
            ax.set_title(f"{stem}: {kind}", fontsize=9)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("share of pixels " + ("put back" if kind == "insertion" else "removed"))
            if col == 0:
                ax.set_ylabel("probability of the class")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Deletion (lower is better) and insertion (higher) on {result['faces']} validation faces; "
                 "grey removal solid, blur dashed", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

if __name__ == "__main__":
    main()
