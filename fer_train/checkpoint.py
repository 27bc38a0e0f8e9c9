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
        raise FileNotFoundError(f"{path}: no best.pt or last.pt in this run folder (it saved no epoch); train again")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


REQUIRED_KEYS = ("model_name", "state_dict")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def _remedy(path: Path) -> str:
    """What a user can do about a damaged checkpoint of a run folder."""
    run = path.parent
    if path.name == "last.pt":
        return (f"the run cannot continue from it: fine-tune from its best weights with fer-train --init-from {run}, "
                f"or start the run afresh")
    if path.name == "best.pt":
        return (f"use the last epoch's weights instead ({path.with_name('last.pt')}: fer-train export {run} --last, "
                f"or --init-from {path.with_name('last.pt')}), or train again")
    return "train again, or name another checkpoint"


def load_checkpoint(path: str | Path, prefer: str = "best", remedy: str | None = None) -> dict:
    """A checkpoint (a ``.pt`` file, or a run folder's ``best.pt``/``last.pt``), read with ``weights_only=True``.
    A file that is empty, damaged or not one of ours raises ``ValueError`` naming it and saying what to do
    (``remedy``; by default what a run folder allows)."""
    path = resolve_checkpoint(path, prefer)
    remedy = remedy or _remedy(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ValueError(f"{path}: empty (0 bytes): it was cut short while being written (a full disk, or the machine "
                         f"stopped); {remedy}")
    if head != ZIP_MAGIC:
        raise ValueError(f"{path}: damaged: not a PyTorch checkpoint (it was overwritten or is another kind of file); {remedy}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own message advises weights_only=False, which is never the answer here
        raise ValueError(f"{path}: damaged: the checkpoint cannot be read ({exc.__class__.__name__}; "
                         f"it may have been cut short); {remedy}") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS):
        raise ValueError(f"{path}: not a fer checkpoint (a PyTorch file without the model name and weights "
                         f"that fer-train saves); {remedy}")
    return checkpoint


def load_resume_checkpoint(run_dir: str | Path) -> dict:
    """``last.pt`` of a run folder, with the optimizer state ``--resume`` continues from."""
    path = Path(run_dir) / "last.pt"
    if not path.exists():
        best = " (best.pt is there)" if (path.parent / "best.pt").exists() else ""
        raise FileNotFoundError(f"{path}: missing{best}: --resume continues from the last saved epoch; "
                                f"fine-tune from the run's best weights with fer-train --init-from {path.parent}, "
                                f"or start the run afresh")
    checkpoint = load_checkpoint(path)
    if checkpoint.get("optimizer") is None or "epoch" not in checkpoint or "history" not in checkpoint:
        raise ValueError(f"{path}: holds weights without the optimizer's state, so the run cannot continue from it; "
                         f"fine-tune from it with fer-train --init-from {path}")
    return checkpoint


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
