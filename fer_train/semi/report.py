"""The closing report of a semi-supervised run: the summary, the comparison table and its pictures.

numpy and matplotlib only. Every arm is judged by its final model (the end of the budget, not the epoch
that happened to score best on validation) and compared with the baseline on the same images: the
difference in accuracy with a paired 95% interval, and McNemar's exact test on the images where they disagree.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fer_runtime.contract import CLASS_NAMES

from .settings import OWN_THRESHOLD, arm_kind, describe_rounds, first_round

ARM_TITLES = {"baseline": "labeled part only", "self-training": "self-training", "per-class": "self-training, per-class thresholds",
              "fixmatch": "FixMatch-style consistency", "noisy-student": "noisy student: the baseline's soft labels under noise"}
MAIN_ARM_ORDER = ("noisy-student", "self-training", "per-class", "fixmatch", "baseline")  # the arm exported: the first the run has


def arm_title(arm: str, threshold: float | None = None) -> str:
    """E.g. "self-training (p > 0.9)" for ``self-training@0.9``; the run's ``threshold`` for a plain pseudo-label arm."""
    kind, _, own = arm.partition(OWN_THRESHOLD)
    title = ARM_TITLES.get(kind, kind)
    if own:
        return f"{title} (p > {own})"
    return f"{title} (p > {threshold})" if kind == "self-training" and threshold is not None else title


def main_arm(arms) -> str:
    """The arm a run exports: the first method of MAIN_ARM_ORDER it has (with several thresholds, the run's own)."""
    return next(a for kind in MAIN_ARM_ORDER for a in arms if arm_kind(a) == kind)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p: how surprising the split of the disagreements is if neither model is better."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Accuracy of a minus b on the same images, with a paired normal 95% interval and McNemar's p."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    d = a.astype(float) - b.astype(float)
    diff = float(d.mean()) if len(d) else 0.0
    half = 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"delta": round(diff, 5), "ci95": [round(diff - half, 5), round(diff + half, 5)], "only_this_right": only_a,
            "only_baseline_right": only_b, "mcnemar_p": float(f"{mcnemar_p(only_a, only_b):.4g}")}


def _arm_wall(history: list[dict], rounds: list[dict]) -> float:
    return round(sum(h["seconds"] for h in history) + sum(r.get("select_seconds", 0.0) for r in rounds), 1)


def rounds_text(settings: dict) -> str:
    """E.g. "4 rounds × 5 epochs", from :func:`settings` (older files lack ``rounds_text``)."""
    return settings.get("rounds_text") or f"{settings['rounds']} rounds × {settings['epochs_per_round']} epochs"


def settings(config) -> dict:
    """The settings of a semi-supervised run, as ``semi.json`` (and the exported model's metadata) records them."""
    return {"model": config.model, "threshold": config.semi_threshold, "rule": "admit when p_max > threshold (strictly greater)",
            "labeled_fraction": config.semi_labeled_fraction, "rounds": config.semi_rounds,
            "epochs_per_round": config.semi_epochs_per_round, "first_round_epochs": first_round(config),
            "rounds_text": describe_rounds(config), "epochs": config.epochs, "arms": list(config.semi_arms), "recipe": config.recipe,
            "schedule": config.schedule, "augmentation": {"rotation": config.rotation, "shift": config.shift, "flip": config.flip,
                                                          "erase": config.erase, "label_smoothing": config.label_smoothing},
            "channels_last": config.channels_last,
            "class_thresholds": config.semi_class_thresholds, "fixmatch_threshold": config.fixmatch_threshold,
            "fixmatch_mu": config.fixmatch_mu, "fixmatch_weight": config.fixmatch_weight, "student_mixup": config.student_mixup,
            "seed": config.seed,
            "batch_size": config.batch_size, "optimizer": config.optimizer, "lr": config.learning_rate, "bf16": config.bf16}


