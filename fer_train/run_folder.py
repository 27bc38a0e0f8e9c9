"""A run folder and the files in it, written atomically and read back with messages that say what to do.

A run folder holds ``config.json`` (the run's :class:`~fer_train.config.TrainConfig`), ``history.json`` (one record
per epoch), ``best.pt`` and ``last.pt`` (:mod:`fer_train.checkpoint`), ``curves.png`` and, at the end,
``model.onnx``; a semi-supervised run holds one such folder per arm, ``rounds.json``, ``sessions.json`` and, at the
end, ``semi.json`` (its summary).
Reading any of them that is missing or damaged raises :class:`~fer_runtime.io.DataError` naming the file, what
is wrong with it and what to do, never a traceback.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from fer_runtime.io import DataError

from .config import TrainConfig

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
SEMI_SUMMARY_FILE = "semi.json"


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON through a temporary file, so that an interrupt never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_json(path: Path, expected: type, remedy: str):
    """The JSON in ``path``, which must hold a ``expected`` (dict or list); else a :class:`DataError` that says
    what is wrong and ``remedy`` (what to do)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DataError(path, f"missing; {remedy}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be read ({exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}); {remedy}") from None
    if not text.strip():
        raise DataError(path, f"empty (0 bytes of JSON): it was cut short, e.g. by a full disk; {remedy}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"damaged: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
                              f"it may have been cut short; {remedy}") from None
    if not isinstance(data, expected):
        raise DataError(path, f"damaged: holds a JSON {type(data).__name__}, not the {expected.__name__} it should; {remedy}")
    return data


def new_run_dir(config: TrainConfig, root: str | Path = "runs", prefix: str = "") -> Path:
    """``<root>/<prefix><model>-<time>``, with a counter if that folder exists."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{prefix}{config.model}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def open_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Make the run folder (a resumed run has one) and write the run's config into it."""
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=False)
    write_json(run_dir / CONFIG_FILE, config.to_dict())


def read_config(run_dir: Path) -> TrainConfig:
    """The config a run folder records (``--resume``), or a :class:`DataError` naming what is wrong with it."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise DataError(run_dir, "no such run folder" if not run_dir.exists() else "not a run folder (a file, not a folder)")
    remedy = ("--resume needs the settings the run was started with; restore the file from a backup, or start a new run "
              f"(to go on from this one's weights: fer-train --init-from {run_dir})")
    if not path.exists():
        raise DataError(path, f"missing: {run_dir} is not a run folder, or its config was deleted; {remedy}")
    recorded = read_json(path, dict, remedy)
    try:
        return TrainConfig.from_dict(recorded)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"damaged: not the config of a run ({exc}); {remedy}") from None


def read_history(path: Path) -> list[dict]:
    """An epoch-by-epoch record (``history.json``, ``rounds.json``) written by a run."""
    return _read_records(path, "the checkpoint last.pt beside it holds the same records; delete the file and "
                               "--resume writes it again at the next epoch")


def read_semi_summary(run_dir: Path) -> dict:
    """The summary of a semi-supervised run (``semi.json``), with its table of ``arms`` by name."""
    path = Path(run_dir) / SEMI_SUMMARY_FILE
    remedy = (f"fer-train --resume {run_dir} writes it again from the arms' folders "
              "(a run whose arms have all finished only summarises and exports)")
    summary = read_json(path, dict, remedy)
    if not isinstance(summary.get("arms"), dict):
        raise DataError(path, f"damaged: has no table of arms (\"arms\": {{name: results}}); {remedy}")
    return summary


def read_arm_history(run_dir: Path, arm: str) -> list[dict]:
    """The epochs of the arm ``arm`` of a finished semi-supervised run (its ``history.json``)."""
    path = Path(run_dir) / arm / HISTORY_FILE
    return _read_records(path, f"{SEMI_SUMMARY_FILE} lists the arm {arm}; delete the folder {path.parent} and "
                               f"fer-train --resume {run_dir} trains the arm again from its start (the other arms keep their epochs)")


def _read_records(path: Path, remedy: str) -> list[dict]:
    """A JSON list of records (objects), or a :class:`DataError` naming what is wrong and ``remedy``."""
    records = read_json(path, list, remedy)
    wrong = next((i for i, record in enumerate(records) if not isinstance(record, dict)), None)
    if wrong is not None:
        raise DataError(path, f"damaged: record {wrong + 1} is a JSON {type(records[wrong]).__name__}, not an object; {remedy}")
    return records


def record_session(run_dir: Path, seconds: float, interrupted: bool) -> list[dict]:
    """Append this process's training time to ``sessions.json`` (a resumed run's wall time is their sum). A damaged
    file is started afresh: it only feeds the reported wall time."""
    path = run_dir / "sessions.json"
    try:
        sessions = read_json(path, list, "") if path.exists() else []
    except DataError:
        sessions = []
    sessions.append({"ended": datetime.now().isoformat(timespec="seconds"), "seconds": round(seconds, 1), "interrupted": interrupted})
    write_json(path, sessions)
    return sessions
