"""Measure fer-tui: first face on screen, predicting a split, saliency maps, and keys while a job trains.

Not a test (pytest does not collect it); the figures in the README come from it:

    .venv/bin/python tests/tui/measure_tui.py --model exported/cnn.onnx --data ../shared/data/fer2013/fer2013.csv.gz

Everything runs headless (``App.run_test``) at 120×40 except the pure timings. Key latency is the time from
a key's arrival to its visible effect (the selected face changing), measured while a ``fer-train`` job
runs in the background; the loop stall is the longest the UI's event loop went without running at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_support import LoopWatch, key_latency, settle  # noqa: E402

from fer_runtime.explain import Explainer  # noqa: E402
from fer_tui.app import make_app  # noqa: E402
from fer_tui.catalog import load_entry  # noqa: E402
from fer_tui.data import load_dataset  # noqa: E402
from fer_tui.predictions import predict_split  # noqa: E402
from fer_tui.state import Settings  # noqa: E402
from fer_tui.views.face import Picture  # noqa: E402
from fer_tui.views.train import TrainView  # noqa: E402

SIZE = (120, 40)


async def first_face(model: Path, data: Path) -> dict:
    start = time.perf_counter()
    app = make_app(data=data, models=[model], model_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        face = app.query_one("#browse-face", Picture)
        while face.image is None:
            await asyncio.sleep(0.005)
        await pilot.pause()  # one frame: the face is drawn
        shown = time.perf_counter() - start
        while app.context.predictions is None:
            await asyncio.sleep(0.01)
        predicted = time.perf_counter() - start
        await pilot.press("v")  # val → test: the 3,589 PublicTest faces
        t0 = time.perf_counter()
        while app.context.predictions is None or app.context.split_name != "test":
            await asyncio.sleep(0.01)
        test_in_app = time.perf_counter() - t0
        count = len(app.context.predictions)
    return {"first_face_s": round(shown, 3), "val_predictions_ready_s": round(predicted, 3),
            "test_predictions_in_app_s": round(test_in_app, 3), "test_faces": count}


def pure_timings(model: Path, data: Path, repeats: int = 5) -> dict:
    dataset = load_dataset(data)
    entry = load_entry(model)
    split = dataset.splits["test"]
    runs = []
    for _ in range(3):
        runs.append(predict_split(entry, "test", split).seconds)
    explainer = Explainer(entry.path)  # what the Saliency view runs
    faces = split.images[:repeats]
    out = {"predict_test_s": [round(r, 3) for r in runs], "test_faces": len(split)}
    for method in ("gradient", "occlusion"):
        if method == "gradient" and explainer.gradient_problem is not None:
            out["gradient"] = f"unavailable: {explainer.gradient_problem}"
            continue
        times = [explainer.face_saliency(face, method=method, logits_fn=entry.classifier.predict_logits).seconds for face in faces]
        result = explainer.face_saliency(faces[0], method=method, logits_fn=entry.classifier.predict_logits)
        out[method] = {"first_s": round(times[0], 4), "median_s": round(statistics.median(times[1:] or times), 4),
                       "forward_passes": result.forward_passes}
    return out


async def keys_while_training(model: Path, data: Path, job_model: str, epochs: int, limit: int | None, threads: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="fer-tui-measure-"))
    settings = Settings(export_dir=folder / "exported", runs_root=folder / "runs", train_threads=threads)
    app = make_app(data=data, models=[model], model_dirs=[], settings=settings)
    app.animation_level = "none"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await pilot.pause()
        app.query_one("#train-model").value = job_model
        app.query_one("#train-epochs").value = str(epochs)
        if limit:
            app.query_one("#train-limit-train").value = str(limit)
        app.query_one("#train-export").value = "measure"
        await pilot.pause()
        view = app.query_one(TrainView)
        view.action_start()
        await pilot.press("b")
        latencies: list[float] = []
        started = time.perf_counter()
        events: list[tuple[float, str]] = []  # when the job's status changed, for locating the longest stall
        async with LoopWatch() as watch:
            while view.job.running or view.job.status == "idle":
                before = app.context.selected
                key = "down" if (len(latencies) // 20) % 2 == 0 else "up"
                latencies.append(await key_latency(pilot, key, lambda: app.context.selected != before, timeout=30))
                phase = f"{view.job.status} epoch {view.job.epoch}/{view.job.epochs}"
                if not events or events[-1][1] != phase:
                    events.append((round(time.perf_counter() - started, 1), phase))
                await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        status, error = view.job.status, view.job.error
    latencies.sort()
    return {"job": f"{job_model}, {epochs} epochs, limit {limit}, {threads} threads", "job_status": status, "job_error": error,
            "job_seconds": round(seconds, 1), "keys": len(latencies), "key_median_s": round(latencies[len(latencies) // 2], 4),
            "key_p95_s": round(latencies[int(len(latencies) * 0.95)], 4), "key_max_s": round(latencies[-1], 4),
            "loop_stall_max_s": round(watch.longest, 3), "loop_stall_ui_cpu_s": round(watch.longest_cpu, 3),
            "loop_stall_at_s": round(watch.longest_at, 1), "job_phases_at_s": events}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--job-model", default="cnn")
    p.add_argument("--job-epochs", type=int, default=1)
    p.add_argument("--job-limit", type=int, default=2000)
    p.add_argument("--job-threads", type=int, default=1)
    p.add_argument("--skip-job", action="store_true")
    p.add_argument("--only-job", action="store_true")
    args = p.parse_args()
    report = {}
    if not args.only_job:
        report["first_face"] = asyncio.run(first_face(args.model, args.data))
        print(json.dumps(report, indent=1), flush=True)
        report["pure"] = pure_timings(args.model, args.data)
        print(json.dumps(report["pure"], indent=1), flush=True)
    if not args.skip_job:
        report["keys_while_training"] = asyncio.run(keys_while_training(args.model, args.data, args.job_model, args.job_epochs,
                                                                        args.job_limit, args.job_threads))
        print(json.dumps(report["keys_while_training"], indent=1), flush=True)


if __name__ == "__main__":
    main()
