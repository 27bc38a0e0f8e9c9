"""fer-tui's time to the first face, as a user meets it: a new Python process, the imports, the default models and
data found on their own, until the first face is drawn (headless, 120×40) and until its predictions — the
Confusion view's numbers — are ready.

    .venv/bin/python benchmarks/tui_first_face.py [--repeats 3] [--data PATH] [--fresh]

Each repeat is a fresh interpreter, so import time counts. ``--fresh``: the repeats share a new, empty cache folder
($FER_CACHE_DIR), so the first is a first start on a new machine (the CSV parsed; the predictions read from those
shipped beside the model, else computed) and the others are second starts (read back); without it the user's cache
serves what it holds. Prints one JSON line per repeat (``stored``: the predictions came from the disk cache;
``shipped``: from the predictions shipped beside the model) and the medians, with the model that the app opened on
and whether torch was loaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import time
t0 = time.perf_counter()
import asyncio, json, sys
from fer_tui.app import make_app
from fer_tui.views.face import Picture
imported = time.perf_counter() - t0

async def main():
    app = make_app(**({"data": sys.argv[1]} if sys.argv[1] else {}))
    async with app.run_test(size=(120, 40)) as pilot:
        face = app.query_one("#browse-face", Picture)
        while face.image is None:
            await asyncio.sleep(0.005)
        await pilot.pause()
        shown = time.perf_counter() - t0
        while app.context.predictions is None:
            await asyncio.sleep(0.01)
        ready = time.perf_counter() - t0
        entry = app.context.model
        print(json.dumps({"import_s": round(imported, 3), "first_face_s": round(shown, 3), "predictions_s": round(ready, 3),
                          "model": entry.name if entry else None, "ran": app.context.predictions.ran,
                          "stored": app.context.predictions.stored, "shipped": app.context.predictions.shipped,
                          "torch_loaded": "torch" in sys.modules}))

asyncio.run(main())
"""


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default="", help="data file (default: what fer-tui finds on its own)")
    p.add_argument("--fresh", action="store_true", help="start from an empty cache folder: the first repeat is a first start")
    args = p.parse_args()
    env = dict(os.environ)
    fresh = tempfile.TemporaryDirectory(prefix="fer-cache-") if args.fresh else None
    if fresh is not None:
        env["FER_CACHE_DIR"] = fresh.name
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, args.data], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run["process_s"] = round(time.perf_counter() - start, 3)
        runs.append(run)
        print(json.dumps(run))
    summary = {k: statistics.median(r[k] for r in runs) for k in ("import_s", "first_face_s", "predictions_s")}
    print(json.dumps({"median": summary, "model": runs[0]["model"], "cpu": _cpu(), "load_average": os.getloadavg()[0],
                      "date": time.strftime("%Y-%m-%d")}))
    if fresh is not None:
        fresh.cleanup()


if __name__ == "__main__":
    main()
