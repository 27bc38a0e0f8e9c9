"""``fer-train --fast``: the fastest training path for this model on this machine, measured before the run starts.

The paths are float32 with channels-last activations and, where the device has bf16 instructions (AVX512-BF16 or
AMX on a CPU, or CUDA), bf16 autocast with and without channels-last. Which one wins depends on both the CPU and
the model (benchmarks/train_throughput.py, docs/training.md#training-speed): on an AMD EPYC with AVX512-BF16,
`fernet` trains 1.9× as fast with bf16 and channels-last as with channels-last alone, while the study's CNN,
whose per-element PReLUs stay in float32, is slower with bf16. So ``--fast`` times a few real training steps of
each path on generated faces (a few seconds) and keeps the fastest; the run's ``config.json`` records the choice,
and ``--resume`` keeps it. ``torch.compile`` is not among them: it took a minute to compile and was no faster.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from fer_runtime.synthetic import make_faces

from .config import TrainConfig
from .models import create_model
from .devices import bf16_supported
from .epoch import build_optimizer, train_one_epoch

BATCH_LIMIT = 64  # the batches timed are at most this large: enough to rank the paths, short enough to take seconds
WARM_UP_STEPS, TIMED_STEPS = 2, 5


def candidate_paths(device: torch.device) -> list[tuple[bool, bool]]:
    """(bf16, channels_last) pairs worth timing on ``device``; float32 without channels-last is never faster."""
    return [(False, True)] + ([(True, False), (True, True)] if bf16_supported(device) else [])


def describe(bf16: bool, channels_last: bool) -> str:
    return " + ".join((["bf16"] if bf16 else ["float32"]) + (["channels-last"] if channels_last else []))


def images_per_second(config: TrainConfig, device: torch.device, bf16: bool, channels_last: bool, *, images=None,
                      warm_up: int = WARM_UP_STEPS, timed: int = TIMED_STEPS, compile: bool = False) -> float:
    """Training images per second of ``config``'s model, augmentation and schedule on this path, over ``timed``
    steps after ``warm_up`` (which, with ``compile``, includes torch.compile's compilation). ``images``: uint8
    images (N, 1, 48, 48) and labels, at least ``warm_up + timed`` batches; else generated faces."""
    batch = min(config.batch_size, BATCH_LIMIT)
    trial = dataclasses.replace(config, bf16=bf16, channels_last=channels_last, batch_size=batch, epochs=1)
    if images is None:
        faces, labels = make_faces(batch * (warm_up + timed), seed=0)
        images = torch.from_numpy(faces).unsqueeze(1), torch.from_numpy(labels.astype("int64"))
    x, y = (t[:batch * (warm_up + timed)].to(device) for t in images)
    torch.manual_seed(0)
    model = create_model(config.model, **config.model_kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(trial, model, warm_up + timed)
    net = torch.compile(model) if compile else model
    warm = batch * warm_up
    train_one_epoch(net, optimizer, scheduler, x[:warm], y[:warm], trial, epoch=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train_one_epoch(net, optimizer, scheduler, x[warm:], y[warm:], trial, epoch=1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (len(y) - warm) / (time.perf_counter() - start)


def fastest_path(config: TrainConfig, device: torch.device, paths: list[tuple[bool, bool]] | None = None) -> tuple[TrainConfig, dict[str, float]]:
    """``config`` with the fastest of ``paths`` (default :func:`candidate_paths`) for its model, and every path's
    images/s. Under torchrun every rank must time the same ``paths``, together."""
    rates = {}
    for bf16, channels_last in paths or candidate_paths(device):
        rates[(bf16, channels_last)] = images_per_second(config, device, bf16, channels_last)
    bf16, channels_last = max(rates, key=rates.get)
    return (dataclasses.replace(config, bf16=bf16, channels_last=channels_last),
            {describe(*path): round(rate, 1) for path, rate in rates.items()})
