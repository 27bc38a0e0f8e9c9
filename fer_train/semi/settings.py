"""The settings of a semi-supervised run: which arms, the per-class thresholds flag, the run folder."""


from __future__ import annotations

import dataclasses
from pathlib import Path

from fer_runtime.contract import CLASS_NAMES, NUM_CLASSES
from fer_runtime.recipes import threshold_problem

from ..config import TrainConfig
from ..run_folder import new_run_dir

ARMS = ("baseline", "self-training", "per-class", "fixmatch", "noisy-student")  # the order they run in (noisy-student learns from the baseline)
PSEUDO_LABEL_ARMS = ("self-training", "per-class")
OWN_THRESHOLD = "@"  # "self-training@0.9": a pseudo-label arm with its own threshold, beside the run's --threshold
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


def arm_kind(arm: str) -> str:
    """The method of an arm: ``"self-training"`` for ``"self-training@0.9"``."""
    return arm.partition(OWN_THRESHOLD)[0]


def arm_threshold(arm: str, config: TrainConfig) -> float:
    """The threshold an arm admits by: its own (``self-training@0.9``), else the run's ``--threshold``."""
    own = arm.partition(OWN_THRESHOLD)[2]
    return float(own) if own else config.semi_threshold


def _parse_arms(config: TrainConfig, problems: list[str]) -> list[str]:
    """The arms named, each once, in the order they run: ARMS' order, a method's thresholds in rising order. An arm's
    own threshold equal to ``--threshold`` is that method's plain arm."""
    named = [config.semi_arms] if isinstance(config.semi_arms, str) else list(config.semi_arms)
    named = [a.strip() for arm in named for a in arm.split(",") if a.strip()]
    unknown, arms = [], {}
    for name in named:
        kind, sep, own = name.partition(OWN_THRESHOLD)
        if kind not in ARMS or (sep and kind not in PSEUDO_LABEL_ARMS):
            unknown.append(name)
            continue
        if not sep:
            arms[name] = (ARMS.index(kind), config.semi_threshold)
            continue
        try:
            threshold = float(own)
        except ValueError:
            threshold = None
        problem = threshold_problem(threshold, f"--arms {name}: the threshold") if threshold is not None else \
            f"--arms {name}: the threshold after {OWN_THRESHOLD} is not a number"
        if problem:
            problems.append(problem)
            continue
        arm = kind if threshold == config.semi_threshold else f"{kind}{OWN_THRESHOLD}{threshold:g}"
        arms[arm] = (ARMS.index(kind), threshold)
    if unknown or not named:
        problems.append(f"--arms takes a comma-separated list of {', '.join(ARMS)}, and {' or '.join(PSEUDO_LABEL_ARMS)} "
                        f"with a threshold of its own (e.g. self-training{OWN_THRESHOLD}0.9); got {', '.join(unknown) or 'nothing'}")
    return sorted(arms, key=arms.get)


def canonical_arms(config: TrainConfig, named) -> list[str]:
    """The arms ``named`` as a run of ``config`` calls them (``self-training@0.70`` is ``self-training@0.7``, and the
    run's own ``--threshold`` is the plain arm), in the order they run; a bad name raises ValueError."""
    problems = []
    arms = _parse_arms(dataclasses.replace(config, semi_arms=named), problems)
    if problems:
        raise ValueError("; ".join(problems))
    return arms


def semi_config(config: TrainConfig) -> TrainConfig:
    """The config checked, with ``epochs`` = rounds × epochs per round (the budget of every arm)."""
    problems = []
    if threshold_problem(config.semi_threshold):
        problems.append(threshold_problem(config.semi_threshold))
    if not 0.0 < config.semi_labeled_fraction < 1.0:
        problems.append(f"--labeled-fraction must lie strictly between 0 and 1, got {config.semi_labeled_fraction}")
    if config.semi_rounds < 1 or config.semi_epochs_per_round < 1:
        problems.append("--rounds and --epochs-per-round must be at least 1")
    if config.semi_first_round_epochs is not None and config.semi_first_round_epochs < 1:
        problems.append(f"--first-round-epochs must be at least 1, got {config.semi_first_round_epochs}")
    arms = _parse_arms(config, problems)
    if not 0.0 <= config.fixmatch_threshold < 1.0 or config.fixmatch_mu < 1 or config.fixmatch_weight < 0:
        problems.append("--fixmatch-threshold must lie in [0, 1), --fixmatch-mu be at least 1 and --fixmatch-weight at least 0")
    if "noisy-student" in arms and "baseline" not in arms:
        problems.append("--arms noisy-student learns from the baseline arm's predictions: add baseline")
    if problems:
        raise ValueError("; ".join(problems))
    return dataclasses.replace(config, semi=True, semi_arms=arms,
                               semi_class_thresholds=parse_class_thresholds(config.semi_class_thresholds),
                               epochs=budget(config))


def first_round(config: TrainConfig) -> int:
    """Epochs of round 1, the training before the first selection."""
    return config.semi_first_round_epochs or config.semi_epochs_per_round


def budget(config: TrainConfig) -> int:
    """Epochs of every arm: round 1, then ``rounds - 1`` rounds of ``epochs_per_round``."""
    return first_round(config) + (config.semi_rounds - 1) * config.semi_epochs_per_round


def round_of(epoch: int, config: TrainConfig) -> int:
    """The round (from 1) that trains ``epoch`` (from 1)."""
    first = first_round(config)
    return 1 if epoch <= first else 2 + (epoch - first - 1) // config.semi_epochs_per_round


def ends_round(epoch: int, config: TrainConfig) -> bool:
    """Whether ``epoch`` is the last of its round (a selection follows it)."""
    return round_of(epoch + 1, config) > round_of(epoch, config)


def describe_rounds(config: TrainConfig) -> str:
    """E.g. "4 rounds × 5 epochs" or "round 1 of 25 epochs, then 5 rounds × 5 epochs"."""
    first, per = first_round(config), config.semi_epochs_per_round
    if first == per:
        return f"{config.semi_rounds} rounds × {per} epochs"
    rest = config.semi_rounds - 1
    then = f", then {rest} round{'s' if rest != 1 else ''} × {per} epochs" if rest else ""
    return f"round 1 of {first} epochs{then}"


def new_semi_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    return new_run_dir(config, root, prefix="semi-")
