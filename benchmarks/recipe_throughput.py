"""Training images/s of `fer-best`'s recipe and of each change issue 34's pilots tried (random 40-pixel crops, mixup,
a moving average of the weights, a wider fernet), on the fastest path `--fast` finds here, one after the other on
the same images, so that the pilots' table (REPORT.md) compares their cost as well as their accuracy.

    .venv/bin/python benchmarks/recipe_throughput.py [--steps 60] [--repeats 3]

The pilots' own epochs ran beside other work, so their recorded images/s are not comparable; these are, measured
on a quiet machine. Prints a Markdown table (median of the repeats) with the CPU and the date.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import statistics
import subprocess
import time

import torch

from fer_train.config import TrainConfig
from fer_train.devices import bf16_supported
from fer_train.models import count_parameters, create_model
from fer_train.speed import images_per_second

FER_BEST = dict(model="fernet", optimizer="sgd", lr=0.1, weight_decay=5e-4, schedule="onecycle", flip=True, rotation=15.0, shift=0.1,
                scale=0.15, erase=0.5, label_smoothing=0.1, batch_size=64, epochs=1)
PILOTS = {  # name: what the pilot changed in fer-best's recipe
    "today's recipe": {},
    "+ random crops 40": dict(crop=40),
    "+ mixup α 0.4": dict(mixup=0.4),
    "wider 48-96-192-384": dict(model_kwargs={"widths": [48, 96, 192, 384]}),
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def ema_seconds_per_step(config: TrainConfig, steps: int) -> float:
    """The moving average's own cost per step (--ema), which images_per_second leaves out."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = create_model(config.model, **config.model_kwargs)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    ema.update_parameters(model)
    start = time.perf_counter()
    for _ in range(steps):
        ema.update_parameters(model)
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device("cpu")
    bf16 = bf16_supported(device)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {datetime.date.today()}; "
          f"path: {'bf16 + channels-last' if bf16 else 'float32 + channels-last'}, batch 64, {args.steps} steps, median of {args.repeats}\n")
    print("| recipe | parameters | images/s | epoch of 25,837 faces |")
    print("|---|---:|---:|---:|")
    for name, change in PILOTS.items():
        config = dataclasses.replace(TrainConfig(**FER_BEST), **change)
        rates = [images_per_second(config, device, bf16, True, warm_up=5, timed=args.steps) for _ in range(args.repeats)]
        rate = statistics.median(rates)
        params = count_parameters(create_model(config.model, **config.model_kwargs))
        print(f"| {name} | {params:,} | {rate:,.0f} | {25837 / rate:,.0f} s |", flush=True)
    per_step = ema_seconds_per_step(TrainConfig(**FER_BEST), 200)
    print(f"\n--ema 0.999 adds {per_step * 1000:.2f} ms per step of 64 images to today's recipe "
          f"({per_step * 403:.1f} s per epoch of 403 steps) and one more validation pass per epoch.")


if __name__ == "__main__":
    main()
