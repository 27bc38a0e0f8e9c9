"""Training throughput (images/s) of `cnn` and `fernet` on this machine, every training path side by side: float32,
channels-last, bf16 autocast, both, and torch.compile (inductor) of the float32 and of the fastest eager path; and
the data path: how much of a step the augmentation on the CPU takes.

    .venv/bin/python benchmarks/train_throughput.py [--steps 40] [--models cnn fernet] [--threads N] [--no-compile]

Runs real training steps (batch 64, each model's shipped recipe: the study's augmentation for `cnn`, flips, small
rotations and shifts, zoom and erasing for `fernet`) on FER2013 images when they are found, else on generated
faces; prints Markdown tables for docs/training.md. A path this CPU cannot run (bf16 without its instructions)
is marked –.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import torch

from fer_runtime.io import default_data_path, load_source
from fer_runtime.synthetic import make_faces
from fer_train.augment import augment_batch
from fer_train.config import TrainConfig
from fer_train.speed import images_per_second
from fer_train.devices import bf16_supported

BATCH = 64
RECIPES = {  # the augmentation each model is trained with (docs/training.md)
    "cnn": dict(),  # the study's rotation ±40° and shifts 0.2
    "fernet": dict(flip=True, rotation=15, shift=0.1, scale=0.15, erase=0.5, optimizer="sgd", schedule="onecycle", label_smoothing=0.1),
}
PATHS = {  # name: (bf16, channels_last, compile)
    "float32": (False, False, False),
    "channels-last": (False, True, False),
    "bf16": (True, False, False),
    "bf16 + channels-last": (True, True, False),
    "compile": (False, False, True),
    "compile + bf16 + channels-last": (True, True, True),
}


@functools.lru_cache(maxsize=None)
def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    path = default_data_path()
    if path is not None:
        split = load_source(path).splits["Training"]
        x, y = split.images[:n], split.labels[:n]
    else:
        x, y = make_faces(n)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def config_for(model_name: str) -> TrainConfig:
    return TrainConfig(model=model_name, batch_size=BATCH, epochs=1, **RECIPES[model_name])


def measure(model_name: str, bf16: bool, steps: int, channels_last: bool = False, compile: bool = False) -> float:
    """Images per second of ``steps`` training steps after 5 of warm-up (which, compiled, includes the compilation)."""
    return images_per_second(config_for(model_name), torch.device("cpu"), bf16, channels_last, images=images(BATCH * (steps + 5)),
                             warm_up=5, timed=steps, compile=compile)


def augmentation_rate(model_name: str, steps: int) -> float:
    """Images per second of the augmentation alone, as train_one_epoch does it per batch."""
    config = config_for(model_name)
    x, _ = images(BATCH * steps)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(steps):
        augment_batch(x[i * BATCH:(i + 1) * BATCH].float(), generator, config)
    return BATCH * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--models", nargs="+", default=["cnn", "fernet"], choices=sorted(RECIPES))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (it takes a minute or two per model)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    has_bf16 = bf16_supported(torch.device("cpu"))
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"bf16 instructions: {has_bf16}, batch {BATCH}, {args.steps} steps per measurement\n")
    paths = {k: v for k, v in PATHS.items() if not (args.no_compile and v[2])}
    print("| model | " + " | ".join(paths) + " |")
    print("|---|" + "---:|" * len(paths))
    rates = {}
    for name in args.models:
        cells = []
        for path, (bf16, nhwc, compiled) in paths.items():
            if bf16 and not has_bf16:
                cells.append("–")
                continue
            rates[name, path] = measure(name, bf16, args.steps, nhwc, compiled)
            cells.append(f"{rates[name, path]:,.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("\n| model | fastest path | images/s | epoch of 25,837 | augmentation alone, images/s | share of a step |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models:
        best = max((path for (model, path) in rates if model == name), key=lambda path: rates[name, path])
        augment = augmentation_rate(name, args.steps)
        print(f"| {name} | {best} | {rates[name, best]:,.0f} | {25837 / rates[name, best]:,.0f} s | {augment:,.0f} | "
              f"{rates[name, best] / augment:.0%} |", flush=True)


if __name__ == "__main__":
    main()