def summarise(collected: dict[str, dict], correct: dict[str, dict], config, *, labeled_counts: dict, unlabeled_counts: dict,
              session_seconds: float, hardware: str) -> dict:
    """``semi.json``: settings, data, each arm's accuracies, rounds and wall time, and the comparison."""
    arms = {}
    for arm, c in collected.items():
        history, rounds = c["history"], c["rounds"]
        best = max(history, key=lambda h: h["val_acc"])
        val = correct[arm]["val"]
        arms[arm] = {
            "title": arm_title(arm, config.semi_threshold),
            "final_val_acc": round(float(val.mean()), 5),
            "best_val_acc": round(best["val_acc"], 5), "best_epoch": best["epoch"],
            "final_test_acc": round(float(correct[arm]["test"].mean()), 5) if "test" in correct[arm] else None,
            "epochs": len(history),
            "gradient_steps": int(sum(h.get("steps", 0) for h in history)),
            "images_seen": int(sum(h.get("train_images", 0) for h in history)),
            "wall_seconds": _arm_wall(history, rounds),
            "rounds": [{k: r.get(k) for k in ("round", "epoch", "val_acc", "admitted", "admitted_per_class", "pseudo_precision",
                                              "pseudo_precision_per_class", "thresholds_per_class", "kept", "new", "dropped", "used_in_round")}
                       for r in rounds],
        }
    comparison = []
    for arm, s in arms.items():
        row = {"arm": arm, "final_val_acc": s["final_val_acc"], "final_test_acc": s["final_test_acc"]}
        if "baseline" in correct and arm != "baseline":
            row["val_vs_baseline"] = paired_difference(correct[arm]["val"], correct["baseline"]["val"])
            if "test" in correct[arm]:
                row["test_vs_baseline"] = paired_difference(correct[arm]["test"], correct["baseline"]["test"])
        comparison.append(row)
    compute = sum(sum(h["seconds"] for h in c["history"] if not h.get("shared")) + sum(r.get("select_seconds", 0.0) for r in c["rounds"])
                  for c in collected.values())
    return {
        "settings": {**settings(config), "arms": list(collected)},
        "data": {"labeled": int(sum(labeled_counts.values())), "unlabeled": int(sum(unlabeled_counts.values())),
                 "labeled_per_class": labeled_counts, "unlabeled_per_class_hidden": unlabeled_counts,
                 "val": int(len(next(iter(correct.values()))["val"])) if correct else 0},
        "main_arm": main_arm(arms),
        "arms": arms,
        "comparison": comparison,
        "compute_seconds": round(compute, 1),
        "session_seconds": round(session_seconds, 1),
        "hardware": hardware,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _delta(d: dict | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    p = "p < 0.001" if d["mcnemar_p"] < 0.001 else f"p = {d['mcnemar_p']:.3f}"
    return f"{100 * d['delta']:+.2f} pp [{100 * lo:+.2f}, {100 * hi:+.2f}], {p}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def markdown_table(summary: dict) -> str:
    """One row per arm: the final validation (and test) accuracy, the difference from the baseline, the cost."""
    lines = ["| arm | final val acc | Δ val vs baseline [95% CI], McNemar p | best val acc (epoch) | final test acc | Δ test vs baseline | gradient steps | wall |",
             "|---|---:|---|---:|---:|---|---:|---:|"]
    rows = {r["arm"]: r for r in summary["comparison"]}
    for arm, s in summary["arms"].items():
        r = rows[arm]
        lines.append(f"| {s['title']} | {_pct(s['final_val_acc'])} | {_delta(r.get('val_vs_baseline'))} | {_pct(s['best_val_acc'])} ({s['best_epoch']}) | "
                     f"{_pct(s['final_test_acc'])} | {_delta(r.get('test_vs_baseline'))} | {s['gradient_steps']:,} | {_minutes(s['wall_seconds'])} |")
    return "\n".join(lines)


def rounds_table(rounds: list[dict]) -> str:
    """Per round: admitted images per pseudo-label class with the precision of those pseudo-labels."""
    head = "| round | val acc | admitted | " + " | ".join(CLASS_NAMES) + " | precision |"
    lines = [head, "|---:|---:|---:|" + "---:|" * len(CLASS_NAMES) + "---:|"]
    for r in rounds:
        cells = []
        for name in CLASS_NAMES:
            n, p = r["admitted_per_class"][name], r["pseudo_precision_per_class"][name]
            cells.append(f"{n:,} ({p:.2f})" if p is not None else f"{n:,}")
        lines.append(f"| {r['round']} | {_pct(r['val_acc'])} | {r['admitted']:,} | " + " | ".join(cells) + f" | {_pct(r['pseudo_precision'])} |")
    return "\n".join(lines)


def markdown_report(summary: dict) -> str:
    s, d = summary["settings"], summary["data"]
    parts = [f"# Semi-supervised training: {s['model']}, {d['labeled']:,} labeled + {d['unlabeled']:,} unlabeled images",
             "",
             f"Rule: admit an unlabeled image when its top softmax probability is strictly greater than {s['threshold']} "
             f"(an arm named {OWN_THRESHOLD}T: than T); "
             f"{rounds_text(s)} for every arm; seed {s['seed']}. Every arm is judged by its "
             f"final model on {d['val']:,} validation images; Δ is against the baseline on the same images.",
             "", markdown_table(summary), ""]
    for arm, a in summary["arms"].items():
        if a["rounds"]:
            parts += [f"## {a['title']}: admitted per class (pseudo-label precision)", "",
                      "After each round, the images admitted for the next one; the precision is graded afterwards with the hidden "
                      "labels and never used in training.", "", rounds_table(a["rounds"]), ""]
    shared = "Round 1 has no pseudo-labels yet: it was trained once and shared, and every arm's wall column counts it. "
    parts.append(f"{shared if summary.get('shared_first_round') else ''}Compute {_minutes(summary['compute_seconds'])}, "
                 f"wall time {_minutes(summary.get('wall_seconds', summary['session_seconds']))} "
                 f"in {len(summary.get('sessions', [])) or 1} session(s), on {summary['hardware']}.")
    return "\n".join(parts) + "\n"


def plot_comparison(collected: dict[str, dict], settings: dict, path: str | Path) -> Path:
    """Train and validation loss and accuracy per epoch of every arm, in one PNG (``settings``: :func:`settings`)."""
    from ..plots import plot_curves

    labels = {arm: arm_title(arm, settings["threshold"]) for arm in collected}
    return plot_curves({labels[a]: c["history"] for a, c in collected.items()}, path,
                       title=f"{settings['model']}: {settings['labeled_fraction']:g} of the labels, "
                             f"{rounds_text(settings)}")


def plot_rounds(collected: dict[str, dict], path: str | Path, threshold: float | None = None) -> Path | None:
    """Per arm with rounds: admitted images per class, and their pseudo-label precision, round by round; each arm
    titled with its threshold (the run's ``threshold`` for a plain self-training arm)."""
    from ..plots import _pyplot

    arms = [a for a, c in collected.items() if c["rounds"]]
    if not arms:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(arms), 2, figsize=(11, 3.6 * len(arms)), squeeze=False)
    for row, arm in zip(axes, arms):
        rounds = collected[arm]["rounds"]
        x = [r["round"] for r in rounds]
        for c, name in enumerate(CLASS_NAMES):
            row[0].plot(x, [r["admitted_per_class"][name] for r in rounds], "o-", color=f"C{c}", label=name)
            prec = [r["pseudo_precision_per_class"][name] for r in rounds]
            row[1].plot(x, [np.nan if p is None else p for p in prec], "o-", color=f"C{c}", label=name)
        row[0].set_title(f"{arm_title(arm, threshold)}: admitted per pseudo-label class")
        row[1].set_title("precision of those pseudo-labels")
        row[1].set_ylim(0, 1)
        for ax in row:
            ax.set_xlabel("after round")
            ax.set_xticks(x)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
