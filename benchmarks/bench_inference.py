"""CPU inference speed of the exported models — onnxruntime (fp32, fast, int8) beside torch eager — against
this CPU's peak.

    .venv/bin/python benchmarks/bench_inference.py                  # every model in exported/
    .venv/bin/python benchmarks/bench_inference.py runs/bench-dnn   # or any .onnx files / folders

For each model and its speed variants (``<stem>.onnx``, ``.fast``, ``.int8``; a ``.fast`` rewrite made in memory
where none is shipped; ``--all-files`` adds tta and ensemble): images per second at batch 1 and 256, latency p50/p99 at batch 1, FLOPs per image
(convolutions and matrix products of the ONNX graph, 2 × MACs) and the fraction of the CPU's peak they
reach; torch eager on the same weights; the time the TUI takes to predict the 3,589 PublicTest faces
(``load_classifier(path).predict_logits(images)``); the saliency graph ``<stem>.grad.onnx`` when it is
there; a sweep of onnxruntime settings (threads, thread spinning, optimisation level, batch), a profile
of where the time goes, and single-thread images per CPU-second (an estimate of one quiet core that a busy
machine hardly moves), also for each step from the exported graph to the shipped int8 (what each gains).
Prints Markdown tables and writes everything to JSON (``--json``, by default runs/bench/inference.json).

The peak is given two ways: in theory (cores × clock × FLOPs per cycle, from /proc/cpuinfo and lscpu)
and as measured (the best of a large fp32 matmul in numpy, torch and onnxruntime; int8 with
onnxruntime's MatMulInteger). Timings are wall-clock: run it on a quiet machine (the load average is
recorded before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_runtime.contract import META_ARCHITECTURE, META_KIND, META_VARIANT, ONNX_INPUT, ONNX_OUTPUT  # noqa: E402
from fer_train.optimize import count_flops  # noqa: E402
from fer_runtime.classifier import load_classifier  # noqa: E402
from fer_runtime.family import fastest_variant  # noqa: E402

BIG_BATCH = 256


# ----------------------------------------------------------------------------------------------------
# the machine and its peak


def load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "n/a"


def cpu_facts() -> dict:
    """Model, cores, clock and vector units, from /proc/cpuinfo and lscpu."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda name: next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(name)), "")  # noqa: E731
    flags = set(field("flags").split())
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if sys.platform.startswith("linux") else ""
    lscpu_field = lambda name: next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith(name + ":")), "")  # noqa: E731
    max_mhz = lscpu_field("CPU max MHz")
    mhz = float(max_mhz) if max_mhz else float(field("cpu MHz") or 0)
    vendor, family = field("vendor_id"), int(field("cpu family") or 0)
    # fp32 FLOPs per cycle per core = FMA units × lanes × 2. Vector width comes from the flags; the number
    # of FMA units does not, so it comes from what the vendors publish for these families.
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family < 0x1A:
            per_cycle, why = 32, "AVX-512 on Zen 4: 512-bit ops on two 256-bit FMA pipes"
        else:
            per_cycle, why = 64, "AVX-512: two 512-bit FMA pipes (Zen 5, Intel server cores)"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, why = 32, "AVX2: two 256-bit FMA pipes"
    elif "avx" in flags:
        per_cycle, why = 16, "AVX without FMA"
    else:
        per_cycle, why = 8, "SSE"
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    cores = os.cpu_count() or 1
    return {"model": field("model name") or platform.processor(), "vendor": vendor, "family": family, "cores": cores, "mhz": mhz,
            "mhz_source": "lscpu CPU max MHz" if max_mhz else "/proc/cpuinfo cpu MHz (no max given; under a hypervisor this is the nominal clock)",
            "fp32_flops_per_cycle": per_cycle, "why": why, "vnni": vnni,
            "bf16": "avx512_bf16" in flags, "flags": sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))}


