"""``fer-train`` (training, the default command): its flags, the run they plan, and the run.

The flags fill a :class:`~fer_train.config.TrainConfig` through the recipe (``--recipe``, ``default`` when none is
named: :func:`config_from_flags`); :func:`_plan_run` checks every flag, and for ``--resume`` the run folder's files,
before anything is timed (``--fast``), loaded or started.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fer_runtime.contract import EVENT_ERROR, EVENT_MESSAGE
from fer_runtime.io import DataError
from fer_runtime.recipes import DEFAULT_RECIPE

from .config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig

EXIT_LOST_PEER = 1  # this rank lost the others of its torchrun group (also a --parallel-arms arm that failed: never under torchrun)

SEMI_ONLY_FLAGS = ("--threshold", "--labeled-fraction", "--rounds", "--epochs-per-round", "--first-round-epochs", "--arms", "--class-thresholds",
                   "--fixmatch-threshold", "--fixmatch-mu", "--fixmatch-weight", "--parallel-arms", "--student-mixup")
NOISY_STUDENT_ARMS = ("baseline", "noisy-student")  # --noisy-student: the teacher, then its student


def _recipe_default(field: str) -> str:
    """Help text: a flag's value in each recipe, e.g. "default recipe: 40; --recipe study: 20"."""
    def show(value):  # bools before numbers: True == 1 and False == 0
        if isinstance(value, bool):
            return "on" if value else "off"
        if value is None:
            return "as --epochs-per-round"
        return f"{value:g}" if isinstance(value, float) else value
    values = {name: RECIPES[name].get(field, getattr(TrainConfig, field)) for name in RECIPES}
    return "; ".join(f"{'default recipe' if name == 'default' else f'--recipe {name}'}: {show(v)}" for name, v in values.items())


def config_from_flags(args: argparse.Namespace) -> TrainConfig:
    """The run's config: ``--recipe`` (RECIPES; ``default`` when none is named) with the flags given over it (a flag
    left unset is None, or the dataclass default for the flags no recipe sets). ``--bf16`` or ``--channels-last``
    given by hand turn the recipe's ``--fast`` off."""
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k != "recipe" and v is not None}
    if args.widths:
        fields["model_kwargs"] = {"widths": args.widths}
    if args.fast is None and (args.bf16 or args.channels_last):  # the path set by hand is not timed away
        fields["fast"] = False
    return TrainConfig.from_recipe(args.recipe, **fields)


def _widths(text: str) -> list[int]:
    """``--widths 48,96,192,384``: whole numbers of at least 1."""
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths are whole numbers separated by commas, e.g. 48,96,192,384; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be at least 1, got {text!r}")
    return widths


