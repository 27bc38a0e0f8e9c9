"""The README's table of shipped models, written from the models' own metadata, never by hand.

    python -m fer_runtime.model_table            # print the table for exported/
    python -m fer_runtime.model_table --write    # replace the table between the markers in README.md

Every cell comes from a file's metadata: its architecture, how it was trained (``train_config``), what kind of
variant it is (``variant``, ``optimization``) and its accuracies (``metrics``). ``tests/test_readme.py`` fails
when README.md and the files disagree, so the table cannot drift from the models. Torch-free.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalog import find_models, load_entry
from .contract import IMAGE_SIZE, META_CONFIG, META_EXTRA, META_OPTIMIZATION, META_VARIANT, METRICS_TEST, METRICS_VAL
from .family import FAST_VARIANT, model_name

BEGIN = "<!-- models table: written by python -m fer_runtime.model_table --write; do not edit by hand -->"
END = "<!-- end of models table -->"
HEADER = ("| model | what | parameters | validation | PublicTest |\n"
          "|---|---|---:|---:|---:|")


def describe(metadata: dict, name: str) -> str:
    """What a model is, in words, from its metadata alone."""
    config = metadata.get(META_CONFIG) or {}
    optimization = metadata.get(META_OPTIMIZATION) or {}
    variant = metadata.get(META_VARIANT)
    parsed = model_name(name + ".onnx")
    base = f"`{parsed.model}`" if parsed.model != name else None
    views = optimization.get("views") or []
    words = []
    if base is None or variant is None:
        words.append(f"`{config.get('model', metadata.get('architecture', '?'))}`" + _shape(config.get("model_kwargs") or {}))
        if config.get("semi"):
            words.append(_semi_arm((metadata.get(META_EXTRA) or {}).get("semi") or {}))
        if config.get("init_from"):
            words.append(f"its last stage {config.get('epochs')} epochs from an earlier run")
        elif config.get("epochs"):
            words.append(f"{config.get('epochs')} epochs" + (f", recipe `{config['recipe']}`" if config.get("recipe") else ""))
    if views and not optimization.get("int8_source"):
        chosen = (optimization.get("tta_choice") or {}).get("chosen")
        words.append(f"on {len(views)} views of the face" + (f" (`{chosen}`, chosen on validation)" if chosen else ""))
    if variant == FAST_VARIANT:
        words.append(f"{base}, rewritten graph, the same logits")
    elif variant == "int8":
        source = (f"`{model_name(optimization['int8_source']).model}.int8` under the {len(views)} views of {base}"
                  if optimization.get("int8_source") else base)
        words.append(f"{source}, static int8 ({optimization.get('weights', 'int8')} weights)")
    elif variant and variant.startswith("fp32-ensemble"):
        words.append(f"mean of {optimization.get('members', '?')} models")
    return "; ".join(words)


def _semi_arm(semi: dict) -> str:
    """Which arm of a semi-supervised run (``--semi``) a model is, from the comparison its metadata carries."""
    arm = semi.get("arm") or "self-training"
    title = ((semi.get("arms") or {}).get(arm) or {}).get("title")
    if arm == "baseline":
        return "the labeled half alone (baseline of a `--semi` run)"
    if arm == "noisy-student":
        return "noisy student on half the labels (`--noisy-student`)"
    return f"{title or arm} on half the labels (`--semi`)"


def _shape(kwargs: dict) -> str:
    """A model's non-default shape in words: its widths (``--widths``) and the crops it was trained on (``--crop``)."""
    words = []
    if kwargs.get("widths"):
        words.append("widths " + "-".join(str(w) for w in kwargs["widths"]))
    if kwargs.get("input_size") and kwargs["input_size"] < IMAGE_SIZE:
        words.append(f"trained on {kwargs['input_size']}-pixel crops")
    return f" ({', '.join(words)})" if words else ""


def _percent(value) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "—"


def model_rows(folder: str | Path = "exported") -> list[str]:
    """One Markdown row per usable model in ``folder``: each family together, its model first."""
    entries = [load_entry(path, threads=1) for path in find_models([folder])]
    families: dict[str, list] = {}
    for entry in entries:
        if entry.ok:
            families.setdefault(model_name(entry.path).stem, []).append(entry)
    best = {stem: max(m.metric(METRICS_VAL) or 0 for m in members) for stem, members in families.items()}
    rows = []
    for stem in sorted(families, key=lambda k: -best[k]):  # the most accurate family first
        members = families[stem]
        for entry in sorted(members, key=lambda e: (len(e.name), e.name)):
            params = f"{entry.parameter_count:,}" if entry.parameter_count else "—"
            rows.append(f"| `{entry.name}` | {describe(entry.metadata, entry.name)} | {params} | "
                        f"{_percent(entry.metric(METRICS_VAL))} | {_percent(entry.metric(METRICS_TEST))} |")
    return rows


def model_table(folder: str | Path = "exported") -> str:
    return "\n".join([HEADER, *model_rows(folder)])


def replace_table(text: str, table: str, where: str = "README.md") -> str:
    """``text`` with the part between :data:`BEGIN` and :data:`END` replaced by ``table``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{where}: no models table markers ({BEGIN!r} … {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def table_in(text: str) -> str:
    """The table currently between the markers of ``text``."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer_runtime.model_table", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="exported", help="the folder of models (default: %(default)s)")
    p.add_argument("--readme", default="README.md", help="the file whose table --write replaces (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="write the table into --readme instead of printing it")
    args = p.parse_args(argv)
    table = model_table(args.models)
    if not args.write:
        print(table)
        return 0
    readme = Path(args.readme)
    try:
        readme.write_text(replace_table(readme.read_text(encoding="utf-8"), table, str(readme)), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{readme}: models table written ({table.count(chr(10)) - 1} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