def measured_peaks(threads: int, seconds: float = 0.5) -> dict:
    """The best rate of large matrix products (1024² and 2048²): numpy, torch and onnxruntime (MLAS) in
    fp32, onnxruntime's MatMulInteger in int8 (u8 × s8), in GFLOP/s (GOP/s for int8)."""
    import torch
    from onnx import TensorProto, helper

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}

    def best_rate(name: str, n: int, fn) -> None:
        fn()
        rates, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds or len(rates) < 3:
            t = time.perf_counter()
            fn()
            rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
        out[name] = max(out.get(name, 0.0), max(rates))

    for n in (1024, 2048):
        a = rng.random((n, n), np.float32)
        ta = torch.from_numpy(a)
        best_rate("numpy_fp32", n, lambda: a @ a)
        best_rate("torch_fp32", n, lambda: ta @ ta)
        for kind in ("fp32", "int8"):
            types = (TensorProto.FLOAT,) * 3 if kind == "fp32" else (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
            graph = helper.make_graph([helper.make_node("MatMul" if kind == "fp32" else "MatMulInteger", ["a", "b"], ["c"])], "mm",
                                      [helper.make_tensor_value_info("a", types[0], [n, n]), helper.make_tensor_value_info("b", types[1], [n, n])],
                                      [helper.make_tensor_value_info("c", types[2], [n, n])])
            session = ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), threads)
            feeds = {"a": a, "b": a} if kind == "fp32" else {"a": (a * 255).astype(np.uint8), "b": (a * 254 - 127).astype(np.int8)}
            best_rate(f"onnxruntime_{kind}", n, lambda: session.run(None, feeds))
    return out


def peaks(facts: dict, measured: dict) -> dict:
    """Theoretical and measured peaks. The theory uses the reported clock, or the clock the measurements
    prove when that is higher (a hypervisor reports the nominal clock, not the boost clock)."""
    int8_factor = 4 if facts["vnni"] else 2  # VNNI: 4 u8×s8 products per 32-bit lane and instruction; else 2 (pmaddubsw)
    per_ghz = facts["cores"] * facts["fp32_flops_per_cycle"]
    attainable_fp32 = max(measured["numpy_fp32"], measured["torch_fp32"], measured["onnxruntime_fp32"])
    implied_ghz = max(attainable_fp32 / per_ghz, measured["onnxruntime_int8"] / (per_ghz * int8_factor))
    ghz = max(facts["mhz"] / 1e3, implied_ghz)
    return {"clock_ghz": ghz, "reported_ghz": facts["mhz"] / 1e3, "implied_ghz": implied_ghz,
            "theory_fp32": per_ghz * ghz, "theory_int8": per_ghz * ghz * int8_factor, "int8_factor": int8_factor,
            "attainable_fp32": attainable_fp32, "attainable_int8": measured["onnxruntime_int8"]}


# ----------------------------------------------------------------------------------------------------
# timing


def timed_calls(fn, seconds: float, min_calls: int) -> list[float]:
    fn()  # warm-up: first-run allocations and kernel selection
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def speed(run, images: np.ndarray, seconds: float) -> dict:
    """``run(batch)`` at batch 1 (latency percentiles) and at BIG_BATCH (throughput)."""
    one = images[:1]
    big = images[:BIG_BATCH]
    lat = np.array(timed_calls(lambda: run(one), seconds, 50))
    big_times = np.array(timed_calls(lambda: run(big), seconds, 5))
    return {"b1_img_s": 1 / lat.mean(), "p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "b256_img_s": len(big) / float(np.median(big_times)), "b1_calls": len(lat), "b256_calls": len(big_times)}


def per_cpu_second(run, batch: np.ndarray, seconds: float) -> float:
    """Images per CPU-second of this process, single-threaded: unlike wall time, hardly moved by other
    processes on the machine (they take turns on the cores, not this process's CPU time)."""
    run(batch)
    done, start = 0, time.process_time()
    while time.process_time() - start < seconds or done < 3 * len(batch):
        run(batch)
        done += len(batch)
    return done / (time.process_time() - start)


def ort_session(path: Path | bytes, threads: int, level: str = "ALL", spinning: bool = True, profile_prefix: str | None = None):
    from fer_runtime.sessions import make_session

    return make_session(path, threads, optimization=level.lower(), spinning=spinning, profile_prefix=profile_prefix)


def ort_runner(session):
    return lambda batch: session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})


# ----------------------------------------------------------------------------------------------------
# models


