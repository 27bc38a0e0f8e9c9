"""Classification metrics in numpy: accuracy, confusion matrix, per-class precision, recall and F1.

Torch-free; the TUI computes its confusion view with the same functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .contract import CLASS_NAMES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(true, predicted)``: row i holds the images whose true class is i."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def row_normalise(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows without images stay zero)."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape, float), where=totals > 0)


@dataclass
class Report:
    accuracy: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]
    class_names: list[str]
    count: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["confusion_normalised"] = row_normalise(np.array(self.confusion)).round(4).tolist()
        d["macro_f1"] = float(np.mean(self.f1))
        return d


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names=CLASS_NAMES) -> Report:
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    total = int(cm.sum())
    return Report(
        accuracy=float(tp.sum() / total) if total else 0.0,
        precision=precision.round(6).tolist(),
        recall=recall.round(6).tolist(),
        f1=f1.round(6).tolist(),
        support=actual.astype(int).tolist(),
        confusion=cm.astype(int).tolist(),
        class_names=list(class_names),
        count=total,
    )


def split_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """What an exported model records of one split: accuracy, count, per-class recall, and every face's
    predicted class (``predictions``, see :func:`encode_predictions`), so that the numbers can be checked
    against the labels without running the model, and the model against its record on any sample of faces."""
    report = classification_report(y_true, y_pred)
    return {"accuracy": round(report.accuracy, 5), "count": report.count,
            "recall": dict(zip(CLASS_NAMES, [round(r, 4) for r in report.recall])),
            "predictions": encode_predictions(y_pred)}


def encode_predictions(y_pred: np.ndarray) -> str:
    """Predicted class indices (0–9) as one digit per face, in the split's order: 3,589 faces take 3.5 kB."""
    y_pred = np.asarray(y_pred, np.int64)
    if y_pred.size and (y_pred.min() < 0 or y_pred.max() > 9):
        raise ValueError(f"class indices must be 0–9 to record them as digits, got {y_pred.min()}–{y_pred.max()}")
    return (y_pred.astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def decode_predictions(text: str) -> np.ndarray:
    """The inverse of :func:`encode_predictions`; ``ValueError`` if ``text`` is not all digits."""
    if not isinstance(text, str) or not (text == "" or (text.isascii() and text.isdigit())):
        raise ValueError("recorded predictions must be a string of class digits")
    return np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - ord("0")


def without_predictions(metrics: dict) -> dict:
    """``metrics`` (split → record) without the per-face predictions, for the copies nested in other records."""
    return {split: {k: v for k, v in record.items() if k != "predictions"} if isinstance(record, dict) else record
            for split, record in (metrics or {}).items()}


def most_confused(confusion: np.ndarray, class_names=CLASS_NAMES, top: int = 5) -> list[tuple[str, str, float, int]]:
    """The largest off-diagonal cells: (true, predicted, share of the true class, count)."""
    norm = row_normalise(np.asarray(confusion))
    cells = [(norm[i, j], i, j) for i in range(len(norm)) for j in range(len(norm)) if i != j and confusion[i][j] > 0]
    cells.sort(reverse=True)
    return [(class_names[i], class_names[j], float(share), int(confusion[i][j])) for share, i, j in cells[:top]]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (N, K) from logits (N, K), row by row; the project's one softmax (pass float64 for precision)."""
    logits = np.asarray(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, K) from logits (N, K), row by row, as the ensemble and test-time graphs average them."""
    logits = np.asarray(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
