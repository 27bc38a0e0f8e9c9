"""What ``fer-train`` trains when given no flags, and the values its flags accept: the one source of training defaults.

``fer_train.config.TrainConfig()`` is the ``default`` recipe (what ``fer-train`` with no flags runs) and the TUI's
Train form starts from the same values; both live here because the TUI must not import ``fer_train`` (it would
load torch). Named recipes are what ``fer-train --recipe NAME`` starts from before its own flags.
"""

from __future__ import annotations

OPTIMIZERS = ("adam", "adadelta", "sgd")
SCHEDULES = ("none", "cosine", "onecycle")
DEFAULT_LR = {"adam": 1e-3, "adadelta": 1.0, "sgd": 0.05}  # a run's learning rate when none is given: its optimizer's

DEFAULT_RECIPE = "default"
RECIPES = {
    # what trained the shipped `cnn` (64.9 % on validation after 40 epochs from scratch, REPORT.md): one-cycle Adam,
    # milder augmentation with flips, label smoothing and erasing; the fastest training path found by timing (--fast).
    # --semi: round 1 is 25 epochs, so that the model is confident before the first selection, then 5 rounds of 5
    "default": dict(epochs=40, optimizer="adam", schedule="onecycle", label_smoothing=0.1, rotation=15.0, shift=0.1,
                    flip=True, erase=0.5, fast=True, semi_first_round_epochs=25, semi_rounds=6, semi_epochs_per_round=5),
    # the study's: Adam 1e-3, batch 64, rotation ±40°, shifts 0.2, no schedule; --semi: 4 rounds × 5 epochs
    "study": dict(epochs=20, optimizer="adam", schedule="none", label_smoothing=0.0, rotation=40.0, shift=0.2,
                  flip=False, erase=0.0, fast=False, semi_first_round_epochs=None, semi_rounds=4, semi_epochs_per_round=5),
}
DEFAULTS = RECIPES[DEFAULT_RECIPE]

SEMI_THRESHOLD = 0.45  # the study's: admit an unlabeled face when its top probability is strictly greater (every recipe)
MAX_EPOCHS = 10_000  # what the TUI's form accepts


def threshold_problem(value: float, flag: str = "--threshold") -> str | None:
    """Why ``value`` cannot be a confidence threshold (it must lie in [0, 1): 0 admits every face), or None."""
    if not 0.0 <= value < 1.0:
        return f"{flag} must lie in [0, 1), got {value}"
    return None
