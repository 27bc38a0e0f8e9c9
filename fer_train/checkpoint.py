"""Checkpoints that rebuild their model alone, written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .models import create_model


def save_checkpoint(path: str | Path, *, model: nn.Module, model_name: str, model_kwargs: dict, config: dict,
                    epoch: int, best_metric: float, best_epoch: int, history: list[dict],
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, extra: dict | None = None) -> Path:
    """Write a checkpoint via a temporary file, so an interrupt never leaves half a file behind."""
    path = Path(path)
    state = {
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "config": config,
        "epoch": epoch,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "history": history,
        "fer_version": __version__,
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A run folder gives its ``best.pt`` (or ``last.pt``); a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        for name in (f"{prefer}.pt", "best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"{path}: no best.pt or last.pt in this run folder")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path: str | Path, prefer: str = "best") -> dict:
    path = resolve_checkpoint(path, prefer)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable fer checkpoint ({exc.__class__.__name__}: {exc})") from exc


def load_parent(path: str | Path, prefer: str = "best") -> dict:
    """What a fine-tuning run starts from: a run folder, a checkpoint file, or an exported ``.onnx`` model
    (read back by :func:`fer_train.onnx_import.checkpoint_from_onnx`)."""
    from .onnx_import import checkpoint_from_onnx, is_onnx

    return checkpoint_from_onnx(path) if is_onnx(path) else load_checkpoint(path, prefer=prefer)


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """The checkpoint's model, weights loaded, in eval mode."""
    model = create_model(checkpoint["model_name"], **checkpoint.get("model_kwargs", {}))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
