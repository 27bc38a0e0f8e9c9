"""The faithfulness and sanity tables of docs/explanations.md, written from ``report/faithfulness.json`` and
``report/sanity.json`` (made by ``benchmarks/explain_faithfulness.py`` and ``benchmarks/explain_sanity.py``);
``tests/test_explain_faithfulness.py`` fails when they drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "explanations.md"
RESULTS = ROOT / "report" / "faithfulness.json"
SANITY = ROOT / "report" / "sanity.json"


def _cell(numbers: dict, removal: str, kind: str) -> str:
    return f"{numbers[removal][kind]:.3f}"


def main_table(result: dict) -> str:
    removals = result["removals"]
    head = ["model", "method"] + [f"deletion, {r}" for r in removals] + [f"insertion, {r}" for r in removals] + ["ms per face"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for stem, entry in result["models"].items():
        for name, numbers in entry["methods"].items():
            if "missing" in numbers:
                lines.append(f"| `{stem}` | {name} | " + " | ".join(["—"] * (len(head) - 2)) + " |")
                continue
            cells = [_cell(numbers, r, "deletion") for r in removals] + [_cell(numbers, r, "insertion") for r in removals]
            ms = f"{numbers['face_seconds'] * 1000:.0f}" if "face_seconds" in numbers else "—"
            lines.append(f"| `{stem}` | {name} | " + " | ".join(cells) + f" | {ms} |")
    return "\n".join(lines)


def sweep_table(result: dict) -> str:
    lines = ["| settings (fer-best) | deletion, grey | insertion, grey | ms per face |", "|---|---:|---:|---:|"]
    for label, numbers in result.get("sweep", {}).items():
        lines.append(f"| {label} | {_cell(numbers, 'grey', 'deletion')} | {_cell(numbers, 'grey', 'insertion')} | "
                     f"{numbers['face_seconds'] * 1000:.0f} |")
    return "\n".join(lines)


def tui_table(result: dict) -> str:
    """The Saliency view's path for a new face: the map, then its faithfulness score."""
    lines = ["| model and method | map, ms | faithfulness score after it, ms | load while measured |", "|---|---:|---:|---:|"]
    for label, numbers in result.get("tui", {}).items():
        stem, method = label.split(" ", 1)
        lines.append(f"| `{stem}`, {method} | {numbers['map'] * 1000:.0f} | {numbers['faithfulness'] * 1000:.0f} | {numbers['load']:.1f} |")
    return "\n".join(lines)


def sanity_table(sanity: dict) -> str:
    """Rank correlations of each method's maps: trained model against randomised weights (per model) and
    against the small CNN trained on shuffled labels."""
    weights, labels = sanity["randomised_weights"], sanity["randomised_labels"]["correlation"]
    accuracy = sanity["randomised_labels"]["val_accuracy"]
    head = [f"randomised weights, `{stem}`" for stem in weights] + [
        f"randomised labels, small CNN ({accuracy['true labels']:.1%} against {accuracy['shuffled labels']:.1%} on validation)"]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for name in sanity["methods"]:
        cells = [f"{w[name]['mean']:.2f} ± {w[name]['sd']:.2f}" if name in w else "—" for w in weights.values()]
        cells.append(f"{labels[name]['mean']:.2f} ± {labels[name]['sd']:.2f}" if name in labels else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(result: dict | None, sanity: dict | None = None) -> dict[str, str]:
    """Marker name → the table that belongs between its markers (of the results given)."""
    out = {}
    if result is not None:
        out.update({"faithfulness": main_table(result), "faithfulness-sweep": sweep_table(result), "faithfulness-tui": tui_table(result)})
    if sanity is not None:
        out["sanity"] = sanity_table(sanity)
    return out


def between(text: str, marker: str) -> str | None:
    """What docs hold between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` (None when the markers are absent)."""
    found = re.search(rf"<!-- {marker}:begin -->\n(.*?)<!-- {marker}:end -->", text, re.S)
    return found.group(1).rstrip("\n") if found else None


def write_tables(result: dict | None, docs: Path = DOCS, sanity: dict | None = None) -> None:
    text = docs.read_text()
    for marker, table in tables(result, sanity).items():
        if between(text, marker) is None:
            raise ValueError(f"{docs}: no <!-- {marker}:begin --> … <!-- {marker}:end --> markers to write the table between")
        text = re.sub(rf"(<!-- {marker}:begin -->\n).*?(<!-- {marker}:end -->)", lambda m, table=table: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)
    docs.write_text(text)