def _train_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="fer-train", description="Train a facial-expression classifier on FER2013 (or any supported data).",
                                epilog="Other commands: fer-train evaluate MODEL | export RUN --name NAME | data [PATH] | explain RUN | optimize MODEL.onnx | report. "
                                       "Add --help after one for its options. "
                                       "On several processes or machines: torchrun --nproc-per-node N -m fer_train ... (docs/distributed.md).")
    p.add_argument("--model", default=d.model, help="registered model name (default: %(default)s)")
    p.add_argument("--data", default=None, help="FER2013 CSV (.csv or .csv.gz), course-format CSV or image folder; default: $FER_DATA or ../shared/data/fer2013")
    p.add_argument("--recipe", choices=tuple(RECIPES), default=DEFAULT_RECIPE,
                   help="the settings every flag below starts from. default: one-cycle Adam with flips, rotation ±15°, shifts 0.1, "
                        "label smoothing 0.1 and erasing, 40 epochs, on the fastest training path (what trained the shipped cnn); "
                        "study: the study's recipe (Adam 1e-3, batch 64, rotation ±40°, shifts 0.2, no schedule, 20 epochs). "
                        "Flags given override it (default: %(default)s)")
    _add_training_flags(p)
    _add_run_flags(p)
    _add_semi_flags(p)
    return p


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    """How the model trains: the optimizer, schedule, augmentation, seeds and training path."""
    d, r = TrainConfig(), _recipe_default
    p.add_argument("--epochs", type=int, default=None, help=f"({r('epochs')})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="images per optimizer step (default: %(default)s); under torchrun the global batch: each of the N "
                        "processes takes batch/N, so it must divide by N")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"({r('optimizer')})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: adam 1e-3, adadelta 1.0, sgd 0.05)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help=f"learning-rate schedule, stepped per batch ({r('schedule')})")
    p.add_argument("--label-smoothing", type=float, default=None, help=f"({r('label_smoothing')})")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn off the study's rotation and shifts")
    p.add_argument("--rotation", type=float, default=None, help=f"max rotation in degrees ({r('rotation')})")
    p.add_argument("--shift", type=float, default=None, help=f"max shift as a fraction of the size ({r('shift')})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help=f"random horizontal flips ({r('flip')})")
    p.add_argument("--scale", type=float, default=d.scale, metavar="S",
                   help="random zoom by a factor from 1-S to 1+S, like a random resized crop (default: %(default)s, off)")
    p.add_argument("--erase", type=float, default=None, metavar="P",
                   help=f"random erasing: each training image gets a noise rectangle (2-25 %% of it) with probability P ({r('erase')})")
    p.add_argument("--crop", type=int, default=None, metavar="PIXELS",
                   help="train on random crops of this side (e.g. 40) of each augmented face; the model sees the centre crop at test (fernet)")
    p.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA",
                   help="mixup: mix every batch with a shuffled copy of itself by λ ~ Beta(α, α), e.g. 0.4 (default: off)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="evaluate, keep and export a moving average of the weights with this decay per step, e.g. 0.999 (default: off)")
    p.add_argument("--widths", type=_widths, default=None, metavar="W1,W2,...",
                   help="fernet's convolution widths per stage (default 32,64,128,256; e.g. 48,96,192,384)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the validation split, and of the training unless --train-seed")
    p.add_argument("--train-seed", type=int, default=None, help="seed of the initial weights, data order, augmentation and dropout "
                   "(default: --seed); another value trains an independent model on the same validation split")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with AVX512-BF16/AMX, or CUDA)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout for convolutions (faster on most CPUs)")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None, help="time a few training steps of each path (channels-last; bf16 with and without "
                   "it where the CPU has bf16 instructions, or on CUDA) and train on the fastest, recorded in config.json "
                   f"(docs/training.md#training-speed) ({r('fast')})")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Where and on what it runs, what it writes, what it starts from."""
    d = TrainConfig()
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores; under torchrun, per process: the cores shared out)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (quick tries)")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation and test images")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed rows (reported) instead of stopping at the first")
    p.add_argument("--export", dest="export_name", default=None, metavar="NAME", help="also export the best model to exported/NAME.onnx")
    p.add_argument("--export-dir", default=d.export_dir)
    p.add_argument("--no-export", action="store_true", help="do not export model.onnx at the end")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<model>-<time>)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--init-from", metavar="RUN|ONNX", default=None,
                   help="fine-tune: start from this run's best weights, or from an exported .onnx of the same model "
                        "(e.g. exported/cnn.onnx), with a fresh optimizer and schedule")
    p.add_argument("--distill-from", metavar="ONNX", default=None,
                   help="knowledge distillation: also learn the soft predictions of this exported teacher (e.g. exported/fer-best.tta.onnx), "
                        "computed once on the training faces")
    p.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="share of the teacher's term in the loss, 0 to 1 (default: %(default)s)")
    p.add_argument("--distill-temperature", type=float, default=d.distill_temperature, help="softmax temperature of both sides (default: %(default)s)")
    p.add_argument("--resume", metavar="RUN", default=None, help="continue the run in this folder from its last completed epoch")
    p.add_argument("--progress", choices=("auto", "rich", "plain", "json"), default="auto",
                   help="json: one JSON object per line on stdout, for programs (the TUI)")


def _add_semi_flags(p: argparse.ArgumentParser) -> None:
    d, r = TrainConfig(), _recipe_default
    semi = p.add_argument_group("semi-supervised training (--semi)", "hide the labels of part of the training set, train by "
                                "self-training and compare with the labeled part alone; every arm trains first-round-epochs + (rounds - 1) × epochs-per-round epochs")
    semi.add_argument("--semi", action="store_true", help="semi-supervised run (folder runs/semi-<model>-<time>)")
    semi.add_argument("--noisy-student", action="store_true",
                      help="the semi-supervised method that gains: --semi --arms baseline,noisy-student (the labeled part alone, the "
                           "teacher; then a student of its soft labels for every unlabeled image, under noise), compared on the same images")
    semi.add_argument("--threshold", dest="semi_threshold", type=float, default=d.semi_threshold,
                      help="admit an unlabeled image when its top softmax probability is strictly greater than this (default: %(default)s)")
    semi.add_argument("--labeled-fraction", dest="semi_labeled_fraction", type=float, default=d.semi_labeled_fraction,
                      help="share of every class that keeps its label, stratified and seeded (default: %(default)s)")
    semi.add_argument("--rounds", dest="semi_rounds", type=int, default=None, help=f"self-training rounds, the first included ({r('semi_rounds')})")
    semi.add_argument("--first-round-epochs", dest="semi_first_round_epochs", type=int, default=None,
                      help=f"epochs before the first selection, so that the model is confident when pseudo-labels start ({r('semi_first_round_epochs')})")
    semi.add_argument("--epochs-per-round", dest="semi_epochs_per_round", type=int, default=None,
                      help=f"epochs between two selections after the first ({r('semi_epochs_per_round')})")
    semi.add_argument("--arms", dest="semi_arms", type=lambda s: [a.strip() for a in s.split(",") if a.strip()], default=",".join(d.semi_arms),
                      help="comma-separated: baseline, self-training, per-class, fixmatch, noisy-student (the baseline's soft labels "
                           "under noise; trains after the baseline); self-training@0.9 (or per-class@T) is an arm with a threshold of "
                           "its own, so one run sweeps thresholds against one baseline (default: %(default)s)")
    semi.add_argument("--class-thresholds", dest="semi_class_thresholds", default=d.semi_class_thresholds,
                      help="per-class arm: 'auto' (every predicted class admits the share the global threshold admits overall) "
                           "or 7 comma-separated thresholds in class order (default: %(default)s)")
    semi.add_argument("--fixmatch-threshold", type=float, default=d.fixmatch_threshold, help="FixMatch's confidence threshold τ (default: %(default)s)")
    semi.add_argument("--fixmatch-mu", type=int, default=d.fixmatch_mu, help="unlabeled images per labeled image in a step (default: %(default)s)")
    semi.add_argument("--parallel-arms", dest="semi_parallel_arms", action="store_true",
                      help="train the arms at the same time, one process each with --threads threads (default: the cores shared out); "
                           "the same weights as one after the other, in about 1/arms of the wall time on enough cores")
    semi.add_argument("--fixmatch-weight", type=float, default=d.fixmatch_weight, help="weight λ of the consistency loss (default: %(default)s)")
    semi.add_argument("--student-mixup", type=float, default=d.student_mixup, metavar="ALPHA",
                      help="the noisy-student arm's mixup α, part of its noise (0: off; --mixup is the other arms') (default: %(default)s)")


def _given(argv: list[str], flags) -> list[str]:
    """The ``flags`` that appear in ``argv`` (as ``--flag value`` or ``--flag=value``), in command-line order."""
    return [a.split("=")[0] for a in argv if a.split("=")[0] in flags]


def train_main(argv: list[str]) -> int:
    from .progress import Reporter

    args = _train_parser().parse_args(argv)
    reporter = Reporter(args.progress)
    if args.data is not None and not Path(args.data).exists():  # before torch's import, which takes seconds
        reporter.emit(EVENT_ERROR, message=str(DataError(args.data, "no such file or folder")))
        return 2
    from . import distributed

    with distributed.session():  # under torchrun: join the group (outside it, nothing)
        code = _train_in_group(args, argv, distributed.rank_reporter(reporter))  # rank 0 reports for the group
    distributed.end_torchrun_process(code, lost_peer=code == EXIT_LOST_PEER)  # (under torchrun, 1 is only that)
    return code


def _train_in_group(args: argparse.Namespace, argv: list[str], reporter) -> int:
    """Plan, check and train the run (every rank of a torchrun group calls this); the exit code."""
    from . import distributed
    from .semi import ArmFailed

    try:
        config, run_dir, resume = distributed.from_rank0(lambda: _plan_run(args, argv))
        if config.fast and not resume:  # a resumed run keeps the path its config.json records
            config = _fastest_path(config, reporter)
        if config.semi:
            from .semi import train_semi

            result = train_semi(config, run_dir, reporter, resume=resume, export=not args.no_export)
        else:
            from .train import train

            result = train(config, run_dir, reporter, resume=resume, export=not args.no_export)
    except (DataError, ValueError, FileNotFoundError) as exc:
        reporter.emit(EVENT_ERROR, message=str(exc))
        return 2
    except distributed.FailedOnRank0:  # rank 0 reports it
        return 2
    except ArmFailed as exc:  # every other arm finished or saved its epoch; the message says how to go on
        reporter.emit(EVENT_ERROR, message=str(exc))
        return 1
    except RuntimeError as exc:
        if not distributed.lost_peer(exc):
            raise
        # another rank died or stopped answering; torchrun names it in its report
        who = "rank 0: " if distributed.world().is_main else ""  # the other ranks' reporters name theirs
        reporter.emit(EVENT_ERROR, message=f"{who}lost the other processes of the group "
                                           f"({exc.__class__.__name__}: {str(exc).strip()}); torchrun's report names the rank that failed first")
        return EXIT_LOST_PEER
    return 130 if result.interrupted else 0


def _fastest_path(config, reporter):
    """``--fast``: ``config`` on the training path that a few timed steps find fastest here (fer_train.speed). Under
    torchrun every rank times its steps together and rank 0's measurement decides for all."""
    from . import distributed
    from .devices import run_device
    from .speed import candidate_paths, describe, fastest_path

    device = run_device(config.device, config.threads)
    paths = distributed.from_rank0(lambda: candidate_paths(device))  # the same on every rank, whatever its CPU
    chosen, rates = fastest_path(config, device, paths)
    chosen, rates = distributed.from_rank0(lambda: (chosen, rates))
    reporter.emit(EVENT_MESSAGE, text=f"--fast: {describe(chosen.bf16, chosen.channels_last)} (training images/s on this machine: "
                                      + ", ".join(f"{path} {rate:,.0f}" for path, rate in rates.items()) + ")")
    return chosen


