"""Where a run computes: the device, its bf16 support, its CPU threads, and how it is described in a run's records."""

from __future__ import annotations

import platform

import numpy as np
import torch

from fer_runtime.io import Split

from . import distributed


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when there is a GPU, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_device(name: str, threads: int | None) -> torch.device:
    """The device this process trains on (under torchrun: this rank's GPU), with ``threads`` CPU threads on a CPU
    (default: the machine's cores, shared among the ranks on it)."""
    device = distributed.device_for(pick_device(name))
    if device.type == "cpu":
        torch.set_num_threads(threads or distributed.default_threads())
    return device


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def as_tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 48, 48) and int64 labels, on the device (converted to float per batch)."""
    x = torch.from_numpy(np.ascontiguousarray(split.images)).unsqueeze(1).to(device)
    y = torch.from_numpy(split.labels.astype(np.int64)).to(device)
    return x, y


def describe_devices(device: torch.device) -> str:
    """The run's devices for its ``start`` event: ``cpu``, or ``2 processes on cpu (gloo)``."""
    world = distributed.world()
    return str(device) if not world.distributed else f"{world.size} processes on {device} ({world.backend})"


def describe_hardware(device: torch.device) -> str:
    """The hardware recorded in an exported model's metadata: the GPU's name, or the CPU and its threads."""
    if device.type == "cuda":
        one = torch.cuda.get_device_name(device)
    else:
        one = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    world = distributed.world()
    return one if not world.distributed else f"{world.size} processes, each {one}"
