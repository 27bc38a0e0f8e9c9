"""The settings of a semi-supervised run: which arms, the per-class thresholds flag, the run folder."""


from __future__ import annotations

import dataclasses
from pathlib import Path

from fer_runtime.contract import CLASS_NAMES, NUM_CLASSES

from ..config import TrainConfig
from ..train import (
    new_run_dir,
)

ARMS = ("baseline", "self-training", "per-class", "fixmatch")  # the order they run in
PSEUDO_LABEL_ARMS = ("self-training", "per-class")
LABELED_SEED_OFFSET = 1  # the labeled part is drawn with seed + 1, apart from the validation hold-out (seed)
SHARED_ROUND = "shared-round-1"


def parse_class_thresholds(value) -> str | list[float]:
    """``"auto"``, or seven thresholds in class order given as a list or as comma-separated text."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"--class-thresholds must be 'auto' or {NUM_CLASSES} comma-separated numbers, got {value!r}") from None
    values = [float(v) for v in value]
    if len(values) != NUM_CLASSES or not all(0.0 <= v < 1.0 for v in values):
        raise ValueError(f"--class-thresholds needs {NUM_CLASSES} numbers in [0, 1), one per class ({', '.join(CLASS_NAMES)}); got {values}")
    return values


def semi_config(config: TrainConfig) -> TrainConfig:
    """The config checked, with ``epochs`` = rounds × epochs per round (the budget of every arm)."""
    problems = []
    if not 0.0 <= config.semi_threshold < 1.0:
        problems.append(f"--threshold must lie in [0, 1), got {config.semi_threshold}")
    if not 0.0 < config.semi_labeled_fraction < 1.0:
        problems.append(f"--labeled-fraction must lie strictly between 0 and 1, got {config.semi_labeled_fraction}")
    if config.semi_rounds < 1 or config.semi_epochs_per_round < 1:
        problems.append("--rounds and --epochs-per-round must be at least 1")
    arms = [config.semi_arms] if isinstance(config.semi_arms, str) else list(config.semi_arms)
    arms = [a.strip() for arm in arms for a in arm.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        problems.append(f"--arms takes a comma-separated list of {', '.join(ARMS)}; got {', '.join(unknown) or 'nothing'}")
    if not 0.0 <= config.fixmatch_threshold < 1.0 or config.fixmatch_mu < 1 or config.fixmatch_weight < 0:
        problems.append("--fixmatch-threshold must lie in [0, 1), --fixmatch-mu be at least 1 and --fixmatch-weight at least 0")
    if problems:
        raise ValueError("; ".join(problems))
    return dataclasses.replace(config, semi=True, semi_arms=[a for a in ARMS if a in arms],
                               semi_class_thresholds=parse_class_thresholds(config.semi_class_thresholds),
                               epochs=config.semi_rounds * config.semi_epochs_per_round)


def new_semi_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    return new_run_dir(config, root, prefix="semi-")
