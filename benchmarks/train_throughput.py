"""Training throughput (images/s) of each model on this machine, float32 and bf16 autocast.

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--models cnn dnn]

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
from fer_train.io import default_data_path, load_source
from fer_train.models import create_model
from fer_train.synthetic import make_faces
from fer_train.train import bf16_supported, build_optimizer, train_one_epoch


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    path = default_data_path()
    if path is not None:
        split = load_source(path).splits["Training"]
        x, y = split.images[:n], split.labels[:n]
    else:
        x, y = make_faces(n)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def measure(model_name: str, bf16: bool, steps: int, augment: bool) -> float:
    config = TrainConfig(model=model_name, batch_size=64, bf16=bf16, augment=augment, epochs=1)
    x, y = images(64 * steps)
    torch.manual_seed(0)
    model = create_model(model_name)
    optimizer, scheduler = build_optimizer(config, model, steps)
    train_one_epoch(model, optimizer, scheduler, x[:64 * 3], y[:64 * 3], config, epoch=0)  # warm-up
    start = time.perf_counter()
    train_one_epoch(model, optimizer, scheduler, x, y, config, epoch=1)
    return len(y) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--models", nargs="+", default=["cnn", "dnn"])
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"bf16 supported: {bf16_supported(torch.device('cpu'))}")
    print("| model | augmentation | float32 img/s | bf16 img/s | epoch of 25,837 (fp32 / bf16) |")
    print("|---|---|---:|---:|---:|")
    for name in args.models:
        augment = name == "cnn"  # the study trained the DNN without augmentation
        fp32 = measure(name, False, args.steps, augment)
        bf16 = measure(name, True, args.steps, augment)
        print(f"| {name} | {'rotation+shift' if augment else 'none'} | {fp32:,.0f} | {bf16:,.0f} | "
              f"{25837 / fp32:,.0f} s / {25837 / bf16:,.0f} s |", flush=True)


if __name__ == "__main__":
    main()
