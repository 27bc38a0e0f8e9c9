"""Knowledge distillation (``--distill-from``): train on an exported teacher's soft predictions as well as the labels.

The teacher is any exported model, usually an ensemble (``fer-best.ensemble.onnx``: several runs, each on the
face and its mirror image), which is more accurate than any one model but costs many times more to run. The
student learns its full probability vector, which says which wrong classes a face resembles, not only the
right one (Hinton, Vinyals & Dean, 2015).

The teacher runs once, with onnxruntime, on the un-augmented training images; its log-probabilities are kept
in the run folder (``teacher.npy``, for ``--resume``) and in the user's cache, keyed on the hashes of the teacher
file and of the faces, so that the next run with the same teacher starts at once. The student then
sees the augmented image and the teacher's targets for the original: the augmentation is mild (small
rotations and shifts, flips the teacher is symmetric to, erasing), and running the teacher on every augmented
batch would cost, for the seven-run ensemble, fourteen forward passes per image.

The loss of a batch is ``(1 - w) * CE(labels) + w * T² * KL(teacher_T || student_T)`` where ``_T`` is the
softmax at temperature ``T``; the ``T²`` keeps the gradient scale independent of ``T``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fer_runtime.contract import CLASS_NAMES, EVENT_MESSAGE

from .config import TrainConfig, check_same_split
from .optimize.graph import model_sha256

TEACHER_FILE = "teacher.npy"
TEACHER_RECORD = "teacher.json"


def teacher_log_probs(config: TrainConfig, images: np.ndarray, labels: np.ndarray, run_dir: Path, reporter=None) -> np.ndarray:
    """Log-probabilities (N, 7) of the teacher ``config.distill_from`` on ``images`` (uint8, (N, 1|, 48, 48)),
    computed once: they are kept in ``run_dir`` (for ``--resume``) and in the user's cache, keyed on the teacher
    file and the images, so that another run distilling the same teacher on the same faces starts at once."""
    from fer_runtime.classifier import load_classifier
    from fer_runtime.contract import META_CONFIG
    from fer_runtime.io import cache_root

    path = Path(config.distill_from)
    classifier = load_classifier(path, threads=config.threads)  # ModelError names the file and the problem
    # a teacher that saw this run's validation faces would pass what it learned from them on to the student
    check_same_split(config, classifier.metadata.get(META_CONFIG) or {}, f"--distill-from {path}")
    digest = model_sha256(path)[:16]
    faces = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    cache, record = run_dir / TEACHER_FILE, run_dir / TEACHER_RECORD
    shared = cache_root() / "teachers" / f"{digest}-{faces}.npy"
    in_run = cache.exists() and _recorded(record, digest, faces)  # this run's own copy (--resume), else the user's
    source = cache if in_run else shared
    log_probs = np.load(source) if source.exists() else None
    if log_probs is None or log_probs.shape != (len(images), len(CLASS_NAMES)):
        log_probs, in_run = _run_teacher(classifier, images, cache, reporter), False
        shared.parent.mkdir(parents=True, exist_ok=True)
        np.save(shared, log_probs)
    agreement = float((log_probs.argmax(1) == labels).mean())
    if not in_run:
        np.save(cache, log_probs)
        record.write_text(json.dumps({"teacher": str(path), "sha256": digest, "faces_sha256": faces, "images": len(images),
                                      "train_accuracy": agreement}, indent=2))
    if reporter is not None:
        reporter.emit(EVENT_MESSAGE, text=f"teacher {path}: {agreement:.1%} of the {len(images):,} training faces right, un-augmented")
    return log_probs


def _recorded(record: Path, digest: str, faces: str) -> bool:
    if not record.exists():
        return False
    saved = json.loads(record.read_text())
    return saved.get("sha256") == digest and saved.get("faces_sha256") == faces


def _run_teacher(classifier, images: np.ndarray, cache: Path, reporter=None) -> np.ndarray:
    if reporter is not None:
        reporter.emit(EVENT_MESSAGE, text=f"running the teacher {classifier.path} on the {len(images):,} training faces, once (kept in {cache})")
    start = time.perf_counter()

    def progress(done, total):  # a bar (its loss and accuracy columns stay 0: the teacher does not train)
        if reporter is not None:
            reporter.batch(epoch=1, epochs=1, step=done, steps=total, loss=0.0, acc=0.0,
                           images_per_s=done / max(time.perf_counter() - start, 1e-9), label="teacher")

    logits = classifier.predict_logits(images, batch_size=256, progress=progress)
    if reporter is not None:
        reporter.end_epoch_bar()
    return torch.log_softmax(torch.from_numpy(logits).double(), 1).float().numpy()


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_log_probs: torch.Tensor, weight: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """``(1 - weight) * CE(labels) + weight * T² * KL(teacher_T || student_T)``, averaged over the batch."""
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if weight == 0:
        return hard
    t = temperature
    student = F.log_softmax(logits / t, 1)
    teacher = F.log_softmax(teacher_log_probs / t, 1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True) * t * t
    return (1 - weight) * hard + weight * soft
