"""Start training from a shipped model: an exported ``.onnx`` file read back as a checkpoint.

``exported/`` is what travels; the run folders that produced it often do not. ``--init-from
exported/cnn.onnx`` fine-tunes the shipped model itself: the graph's weights are the model's parameters
under their torch names (the exporter keeps them), and its metadata holds the training config (so the
validation split can be checked) and the training history (so the fine-tuned model's curves and epochs
continue the shipped ones).

A model whose BatchNorm was folded into its convolutions at export (``fernet``) is unfolded: each
convolution takes the folded weight, and its BatchNorm starts as the identity plus the folded bias, which
gives exactly the shipped outputs in eval mode. :func:`calibrate_unfolded_batchnorm` then sets each
BatchNorm's statistics and affine parameters from the convolution's outputs on training images, so that
training mode (batch statistics) also starts close to the shipped model instead of re-normalising it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models import create_model
from fer_runtime.contract import META_ARCHITECTURE, META_CONFIG, META_EXTRA

UNFOLDED_KEY = "unfolded_batchnorm"  # marks a checkpoint whose BatchNorms need calibrate_unfolded_batchnorm


def is_onnx(path: str | Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx" and Path(path).is_file()


def checkpoint_from_onnx(path: str | Path) -> dict:
    """An exported model as a checkpoint dict (model name and arguments, state dict, config, history).

    ``parent_summary`` carries the file's own record of the runs before it (``initialized_from``), which
    the exporter of a fine-tuned model continues. Raises ``ValueError`` naming the file when the graph is
    not a fer export or its weights do not fit the named model.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable ONNX file ({exc.__class__.__name__}: {exc})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_ARCHITECTURE not in meta or META_CONFIG not in meta:
        raise ValueError(f"{path}: not a fer export (no '{META_ARCHITECTURE}' and '{META_CONFIG}' metadata); "
                         "fine-tuning needs the shipped file as fer-train wrote it")
    config = json.loads(meta[META_CONFIG])
    extra = json.loads(meta.get(META_EXTRA) or "{}")
    training = extra.get("training") or {}
    name, kwargs = meta[META_ARCHITECTURE], dict(config.get("model_kwargs") or {})
    weights = {init.name: torch.from_numpy(np.array(numpy_helper.to_array(init))) for init in proto.graph.initializer}

    model = create_model(name, **kwargs)
    unfold = callable(getattr(model, "fused", None))
    target = model.fused().state_dict() if unfold else model.state_dict()
    missing = [k for k in target if k not in weights]
    wrong = [f"{k} {tuple(weights[k].shape)} (the {name} model has {tuple(v.shape)})"
             for k, v in target.items() if k in weights and weights[k].shape != v.shape]
    if missing or wrong:
        raise ValueError(f"{path}: its weights do not fit a {name!r} model"
                         + (f"; missing: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "") if missing else "")
                         + (f"; wrong shape: {', '.join(wrong[:3])}" if wrong else ""))
    fused_state = {k: weights[k].to(v.dtype) for k, v in target.items()}
    state = model.unfold_state_dict(fused_state) if unfold else fused_state
    history = training.get("history") or []
    return {
        "model_name": name, "model_kwargs": kwargs, "state_dict": state, "config": config,
        "epoch": training.get("epochs") or (history[-1]["epoch"] if history else None),
        "best_epoch": extra.get("best_epoch"), "history": history,
        "parent_summary": training.get("initialized_from") or {},
        UNFOLDED_KEY: unfold, "source": str(path),
    }


@torch.no_grad()
def calibrate_unfolded_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> int:
    """Give every BatchNorm that follows a convolution the statistics of that convolution's outputs on
    ``images`` (N, 48, 48 or N, 1, 48, 48; a few thousand training images), keeping the model's eval-mode
    outputs exactly as they are. Returns the number of BatchNorms calibrated.

    A BatchNorm that starts as ``y + b`` (identity plus the folded bias) gets running mean ``m``, running
    variance ``v``, weight ``√(v + eps)`` and bias ``b + m``, where ``m`` and ``v`` are the per-channel mean
    and variance of ``y``: eval mode computes ``(y − m)/√(v + eps)·√(v + eps) + b + m = y + b``, and training
    mode, whose batch statistics are close to ``m`` and ``v``, computes nearly the same, so the first steps
    train the shipped net rather than a re-normalised one.
    """
    pairs = _conv_bn_pairs(model)
    if not pairs:
        return 0
    sums: dict[int, list[torch.Tensor]] = {}

    def hook(index):
        def record(_module, _inputs, output):
            y = output.detach().double()
            stats = sums.setdefault(index, [torch.zeros(y.shape[1], dtype=torch.float64) for _ in range(2)] + [0])
            stats[0] += y.sum(dim=(0, 2, 3)).cpu()
            stats[1] += (y * y).sum(dim=(0, 2, 3)).cpu()
            stats[2] += y.numel() // y.shape[1]
        return record

    was_training = model.training
    model.eval()
    handles = [conv.register_forward_hook(hook(i)) for i, (conv, _) in enumerate(pairs)]
    try:
        x = images.reshape(-1, 1, *images.shape[-2:])
        device = next(model.parameters()).device
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size].to(device).float())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for i, (_conv, bn) in enumerate(pairs):
        total, total_sq, count = sums[i]
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        folded_bias = bn.bias.detach().double().cpu()
        dtype, device = bn.weight.dtype, bn.weight.device
        bn.running_mean.copy_(mean.to(device, dtype))
        bn.running_var.copy_(var.to(device, dtype))
        bn.weight.copy_((var + bn.eps).sqrt().to(device, dtype))
        bn.bias.copy_((folded_bias + mean).to(device, dtype))
    return len(pairs)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each convolution directly followed by a BatchNorm in a Sequential."""
    pairs = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            pairs += [(a, b) for a, b in zip(children, children[1:]) if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    return pairs
