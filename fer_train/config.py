"""The one typed configuration of a training run, filled from CLI flags and saved in the run folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

OPTIMIZERS = ("adam", "adadelta", "sgd")
# the settings that decide which images are held out for validation: two models agree on them, or one has trained
# on the other's validation faces (checked by --init-from and by the ensemble variant)
SPLIT_KEYS = ("data", "val_fraction", "seed", "limit_train", "limit_val")
SCHEDULES = ("none", "cosine", "onecycle")
DEFAULT_LR = {"adam": 1e-3, "adadelta": 1.0, "sgd": 0.05}

# Named recipes: the settings a run starts from before its own flags (``fer-train --recipe NAME``; ``default`` when none
# is named). A field a recipe leaves out keeps the dataclass default below, which is the study's; the learning rate is
# the optimizer's own default (DEFAULT_LR: Adam 1e-3), so that --optimizer sgd alone gets SGD's.
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


@dataclass
class TrainConfig:
    model: str = "cnn"
    model_kwargs: dict = field(default_factory=dict)
    data: str | None = None  # a CSV, gzip CSV or image folder; None finds FER2013 on its own
    epochs: int = 20
    batch_size: int = 64  # the study's
    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's usual default (DEFAULT_LR)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    schedule: str = "none"
    label_smoothing: float = 0.0
    augment: bool = True  # the study's rotation and shifts
    rotation: float = 40.0  # degrees, either way
    shift: float = 0.2  # fraction of the image size, either way
    flip: bool = False  # horizontal flips (not in the study)
    scale: float = 0.0  # zoom by U(1 - scale, 1 + scale), as a random resized crop (not in the study)
    erase: float = 0.0  # random erasing: the probability that a training image gets a noise rectangle (not in the study)
    val_fraction: float = 0.1  # the study's 1/10
    seed: int = 0  # picks the validation split (and semi's labeled half); also the training randomness unless train_seed is set
    train_seed: int | None = None  # initial weights, data order, augmentation and dropout; None: seed. Another value trains an
    # independent model on the same split (for an ensemble)
    recipe: str | None = None  # the named recipe (RECIPES) the run's flags started from; None: fields set one by one
    fast: bool = False  # fer-train times a few steps of each training path and sets bf16 / channels_last to the fastest
    bf16: bool = False  # bf16 autocast (CPU with AVX512-BF16/AMX, or CUDA)
    channels_last: bool = False  # NHWC activations: 14-19 % faster convolutions on an AVX2 CPU (benchmarks/train_throughput.py)
    device: str = "auto"
    threads: int | None = None  # CPU threads; None: all cores
    limit_train: int | None = None  # use only the first N training images (smoke runs)
    limit_val: int | None = None
    skip_bad: bool = False
    export_name: str | None = None  # also export the best model to exported/<name>.onnx
    export_dir: str = "exported"
    distill_from: str | None = None  # an exported teacher (.onnx, e.g. an ensemble) whose soft predictions the model also learns
    distill_weight: float = 0.7  # w in (1 - w) * CE(labels) + w * T² * KL(teacher || student)
    distill_temperature: float = 2.0
    world_size: int = 1  # processes that trained the run together (torchrun); set by the trainer, not a flag
    init_from: str | None = None  # fine-tune: start from this run's (or checkpoint's, or exported .onnx's) best weights, fresh optimizer and schedule
    # semi-supervised training (--semi, fer_train.semi); ordinary training ignores all of these
    semi: bool = False
    semi_threshold: float = 0.45  # admit an unlabeled image when its top softmax probability is > this (strictly)
    semi_labeled_fraction: float = 0.5  # of every class, stratified and seeded; the rest is treated as unlabeled
    semi_rounds: int = 4
    semi_epochs_per_round: int = 5  # a selection after every round
    semi_first_round_epochs: int | None = None  # round 1, before the first selection; None: epochs_per_round. Every arm
    # trains first_round_epochs + (rounds - 1) × epochs_per_round epochs
    semi_arms: list = field(default_factory=lambda: ["baseline", "self-training"])  # also "per-class", "fixmatch"
    semi_parallel_arms: bool = False  # train the arms at the same time, one process each (threads: --threads each, else cores / arms)
    semi_class_thresholds: str | list = "auto"  # the per-class arm: "auto" (class-balanced) or 7 thresholds
    fixmatch_threshold: float = 0.95  # FixMatch's τ on the weak view
    fixmatch_mu: int = 1  # unlabeled images per labeled image in a step
    fixmatch_weight: float = 1.0  # λ of the consistency loss

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError(f"distill weight is from 0 to 1 and temperature above 0, got {self.distill_weight} and {self.distill_temperature}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale is the zoom range, from 0 to below 1, got {self.scale}")
        if not 0 <= self.erase <= 1:
            raise ValueError(f"erase is a probability, from 0 to 1, got {self.erase}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")

    @classmethod
    def from_recipe(cls, name: str = "default", **fields) -> "TrainConfig":
        """The named recipe (RECIPES), with ``fields`` set over it."""
        if name not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}")
        return cls(**{**RECIPES[name], **fields, "recipe": name})

    @property
    def weights_seed(self) -> int:
        """The seed of the initial weights and of every epoch's order, augmentation and dropout."""
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_same_split(config: TrainConfig, recorded: dict, source: str) -> None:
    """Raise ``ValueError`` unless a model whose training config is ``recorded`` held out the same validation faces as
    ``config`` (settings it does not record are not compared): else its weights, or what it passes on, have seen
    this run's validation images. ``source`` starts the message, e.g. ``--init-from runs/cnn-...``."""
    for key in SPLIT_KEYS:
        if key in recorded and recorded[key] != getattr(config, key):
            raise ValueError(f"{source}: was trained with {key}={recorded[key]!r}, this run has "
                             f"{getattr(config, key)!r}; the validation split must be the same")
