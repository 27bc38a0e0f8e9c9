"""The one typed configuration of a training run, filled from CLI flags and saved in the run folder.

``TrainConfig()`` is what ``fer-train`` runs without flags: the ``default`` recipe (:mod:`fer_runtime.recipes`, the one
table of defaults, which the TUI reads too). ``TrainConfig.from_recipe("study")`` is the study's; fields given
override either, as flags do on the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fer_runtime.contract import IMAGE_SIZE
from fer_runtime.recipes import DEFAULT_LR, DEFAULT_RECIPE, DEFAULTS, OPTIMIZERS, RECIPES, SCHEDULES, SEMI_THRESHOLD

# the settings that decide which images are held out for validation: two models agree on them, or one has trained
# on the other's validation faces (checked by --init-from and by the ensemble variant)
SPLIT_KEYS = ("data", "val_fraction", "seed", "limit_train", "limit_val")

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "RECIPES", "SCHEDULES", "SPLIT_KEYS", "TrainConfig", "check_same_split"]


@dataclass
class TrainConfig:
    model: str = "cnn"
    model_kwargs: dict = field(default_factory=dict)
    data: str | None = None  # a CSV, gzip CSV or image folder; None finds FER2013 on its own
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = 64  # the study's
    optimizer: str = DEFAULTS["optimizer"]
    lr: float | None = None  # None: the optimizer's usual default (DEFAULT_LR)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    schedule: str = DEFAULTS["schedule"]
    label_smoothing: float = DEFAULTS["label_smoothing"]
    augment: bool = True  # the study's rotation and shifts
    rotation: float = DEFAULTS["rotation"]  # degrees, either way
    shift: float = DEFAULTS["shift"]  # fraction of the image size, either way
    flip: bool = DEFAULTS["flip"]  # horizontal flips (not in the study)
    scale: float = 0.0  # zoom by U(1 - scale, 1 + scale), as a random resized crop (not in the study)
    erase: float = DEFAULTS["erase"]  # random erasing: the probability that a training image gets a noise rectangle (not in the study)
    crop: int | None = None  # train on random crops of this side (pixels) of each augmented face; the model sees the centre crop at
    # test (its input_size, set here). Not in the study
    mixup: float = 0.0  # mixup's α: every batch is mixed with a shuffled copy of itself by λ ~ Beta(α, α), the loss likewise; 0: off
    ema: float = 0.0  # decay of an exponential moving average of the weights (per step), which is evaluated, kept in best.pt and
    # exported; the raw weights' validation accuracy is recorded beside it. 0: off
    val_fraction: float = 0.1  # the study's 1/10
    seed: int = 0  # picks the validation split (and semi's labeled half); also the training randomness unless train_seed is set
    train_seed: int | None = None  # initial weights, data order, augmentation and dropout; None: seed. Another value trains an
    # independent model on the same split (for an ensemble)
    recipe: str | None = DEFAULT_RECIPE  # the named recipe (RECIPES) the run's fields started from
    fast: bool = DEFAULTS["fast"]  # fer-train times a few steps of each training path and sets bf16 / channels_last to the fastest
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
    semi_threshold: float = SEMI_THRESHOLD  # admit an unlabeled image when its top softmax probability is > this (strictly)
    semi_labeled_fraction: float = 0.5  # of every class, stratified and seeded; the rest is treated as unlabeled
    semi_rounds: int = DEFAULTS["semi_rounds"]
    semi_epochs_per_round: int = DEFAULTS["semi_epochs_per_round"]  # a selection after every round
    semi_first_round_epochs: int | None = DEFAULTS["semi_first_round_epochs"]  # round 1, before the first selection; None: epochs_per_round. Every arm
    # trains first_round_epochs + (rounds - 1) × epochs_per_round epochs
    semi_arms: list = field(default_factory=lambda: ["baseline", "self-training"])  # also "per-class", "fixmatch"
    semi_parallel_arms: bool = False  # train the arms at the same time, one process each (threads: --threads each, else cores / arms)
    semi_class_thresholds: str | list = "auto"  # the per-class arm: "auto" (class-balanced) or 7 thresholds
    fixmatch_threshold: float = 0.95  # FixMatch's τ on the weak view
    fixmatch_mu: int = 1  # unlabeled images per labeled image in a step
    fixmatch_weight: float = 1.0  # λ of the consistency loss
    student_mixup: float = 0.2  # the noisy-student arm's own mixup α (its noise, with the augmentation); --mixup is the other arms'

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a whole number of at least 1, got {value!r}")
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError(f"distill weight is from 0 to 1 and temperature above 0, got {self.distill_weight} and {self.distill_temperature}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale is the zoom range, from 0 to below 1, got {self.scale}")
        if not 0 <= self.erase <= 1:
            raise ValueError(f"erase is a probability, from 0 to 1, got {self.erase}")
        if self.crop is not None:
            if not isinstance(self.crop, int) or not 8 <= self.crop <= IMAGE_SIZE:
                raise ValueError(f"--crop is the side of the training crops, a whole number from 8 to {IMAGE_SIZE}, got {self.crop!r}")
            self.model_kwargs = {**self.model_kwargs, "input_size": self.crop}  # the model centre-crops its 48-pixel input to this
        if self.mixup < 0:
            raise ValueError(f"--mixup is the α of mixup's Beta(α, α), 0 (off) or above, got {self.mixup}")
        if self.student_mixup < 0:
            raise ValueError(f"--student-mixup is the α of the student's mixup, 0 (off) or above, got {self.student_mixup}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema is the moving average's decay per step, from 0 (off) to below 1 (e.g. 0.999), got {self.ema}")
        if self.mixup > 0 and self.distill_from:
            raise ValueError("--mixup and --distill-from: one or the other (the teacher's predictions are of the unmixed faces)")
        if self.ema > 0 and self.semi:
            raise ValueError("--ema: for ordinary training, not --semi runs")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")

    @classmethod
    def from_recipe(cls, name: str = DEFAULT_RECIPE, **fields) -> "TrainConfig":
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
