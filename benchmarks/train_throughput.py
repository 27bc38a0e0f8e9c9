"""Training throughput (images/s) of each model on this machine: float32, float32 channels-last, bf16 autocast.

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--models cnn fernet dnn] [--threads N]

Runs real training steps (batch 64, the study's augmentation for the CNN) on FER2013 images when they
are found, else on generated faces; prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from fer_train.config import TrainConfig
from fer_runtime.io import default_data_path, load_source
from fer_train.models import create_model
from fer_runtime.synthetic import make_faces
from fer_train.train import bf16_supported, build_optimizer, train_one_epoch


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    path = default_data_path()
    if path is not None:
        split = load_source(path).splits["Training"]
        x, y = split.images[:n], split.labels[:n]
    else:
        x, y = make_faces(n)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def measure(model_name: str, bf16: bool, steps: int, augment: bool, channels_last: bool = False) -> float:
    config = TrainConfig(model=model_name, batch_size=64, bf16=bf16, augment=augment, epochs=1, channels_last=channels_last,
                         **(dict(flip=True, rotation=15, shift=0.1) if model_name == "fernet" else {}))
    x, y = images(64 * steps)
    torch.manual_seed(0)
    model = create_model(model_name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(config, model, steps)
    train_one_epoch(model, optimizer, scheduler, x[:64 * 3], y[:64 * 3], config, epoch=0)  # warm-up
    start = time.perf_counter()
    train_one_epoch(model, optimizer, scheduler, x, y, config, epoch=1)
    return len(y) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--models", nargs="+", default=["cnn", "fernet", "dnn"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    has_bf16 = bf16_supported(torch.device("cpu"))
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"bf16 instructions: {has_bf16} (without them --bf16 trains in float32)")
    print("| model | augmentation | float32 img/s | channels-last img/s | bf16 img/s | epoch of 25,837 (fp32 / channels-last) |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models:
        augment = name != "dnn"  # the study trained the DNN without augmentation
        fp32 = measure(name, False, args.steps, augment)
        nhwc = measure(name, False, args.steps, augment, channels_last=True) if name != "dnn" else fp32
        bf16 = f"{measure(name, True, args.steps, augment):,.0f}" if has_bf16 else "–"
        print(f"| {name} | {'flip+rotation+shift' if name == 'fernet' else 'rotation+shift' if augment else 'none'} | {fp32:,.0f} | "
              f"{nhwc:,.0f} | {bf16} | {25837 / fp32:,.0f} s / {25837 / nhwc:,.0f} s |", flush=True)


if __name__ == "__main__":
    main()