def _plan_run(args: argparse.Namespace, argv: list[str]) -> tuple[TrainConfig, Path, bool]:
    """The run's config, folder and whether it resumes, from the flags (or the folder's ``config.json`` for
    ``--resume``), every flag and the files a resume needs checked: nothing is timed, loaded or started before.
    Under torchrun rank 0 alone decides (it names the folder) and sends it to the others."""
    from . import distributed

    config, run_dir, resume = _plan_resume(args, argv) if args.resume else _plan_new(args, argv)
    distributed.check_global_batch(config.batch_size)
    if config.semi:
        from .semi import semi_config

        semi_config(config)  # its flags' values, now rather than after --fast's timing
    return config, run_dir, resume


def _plan_resume(args: argparse.Namespace, argv: list[str]) -> tuple[TrainConfig, Path, bool]:
    from . import distributed
    from .checkpoint import load_checkpoint, load_resume_checkpoint
    from .run_folder import read_config

    run_dir = Path(args.resume)
    if args.noisy_student:
        raise ValueError(f"--resume {run_dir} continues the run's own arms; to add the noisy student to a --semi run: "
                         f"--resume {run_dir} --arms <its arms>,noisy-student")
    config = read_config(run_dir)
    epochs_given = bool(_given(argv, ("--epochs",)))
    if args.threads is not None:  # the machine may differ from the one the run started on
        config.threads = args.threads
    if not config.semi:
        if epochs_given:  # extend the run (or end it sooner)
            if args.epochs > config.epochs and config.schedule != "none":
                raise ValueError(f"--resume {run_dir} --epochs {args.epochs}: the run has {config.epochs} epochs and its {config.schedule} "
                                 f"schedule was sized for them; to train on, start from its best weights with a new schedule: "
                                 f"fer-train --init-from {run_dir} --epochs N")
            config = dataclasses.replace(config, epochs=args.epochs)
        load_resume_checkpoint(run_dir)  # there, and readable: said now, not after the data is loaded
        return config, run_dir, True
    # a semi-supervised run resumes at the start of the epoch in progress of the arm in progress
    if distributed.world().distributed:
        raise ValueError(f"{run_dir} is a --semi run: not for torchrun; resume it as one process (python -m fer_train --resume ...)")
    if epochs_given:
        raise ValueError("a --semi run's budget is its rounds (--first-round-epochs, --rounds, --epochs-per-round); --epochs does not apply")
    if _given(argv, ("--arms",)):  # more arms for a run that has some: they start from its shared first round
        from .semi import canonical_arms

        named = canonical_arms(config, args.semi_arms)  # as the run names them, whatever the spelling of a threshold
        kept = [arm for arm in config.semi_arms if arm not in named]
        if kept:
            raise ValueError(f"--resume {run_dir} --arms: arms can be added, not dropped; the run has "
                             f"{', '.join(config.semi_arms)}, so also name {', '.join(kept)}")
        config.semi_arms = named
    for saved in sorted(run_dir.glob("*/last.pt")):  # every arm's, and the shared first round's
        load_checkpoint(saved, remedy=f"delete the folder {saved.parent} and --resume {run_dir} trains it again from its start "
                                      "(the other arms keep their epochs)")
    return config, run_dir, True


