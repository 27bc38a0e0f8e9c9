"""The data of a semi-supervised run and the selection rule: which unlabeled faces join a round, with which label.

The hidden labels live only in :class:`PseudoLabelAudit`, which grades a selection after it is fixed."""


from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fer_runtime.contract import CLASS_NAMES, NUM_CLASSES
from fer_runtime.io import DataError
from fer_runtime.metrics import softmax
from fer_runtime.splits import Splits, stratified_holdout

from ..config import TrainConfig
from ..devices import as_tensors
from ..epoch import predict_logits
from .settings import LABELED_SEED_OFFSET, arm_kind, arm_threshold


@dataclass
class SemiData:
    """What the training loop sees."""

    labeled_x: torch.Tensor  # uint8 (L, 1, 48, 48)
    labeled_y: torch.Tensor  # int64 (L,)
    unlabeled_x: torch.Tensor  # uint8 (U, 1, 48, 48): images only; their labels live in the audit
    val_x: torch.Tensor
    val_y: torch.Tensor


@dataclass
class Selection:
    """The unlabeled images admitted in one round, with their pseudo-labels."""

    index: np.ndarray  # int64 positions in the unlabeled pool, ascending
    label: np.ndarray  # int64 predicted class of each
    thresholds: list[float] = field(default_factory=list)  # the bar each predicted class had to clear

    @classmethod
    def empty(cls) -> "Selection":
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), [])

    def __len__(self) -> int:
        return len(self.index)

    def per_class(self) -> dict[str, int]:
        return dict(zip(CLASS_NAMES, np.bincount(self.label, minlength=NUM_CLASSES).tolist()))


class PseudoLabelAudit:
    """The true labels of the "unlabeled" images, known only because this is an experiment.

    It grades a selection after the selection is fixed; its answers go to the log and the run folder,
    never back into training.
    """

    def __init__(self, hidden_labels: np.ndarray):
        self._labels = np.asarray(hidden_labels, np.int64).copy()

    def __len__(self) -> int:
        return len(self._labels)

    def class_counts(self) -> dict[str, int]:
        return dict(zip(CLASS_NAMES, np.bincount(self._labels, minlength=NUM_CLASSES).tolist()))

    def grade(self, selection: Selection) -> dict:
        """Precision of the pseudo-labels, overall and per pseudo-label class (None where none was admitted)."""
        correct = self._labels[selection.index] == selection.label
        per_class = {}
        for c, name in enumerate(CLASS_NAMES):
            chosen = selection.label == c
            per_class[name] = round(float(correct[chosen].mean()), 4) if chosen.any() else None
        return {"pseudo_precision": round(float(correct.mean()), 4) if len(correct) else None,
                "pseudo_precision_per_class": per_class,
                "admitted_true_per_class": dict(zip(CLASS_NAMES, np.bincount(self._labels[selection.index], minlength=NUM_CLASSES).tolist()))}


def split_labeled(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (labeled, unlabeled): ``fraction`` of every class keeps its label, chosen by ``seed``."""
    unlabeled, labeled = stratified_holdout(labels, fraction, seed)
    return labeled, unlabeled


def prepare(splits: Splits, config: TrainConfig, device: torch.device) -> tuple[SemiData, PseudoLabelAudit]:
    """Hide the labels of all but ``semi_labeled_fraction`` of the training images."""
    train = splits.train
    labeled, unlabeled = split_labeled(train.labels, config.semi_labeled_fraction, config.seed + LABELED_SEED_OFFSET)
    if len(unlabeled) == 0:
        raise DataError(splits.source.path, f"too few training images ({len(train)}) to hide any labels")
    labeled_x, labeled_y = as_tensors(train.subset(labeled), device)
    unlabeled_x = torch.from_numpy(np.ascontiguousarray(train.images[unlabeled])).unsqueeze(1).to(device)
    val_x, val_y = as_tensors(splits.val, device)
    return SemiData(labeled_x, labeled_y, unlabeled_x, val_x, val_y), PseudoLabelAudit(train.labels[unlabeled])


# ----------------------------------------------------------------------------------------------------
# the selection rule


def select_confident(probs: np.ndarray, thresholds) -> Selection:
    """Admit image i when its top probability is strictly greater than the threshold of its predicted class.

    ``thresholds`` is one number or one per class; the pseudo-label is the arg-max (the first on ties).
    """
    probs = np.asarray(probs)
    bar = np.broadcast_to(np.asarray(thresholds, np.float64), (probs.shape[1],))
    label = probs.argmax(axis=1)
    index = np.flatnonzero(probs.max(axis=1) > bar[label])
    return Selection(index.astype(np.int64), label[index].astype(np.int64), [float(b) for b in bar])


def class_balanced_thresholds(probs: np.ndarray, threshold: float) -> list[float]:
    """One threshold per predicted class so that every class admits the same share of the images predicted
    as it: the share that ``threshold`` admits overall (CBST, Zou et al., ECCV 2018). Rare classes are no
    longer crowded out by confident common ones; the total stays about what the global rule admits."""
    confidence, label = probs.max(axis=1), probs.argmax(axis=1)
    rate = float((confidence > threshold).mean()) if len(probs) else 0.0
    out = []
    for c in range(probs.shape[1]):
        ranked = np.sort(confidence[label == c])[::-1]
        k = int(round(rate * len(ranked)))
        out.append(float(ranked[k]) if k < len(ranked) else 0.0)  # the best k clear it (fewer on exact ties)
    return out


def thresholds_for(arm: str, probs: np.ndarray, config: TrainConfig) -> list[float]:
    """One threshold per predicted class: the arm's own (``self-training@0.9``) or the run's; ``per-class`` balances
    the classes at the share its threshold admits overall, unless ``--class-thresholds`` names them."""
    kind, threshold = arm_kind(arm), arm_threshold(arm, config)
    if kind == "per-class":
        given = config.semi_class_thresholds
        return class_balanced_thresholds(probs, threshold) if given == "auto" else list(given)
    bar = config.fixmatch_threshold if kind == "fixmatch" else threshold
    return [bar] * probs.shape[1]


def unlabeled_probabilities(model: torch.nn.Module, images: torch.Tensor, config: TrainConfig) -> np.ndarray:
    """Softmax (U, 7) in float64 of the model in eval mode on the unaugmented images."""
    return softmax(predict_logits(model, images, bf16=config.bf16).cpu().numpy().astype(np.float64))


def training_set(data: SemiData, selection: Selection) -> tuple[torch.Tensor, torch.Tensor]:
    """The labeled images with their labels, then the admitted unlabeled images with their pseudo-labels."""
    if not len(selection):
        return data.labeled_x, data.labeled_y
    device = data.labeled_x.device
    index = torch.from_numpy(selection.index).to(device)
    return (torch.cat([data.labeled_x, data.unlabeled_x[index]]),
            torch.cat([data.labeled_y, torch.from_numpy(selection.label).to(device)]))
