"""The study's protocol: train on Training minus a stratified, seeded 1/10 held out for validation;
PublicTest (when the source has it) is the test split. Torch-free, so the TUI sees the same splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import DataError, Source, Split

TRAIN_NAMES = ("training", "train")
VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("publictest", "test")
SPLIT_CHOICES = ("train", "val", "test", "privatetest")


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split | None
    source: Source
    private_test: Split | None = None

    def get(self, name: str) -> Split:
        split = self.get_or_none(name)
        if split is None:
            have = [n for n in SPLIT_CHOICES if self.get_or_none(n) is not None]
            raise DataError(self.source.path, f"has no {name!r} split; available: {', '.join(have)}")
        return split

    def get_or_none(self, name: str) -> Split | None:
        return {"train": self.train, "val": self.val, "test": self.test, "privatetest": self.private_test}.get(name.lower())


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): ``fraction`` of every class held out, chosen by ``seed``.

    Each class keeps at least one example on each side when it has two or more.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        k = int(round(len(members) * fraction))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        held.append(members[:k])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def _find(source: Source, names: tuple[str, ...]) -> Split | None:
    for key, split in source.splits.items():
        if key.lower() in names:
            return split
    return None


def make_splits(source: Source, val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Apply the study's protocol to any source.

    The training pool is the split named Training/train (or the only labelled split); an explicit
    val/validation folder is used as given, otherwise a stratified ``val_fraction`` is held out.
    """
    pool = _find(source, TRAIN_NAMES)
    if pool is None:
        labelled = [s for s in source.splits.values() if s.labelled]
        if len(labelled) != 1:
            raise DataError(source.path, f"cannot tell which split to train on; found {', '.join(source.splits)} (name one 'Training' or 'train')")
        pool = labelled[0]
    if not pool.labelled:
        raise DataError(source.path, "the training split has no labels")
    val = _find(source, VAL_NAMES)
    if val is None:
        keep, held = stratified_holdout(pool.labels, val_fraction, seed)
        train, val = pool.subset(keep), pool.subset(held)
    else:
        train = pool
    test = _find(source, TEST_NAMES)
    private = _find(source, ("privatetest",))
    return Splits(train=train, val=val, test=test, source=source, private_test=private)
