"""Give shipped models the Grad-CAM companion, made from the shipped files alone (no run folder needed).

    .venv/bin/python -m fer_train.explain.remake exported/cnn.onnx exported/fer-best.onnx [--data PATH]

Each model is read back into torch from its own graph (:func:`fer_train.onnx_import.checkpoint_from_onnx`), in
the deployed form whose tensors are the graph's, bit for bit; ``<stem>.gradcam.onnx`` is written and checked
against torch autograd on real validation faces (:func:`~fer_train.explain.gradient_onnx.export_gradcam_graph`);
then the family shares its tensors again (:func:`~fer_train.shared_weights.share_family`), so the new graph
reads ``<stem>.weights`` and stores no weight of its own. A model without conv layers (``dnn``) gets none.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fer_runtime.io import default_data_path

from ..checkpoint import model_from_checkpoint
from ..models import deployable
from ..onnx_import import checkpoint_from_onnx
from ..shared_weights import share_family
from .backward import UnsupportedModelError, conv_layer_infos
from .gradient_onnx import export_gradcam_graph


def deployed_model(path: str | Path) -> torch.nn.Module:
    """The exported model as torch runs it: the deployable form (BatchNorm folded) holding the graph's own tensors."""
    import onnx
    from onnx import numpy_helper

    model = deployable(model_from_checkpoint(checkpoint_from_onnx(path)))
    weights = {t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in onnx.load(str(path)).graph.initializer}
    state = model.state_dict()
    model.load_state_dict({k: weights[k].to(v.dtype) if k in weights else v for k, v in state.items()})
    return model.eval()


def validation_faces(path: str | Path, data: str | None, count: int = 64) -> np.ndarray:
    """The first ``count`` faces of the model's own validation split (its config's seed and fraction)."""
    from ..config import TrainConfig
    from ..data import load_splits

    config = checkpoint_from_onnx(path)["config"]
    source = data or str(default_data_path() or config.get("data"))
    return load_splits(TrainConfig.from_dict({**config, "data": source})).val.images[:count]


def remake_gradcam(path: str | Path, data: str | None = None, log=print) -> Path | None:
    path = Path(path)
    model = deployed_model(path)
    try:
        conv_layer_infos(model)[-1]
    except (IndexError, UnsupportedModelError):
        log(f"{path.name}: no conv layers, no Grad-CAM")
        return None
    check = export_gradcam_graph(model, path, validation_faces(path, data), None)
    log(f"explanation graph {check}")
    share_family(path, log=log)
    return check.path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="shipped model files, e.g. exported/cnn.onnx")
    p.add_argument("--data", help="FER2013 for the check faces (default: $FER_DATA or ../shared/data/fer2013)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    for model in args.models:
        remake_gradcam(model, args.data)


if __name__ == "__main__":
    main()