def _plan_new(args: argparse.Namespace, argv: list[str]) -> tuple[TrainConfig, Path, bool]:
    from . import distributed
    from .run_folder import new_run_dir

    if args.noisy_student:
        if _given(argv, ("--arms",)):
            raise ValueError("--noisy-student trains the arms baseline,noisy-student; for other arms beside it: --semi --arms baseline,noisy-student,...")
        args.semi, args.semi_arms = True, list(NOISY_STUDENT_ARMS)
    config = config_from_flags(args)
    stray = _given(argv, SEMI_ONLY_FLAGS)
    if stray and not config.semi:
        raise ValueError(f"{', '.join(stray)}: only for semi-supervised runs; add --semi")
    if config.semi and distributed.world().distributed:
        raise ValueError("--semi: not under torchrun (its arms are separate models; --parallel-arms trains them at the same time); "
                         "run it as one process: python -m fer_train --semi ...")
    if config.semi and config.distill_from:
        raise ValueError("--distill-from: for ordinary training, not --semi runs")
    loose = _given(argv, ("--distill-weight", "--distill-temperature"))
    if loose and not config.distill_from:
        raise ValueError(f"{', '.join(loose)}: only with --distill-from TEACHER.onnx")
    if config.semi:
        from .semi import new_semi_run_dir

        if _given(argv, ("--epochs",)):
            raise ValueError("with --semi every arm trains --first-round-epochs + (--rounds - 1) × --epochs-per-round epochs; drop --epochs")
        return config, Path(args.run_dir) if args.run_dir else new_semi_run_dir(config, args.runs_root), False
    return config, Path(args.run_dir) if args.run_dir else new_run_dir(config, args.runs_root), False