def model_meta(path: Path) -> dict:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {}
    for entry in proto.metadata_props:
        try:
            meta[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            meta[entry.key] = entry.value
    return meta


SPEED_MIDDLES = ("", "fast", "int8")  # <stem>.onnx, <stem>.fast.onnx, <stem>.int8.onnx; tta/ensemble are other models


def find_models(paths: list[str], all_files: bool = False) -> dict[str, list[Path]]:
    """Models grouped by their base: ``cnn.onnx`` with ``cnn.fast.onnx`` and ``cnn.int8.onnx``.

    Explanation companions (``<stem>.grad.onnx`` and the like, whose metadata has ``explain_kind``) are
    not classifiers and are left out here.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.onnx")) if p.is_dir() else [p]
    groups: dict[str, list[Path]] = {}
    for f in files:
        if META_KIND in model_meta(f) or (not all_files and ".".join(f.name.split(".")[1:-1]) not in SPEED_MIDDLES):
            continue
        base = f.parent / (f.name.split(".")[0] + ".onnx")
        groups.setdefault(str(base), []).append(f)
    order = {"": 0, "fast": 1, "int8": 2}
    for key, members in groups.items():
        members.sort(key=lambda f: order.get(".".join(f.name.split(".")[1:-1]), 9))
    return groups


def torch_model_for(path: Path):
    """The registered torch model of this architecture with the ONNX file's weights (matched by name)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from fer_train.models import create_model

    meta = model_meta(path)
    model = create_model(str(meta.get(META_ARCHITECTURE, "cnn"))).eval()
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = model.state_dict()
    loaded = {k: torch.from_numpy(inits[k].copy()) for k in state if k in inits and inits[k].shape == tuple(state[k].shape)}
    model.load_state_dict(loaded, strict=False)
    return model, len(loaded), len(state)


def variant_name(path: Path) -> str:
    middle = ".".join(path.name.split(".")[1:-1])
    return {"": "fp32 (as exported)", "fast": "fp32 fast"}.get(middle, middle)


def face_sets() -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """(test images, their labels, validation images for calibration, a description): the 3,589 PublicTest
    faces and the study's validation faces when FER2013 is found, else generated faces."""
    from fer_runtime.io import default_data_path, load_source
    from fer_runtime.splits import make_splits
    from fer_runtime.synthetic import make_faces

    path = default_data_path()
    if path is not None and Path(path).exists():
        splits = make_splits(load_source(path))
        if splits.test is not None:
            return splits.test.images, splits.test.labels, splits.val.images, f"{len(splits.test):,} PublicTest faces of {Path(path).name}"
    images, labels = make_faces(512, seed=0)
    return images, None, make_faces(256, seed=1)[0], "512 generated faces (FER2013 not found)"


def profile(path: Path, images: np.ndarray, threads: int, batch: int = 32, runs: int = 20) -> list[tuple[str, float]]:
    """Share of kernel time per operator type (onnxruntime's profiler), after graph optimisation."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(path, threads, profile_prefix=str(Path(tmp) / "profile"))
        batch_images = images[:batch]
        for _ in range(runs):
            session.run([ONNX_OUTPUT], {ONNX_INPUT: batch_images})
        events = json.loads(Path(session.end_profiling()).read_text())
    time_by_op: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            time_by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(time_by_op.values()) or 1
    return [(op, 100 * t / total) for op, t in time_by_op.most_common()]


def ablation_models(base: Path, calibration: np.ndarray) -> list[tuple[str, object]]:
    """The steps from the exported graph to the shipped variants, one model per step, to time each."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from fer_train.optimize import CalibrationReader, average_pool_as_depthwise_conv, basic_optimizations, fuse_prelu, quantize_int8, simplify

    exported = onnx.load(str(base))
    folded = basic_optimizations(exported)
    fast, _ = simplify(exported)
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice on every call
    with tempfile.TemporaryDirectory() as tmp:  # int8 the straightforward way: quantize_static on the exported graph
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(folded), str(src))
        quantize_static(str(src), str(dst), CalibrationReader(calibration), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        plain_int8 = onnx.load(str(dst))
    depthwise, pools = average_pool_as_depthwise_conv(fast)
    steps = [("fp32 as exported (PReLU = 2 Clip + Mul + Add)", exported),
             ("fp32, PReLU as one PRelu node", fuse_prelu(folded, form="prelu")[0]),
             ("fp32 fast: PReLU as Max(x, w·x), pixel scaling folded", fast),
             ("int8: quantize_static on the exported graph", plain_int8),
             ("int8 of the fast graph, Max and Pad in float", quantize_int8(fast, calibration, on_uint8=False)[0]),
             ("int8 of the fast graph, Max and Pad on uint8", quantize_int8(fast, calibration)[0])]
    if pools:
        steps.append(("… and AveragePool as depthwise conv (shipped int8)", quantize_int8(depthwise, calibration)[0]))
    return steps


# ----------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=[str(REPO / "exported")], help=".onnx files or folders (default: exported/)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for onnxruntime and torch (default: all cores)")
    p.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement (default: %(default)s)")
    p.add_argument("--no-sweep", action="store_true", help="skip the onnxruntime settings sweep and the ablation of the steps")
    p.add_argument("--no-profile", action="store_true", help="skip the profile of every model's fp32 and int8 files")
    p.add_argument("--no-torch", action="store_true", help="skip torch eager")
    p.add_argument("--all-files", action="store_true", help="also time <stem>.tta.onnx, <stem>.ensemble.onnx (other models, not speed variants)")
    p.add_argument("--json", default=str(REPO / "runs" / "bench" / "inference.json"))
    args = p.parse_args()

    import onnxruntime as ort
    import torch

    started = load_average()
    groups = find_models(args.models, args.all_files)
    if not groups:
        sys.exit(f"no models found in {', '.join(args.models)}; export one (fer-train export RUN --name cnn) or pass .onnx paths")
    facts = cpu_facts()
    images, labels, calibration, images_desc = face_sets()
    batch_images = images.astype(np.float32)[:, None]
    if len(batch_images) < BIG_BATCH:
        batch_images = np.concatenate([batch_images] * (BIG_BATCH // len(batch_images) + 1))
    today = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{today}: {facts['model']}, {facts['cores']} cores, {args.threads} threads; onnxruntime {ort.__version__}, torch {torch.__version__}, "
          f"numpy {np.__version__}; load average at start {started}; inputs: {images_desc}", flush=True)

    measured = measured_peaks(args.threads)
    peak = peaks(facts, measured)
    report: dict = {"date": today, "machine": facts, "threads": args.threads, "load_average_start": started, "inputs": images_desc,
                    "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
                    "measured_matmul_gflops": measured, "peak_gflops": peak, "models": {}}

    rows = []
    for base, files in groups.items():
        base_path = Path(base)
        flops_source = base_path if base_path.exists() else files[0]
        gflop = count_flops(flops_source).flops / 1e9
        entry: dict = {"gflop_per_image": gflop, "files": {}}
        report["models"][base] = entry
        if not args.no_torch:
            torch.set_num_threads(args.threads)
            model, n_loaded, n_params = torch_model_for(flops_source)
            with torch.inference_mode():
                t_speed = speed(lambda b: model(torch.from_numpy(b)), batch_images, args.seconds)
            t_speed["weights_loaded"] = f"{n_loaded}/{n_params} tensors"
            entry["torch_eager"] = t_speed
            rows.append((base_path.stem, "torch eager fp32", gflop, t_speed, "fp32", None))
        entry["auto"] = str(fastest_variant(base_path)) if base_path.exists() else None  # what load_classifier(variant="auto") opens
        if base_path.exists() and not any(".fast." in f.name for f in files):
            # no fast file shipped: the same rewrite, made in memory, so that every model has its three rows
            import onnx

            from fer_train.optimize import simplify

            session = ort_session(simplify(onnx.load(str(base_path)))[0].SerializeToString(), args.threads)
            s = speed(ort_runner(session), batch_images, args.seconds)
            s["variant"] = "fp32-fast (in memory, not shipped)"
            entry["files"][f"{base_path.stem}.fast (in memory)"] = s
            rows.append((base_path.stem, "onnxruntime fp32 fast (in memory; not shipped)", gflop, s, "fp32", None))
        for f in files:
            meta = model_meta(f)
            session = ort_session(f, args.threads)
            s = speed(ort_runner(session), batch_images, args.seconds)
            clf = load_classifier(f, threads=args.threads)
            clf.predict_logits(images[:BIG_BATCH])  # warm-up, as a TUI that has shown one face already
            t = time.perf_counter()
            logits = clf.predict_logits(images)
            s["tui_predict_s"] = time.perf_counter() - t
            s["tui_images"] = len(images)
            accuracy = float((logits.argmax(1) == labels).mean()) if labels is not None else None
            s["test_accuracy_measured"] = accuracy
            s["variant"] = meta.get(META_VARIANT, "fp32")
            entry["files"][str(f)] = s
            kind = "int8" if "int8" in s["variant"] else "fp32"
            rows.append((base_path.stem, f"onnxruntime {variant_name(f)}", gflop, s, kind, accuracy))
            print(f"  measured {f.name}", flush=True)
        grad = base_path.with_name(base_path.stem + ".grad.onnx")
        if grad.exists():
            session = ort_session(grad, args.threads)
            run = lambda b: session.run(None, {ONNX_INPUT: b, "class_index": np.zeros(len(b), np.int64)})  # noqa: E731
            entry["saliency"] = {"file": str(grad), **speed(run, batch_images, args.seconds)}
        else:
            entry["saliency"] = {"file": str(grad), "skipped": "no gradient graph beside the model"}

    # -- the tables
    clock = (f"{peak['clock_ghz']:.2f} GHz" + (f" (the measured int8/fp32 rates prove at least this; {facts['mhz_source']} says "
                                                f"{peak['reported_ghz']:.2f})" if peak["implied_ghz"] > peak["reported_ghz"] else f" ({facts['mhz_source']})"))
    print(f"\nPeak of this CPU: in theory {peak['theory_fp32']:,.0f} GFLOP/s fp32 = {facts['cores']} cores × {clock} × "
          f"{facts['fp32_flops_per_cycle']} FLOP/cycle ({facts['why']}); int8 {peak['theory_int8']:,.0f} GOP/s "
          f"({'VNNI' if facts['vnni'] else 'no VNNI'}: {peak['int8_factor']}× fp32).")
    print(f"Measured ({args.threads} threads, best of 1024² and 2048² matmuls): numpy {measured['numpy_fp32']:,.0f}, torch "
          f"{measured['torch_fp32']:,.0f}, onnxruntime {measured['onnxruntime_fp32']:,.0f} GFLOP/s fp32; onnxruntime int8 "
          f"{measured['onnxruntime_int8']:,.0f} GOP/s.\n")
    print("| model | engine | GFLOP/img | img/s b=1 | p50 ms | p99 ms | img/s b=256 | GFLOP/s b=256 | % peak (theory / measured) | PublicTest acc | TUI 3,589 faces |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stem, engine, gflop, s, kind, acc in rows:
        rate = gflop * s["b256_img_s"]
        theory, attainable = (peak["theory_int8"], peak["attainable_int8"]) if kind == "int8" else (peak["theory_fp32"], peak["attainable_fp32"])
        tui = f"{s['tui_predict_s']:.2f} s" if "tui_predict_s" in s else "—"
        print(f"| {stem} | {engine} | {gflop:.3f} | {s['b1_img_s']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['b256_img_s']:,.0f} | "
              f"{rate:,.0f} | {100 * rate / theory:.0f} % / {100 * rate / attainable:.0f} % | {f'{100 * acc:.2f} %' if acc is not None else '—'} | {tui} |")
    print("\n% peak: GFLOP/s at batch 256 against the theoretical / the measured peak; int8 rows against the int8 peaks.")
    for base, entry in report["models"].items():
        if entry.get("auto"):
            print(f"load_classifier({Path(base).name!r}, variant='auto') opens {Path(entry['auto']).name}.")
    for stem in dict.fromkeys(r[0] for r in rows):
        timed = [(r[3]["tui_predict_s"], r[1]) for r in rows if r[0] == stem and "tui_predict_s" in r[3]]
        if timed:
            seconds, engine = min(timed)
            print(f"TUI, {stem}: the fastest file ({engine.removeprefix('onnxruntime ')}) predicts the {images_desc} in {seconds:.2f} s "
                  f"(load_classifier(path).predict_logits(images)).")
    print()

    print("| saliency (gradient graph) | per image, b=1 (p50) | batch of 256 | per image in the batch |")
    print("|---|---:|---:|---:|")
    for base, entry in report["models"].items():
        sal = entry["saliency"]
        if "skipped" in sal:
            print(f"| {Path(base).stem} | skipped: no {Path(sal['file']).name} | | |")
        else:
            print(f"| {Path(sal['file']).name} | {sal['p50_ms']:.2f} ms | {1e3 * BIG_BATCH / sal['b256_img_s']:.0f} ms | "
                  f"{1e3 / sal['b256_img_s']:.3f} ms |")

    if not args.no_sweep:
        first = next(iter(groups.values()))
        sweep_files = [f for f in first if "fast" not in f.name]
        report["sweep"] = sweep = []
        print(f"\nonnxruntime settings ({first[0].stem}; images/s; spinning = thread pool spin-waits between ops):\n")
        print("| file | threads | spinning | optimisation | b=1 | b=32 | b=256 |")
        print("|---|---:|---|---|---:|---:|---:|")
        settings = [(1, True)] + ([(args.threads, True), (args.threads, False)] if args.threads > 1 else [])
        for f in sweep_files:
            for threads, spinning in settings:
                for level in ("EXTENDED", "ALL"):
                    session = ort_session(f, threads, level, spinning)
                    run = ort_runner(session)
                    rates = {}
                    for b in (1, 32, BIG_BATCH):
                        calls = timed_calls(lambda: run(batch_images[:b]), args.seconds / 4, 3)
                        rates[b] = b / float(np.median(calls))
                    sweep.append({"file": str(f), "threads": threads, "spinning": spinning, "level": level, **{f"b{b}": r for b, r in rates.items()}})
                    print(f"| {f.name} | {threads} | {'yes' if spinning else 'no'} | {level.lower()} | {rates[1]:,.0f} | {rates[32]:,.0f} | "
                          f"{rates[BIG_BATCH]:,.0f} |", flush=True)

    if not args.no_profile:
        report["profile"] = {}
        print("\nWhere the time goes (onnxruntime profiler, batch 32, share of kernel time by operator):\n")
        for files in groups.values():
            for f in files:
                shares = profile(f, batch_images, args.threads)
                report["profile"][str(f)] = shares
                print(f"- {f.name}: " + ", ".join(f"{op} {share:.0f} %" for op, share in shares if share >= 1), flush=True)

    print("\nOne core, by CPU time (images per CPU-second, 1 thread; robust to a busy machine, an estimate of one quiet core):\n")
    print("| model | engine | b=1 | b=32 |")
    print("|---|---|---:|---:|")
    report["per_cpu_second"] = per_cpu = {}
    torch.set_num_threads(1)
    for base, files in groups.items():
        engines = []
        if not args.no_torch:
            model, _, _ = torch_model_for(Path(base) if Path(base).exists() else files[0])
            engines = [("torch eager fp32", lambda b, model=model: model(torch.from_numpy(b)))]
        engines += [(f"onnxruntime {variant_name(f)}", ort_runner(ort_session(f, 1, spinning=False))) for f in files]
        for engine, run in engines:
            with torch.inference_mode():
                rates = {b: per_cpu_second(run, batch_images[:b], args.seconds / 2) for b in (1, 32)}
            per_cpu[f"{Path(base).stem} {engine}"] = rates
            print(f"| {Path(base).stem} | {engine} | {rates[1]:,.0f} | {rates[32]:,.0f} |", flush=True)
    torch.set_num_threads(args.threads)

    if not args.no_sweep:
        print("\nWhat each step gains (one core, images per CPU-second as above; int8 calibrated on 256 validation faces):\n")
        print("| model | step | b=1 | b=32 |")
        print("|---|---|---:|---:|")
        report["ablation"] = ablation = {}
        for base in groups:
            if not Path(base).exists():
                continue
            for step, model in ablation_models(Path(base), calibration[:256]):
                run = ort_runner(ort_session(model.SerializeToString(), 1, spinning=False))
                rates = {b: per_cpu_second(run, batch_images[:b], args.seconds / 2) for b in (1, 32)}
                ablation[f"{Path(base).stem}: {step}"] = rates
                print(f"| {Path(base).stem} | {step} | {rates[1]:,.0f} | {rates[32]:,.0f} |", flush=True)

    report["load_average_end"] = load_average()
    print(f"\nload average at start {started}, at end {report['load_average_end']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
