"""``fer-tui``: the app's wiring — views in tabs, the shared state, and the workers that load and predict.

The views live in ``fer_tui.views`` and see the state through ``View.update_context``. To add a view,
write a ``View`` subclass in its own module and add it to ``VIEWS`` below: its tab, its key binding and
its help entry follow from the class. The app opens on the model named first on the command line, else
the most accurate one found (``fer_tui.catalog.opening_model``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane
from textual.notifications import SeverityLevel
from textual.worker import get_current_worker

from fer_runtime.family import VARIANT_CHOICES

from .catalog import (
    ModelEntry,
    default_model_dirs,
    find_models,
    load_entry,
    merge_entries,
    opening_model,
)
from .data import open_dataset
from .messages import (
    ActivateModel,
    BrowseCell,
    DataLoaded,
    DataProgress,
    FaceSelected,
    ModelExported,
    ModelsLoaded,
    PredictFailed,
    PredictionsReady,
    PredictProgress,
    StepFace,
)
from .predictions import Cancelled, DiskPredictions, PredictionCache
from .state import Context, Settings
from .views.base import View
from .views.browse import BrowseView, Filters
from .views.confusion import ConfusionView
from .views.context_bar import ContextBar, DataNotes, TooSmall
from .views.filters import FiltersTab
from .views.fit import fit
from .views.help import HelpScreen
from .views.models import ModelsView
from .views.saliency import SaliencyView
from .views.train import TrainView

# The tabs, in order. A new view is one import and one entry here.
VIEWS: tuple[type[View], ...] = (BrowseView, SaliencyView, FiltersTab, ConfusionView, ModelsView, TrainView)


@dataclass
class Options:
    """What the command line (or a test) asks of the app."""

    data: str | None = None  # a data file or folder; None: $FER_DATA, the default path, else demo faces
    demo: bool = False  # the built-in demo faces whatever data exists
    models: list[str] = field(default_factory=list)  # .onnx files or folders, listed first
    model_dirs: list[str] | None = None  # where to look for models; None: exported/
    split: str | None = None  # the split to open; None: val
    plain: bool | None = None  # characters instead of colour; None: decide from the terminal
    settings: Settings = field(default_factory=Settings)


class FerApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "fer-tui"
    # The view keys are shown on the tabs themselves, so the footer keeps room for each view's own keys.
    BINDINGS = [Binding(view.key, f"show_view('{view.view_id}')", view.title, show=False) for view in VIEWS] + [
        Binding("v", "cycle_split", "Split"),
        Binding("left_square_bracket", "cycle_model(-1)", "Prev model", show=False),
        Binding("right_square_bracket", "cycle_model(1)", "Next model", show=False),
        Binding("p", "toggle_plain", "Plain", show=False),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, options: Options, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.options = options
        self.clock = clock
        self.context = Context(settings=options.settings,
                               cache=PredictionCache(DiskPredictions() if options.settings.disk_cache else None,
                                                     shipped=options.settings.disk_cache))
        self.activity = ""
        self._warned: set[tuple] = set()

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ContextBar(id="context-bar")
        yield DataNotes(id="hint")
        with TabbedContent(initial=VIEWS[0].view_id, id="tabs"):
            for view in VIEWS:
                with TabPane(f"{view.title} ({view.key})", id=view.view_id):
                    yield view()
        yield TooSmall(id="too-small")
        yield Footer()

    @property
    def views(self) -> list[View]:
        return list(self.query(View))

    def view(self, view_id: str) -> View:
        return self.query_one(f"#{view_id}-view", View)

    def on_mount(self) -> None:
        plain = self.options.plain
        if plain is None:
            plain = self.no_color or os.environ.get("TERM") == "dumb"
        self.set_context(plain=plain)
        self.view(VIEWS[0].view_id).is_active = True
        self.view(VIEWS[0].view_id).focus_main()
        self._check_size(self.size.width, self.size.height)
        self.load_data()
        dirs = self.options.model_dirs if self.options.model_dirs is not None else [str(d) for d in default_model_dirs()]
        self.load_models(list(self.options.models) + list(dirs))

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        fit(self, width, height)
        if self.has_class("-too-small"):
            self.screen_stack[0].query_one(TooSmall).show(width, height)

    # -- the shared state --------------------------------------------------------------------------

    def set_context(self, **changes) -> None:
        old = self.context
        new = old.evolve(**changes)
        self.context = new
        for view in self.views:
            view.update_context(new, old)
        self.query_one(ContextBar).show(new, self.activity)
        if new.dataset is not old.dataset:
            self.query_one(DataNotes).show(new.dataset)

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Notifications are plain text unless a caller asks for markup: they carry file names, errors and other
        programs' words (``pip install '.[train]'``), whose brackets Rich markup would eat. (Textual's default is markup.)"""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def set_activity(self, text: str) -> None:
        self.activity = text
        self.query_one(ContextBar).show(self.context, text)

    # -- workers -----------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="data")
    def load_data(self) -> None:
        def progress(done: int, total: int, name: str) -> None:
            self.post_message(DataProgress(done, total, name))

        dataset, error = open_dataset(self.options.data, self.options.demo, progress=progress)
        self.post_message(DataLoaded(dataset, error))

    @work(thread=True, group="models")
    def load_models(self, paths: Sequence[str | Path]) -> None:
        entries = [load_entry(path, variant=self.options.settings.variant) for path in find_models(paths)]
        self.post_message(ModelsLoaded(entries))

    @work(thread=True, exclusive=True, group="predict")
    def predict(self, entry: ModelEntry, split_name: str) -> None:
        worker = get_current_worker()
        split = self.context.dataset.splits[split_name]
        cache = self.context.cache

        def progress(done: int, total: int) -> None:
            self.post_message(PredictProgress(entry.key, split_name, done, total))

        try:
            predictions = cache.compute(entry, split_name, split, progress=progress, cancelled=lambda: worker.is_cancelled,
                                        clock=self.clock)
        except Cancelled:
            return
        except Exception as exc:  # a model that loads but cannot run on these inputs
            self.post_message(PredictFailed(entry.key, split_name, f"{entry.name} failed on {split_name}: {exc}"))
            return
        self.post_message(PredictionsReady(predictions))

    def switch(self, **changes) -> None:
        """Change the data, split or model; cached predictions show at once, others are computed in a worker."""
        ctx = self.context.evolve(**changes)
        ready = ctx.model is not None and ctx.model.ok and ctx.split is not None
        cached = ctx.cache.get(ctx.model, ctx.split_name) if ready else None
        self.set_context(**changes, predictions=cached)
        if ready and cached is None:
            self.set_activity(f"predicting {ctx.model.name} on {ctx.split_name}…")
            self.predict(ctx.model, ctx.split_name)
        elif not ready:
            self.set_activity("")

    # -- messages ----------------------------------------------------------------------------------

    def on_data_loaded(self, message: DataLoaded) -> None:
        dataset = message.dataset
        wanted = self.options.split or dataset.default_split
        split = wanted if wanted in dataset.splits else dataset.default_split
        if message.error:
            self.notify(message.error, title="data", severity="error", timeout=15)
        elif wanted != split:
            self.notify(f"{dataset.name} has no {wanted!r} split; showing {split}", severity="warning")
        self.switch(dataset=dataset, split_name=split, selected=None)
        # The app, its imports and the data now exist for good: move them out of the garbage collector's
        # sight, so a full collection scans only what came later (it scanned ~200k objects, pausing the UI
        # for 0.2–0.4 s on a busy machine).
        gc.freeze()

    def on_data_progress(self, message: DataProgress) -> None:
        if self.context.dataset is None:
            self.set_activity(f"finding faces in photos: {message.done:,}/{message.total:,} ({message.name})")

    def on_models_loaded(self, message: ModelsLoaded) -> None:
        models = merge_entries(self.context.models, message.entries)
        active = self.context.model
        if active is not None:  # a re-exported file replaces the active entry too
            active = next((m for m in models if m.path == active.path), active)
        if active is None:
            active = opening_model(models, named=self.options.models)
        for entry in message.entries:
            if not entry.ok:
                self.notify(entry.error or "unusable model", title=f"cannot use {entry.path.name}", severity="error", timeout=10)
        self.switch(models=tuple(models), model=active, models_loaded=True)
        self._warn_about(active)

    def _warn_about(self, model: ModelEntry | None) -> None:
        if model is not None and model.warnings and model.key not in self._warned:
            self._warned.add(model.key)
            self.notify("; ".join(model.warnings), title=model.name, severity="warning", timeout=10)

    def on_predict_progress(self, message: PredictProgress) -> None:
        ctx = self.context
        if ctx.model is not None and (message.model_key, message.split_name) == (ctx.model.key, ctx.split_name):
            self.set_activity(f"predicting {ctx.model.name} on {ctx.split_name}: {message.done:,}/{message.total:,}")

    def on_predictions_ready(self, message: PredictionsReady) -> None:
        p = message.predictions
        ctx = self.context
        if ctx.model is None or (p.model_key, p.split_name) != (ctx.model.key, ctx.split_name):
            return
        if p.shipped:
            self.set_activity(f"{len(p):,} predictions shipped with {p.ran} (computed in {p.seconds:.2f} s at export)")
        else:
            self.set_activity(f"{len(p):,} predictions from the cache (computed in {p.seconds:.2f} s)" if p.stored
                              else f"{len(p):,} predictions in {p.seconds:.2f} s")
        self.set_context(predictions=p)

    def on_predict_failed(self, message: PredictFailed) -> None:
        self.set_activity("")
        self.notify(message.message, title="prediction failed", severity="error", timeout=15)

    def on_face_selected(self, message: FaceSelected) -> None:
        if message.index != self.context.selected:
            self.set_context(selected=message.index)

    def on_step_face(self, message: StepFace) -> None:
        browse = self.view("browse")
        if isinstance(browse, BrowseView):
            browse.step(message.delta)

    def on_browse_cell(self, message: BrowseCell) -> None:
        browse = self.view("browse")
        if isinstance(browse, BrowseView):
            browse.set_filters(Filters(true=message.true, predicted=message.predicted))
        self.action_show_view("browse")

    def on_activate_model(self, message: ActivateModel) -> None:
        entry = self.context.model_by_path(message.path)
        if entry is None or not entry.ok or entry is self.context.model:
            return
        self.switch(model=entry)
        self._warn_about(entry)

    def on_model_exported(self, message: ModelExported) -> None:
        self.load_models([message.path])

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        active = event.pane.id
        for view in self.views:
            view.is_active = view.view_id == active
            if view.is_active:
                view.shown()

    # -- actions -----------------------------------------------------------------------------------

    def action_show_view(self, view_id: str) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = view_id
        self.view(view_id).focus_main()

    def action_cycle_split(self) -> None:
        ctx = self.context
        if ctx.dataset is None:
            return
        names = list(ctx.dataset.splits)
        split = names[(names.index(ctx.split_name) + 1) % len(names)]
        self.switch(split_name=split, selected=None)

    def action_cycle_model(self, delta: int) -> None:
        usable = [m for m in self.context.models if m.ok]
        if not usable:
            return
        current = usable.index(self.context.model) if self.context.model in usable else -1
        self.post_message(ActivateModel(usable[(current + delta) % len(usable)].path))

    def action_toggle_plain(self) -> None:
        self.set_context(plain=not self.context.plain)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(VIEWS))


def make_app(data: str | Path | None = None, models: Sequence[str | Path] = (), model_dirs: Sequence[str | Path] | None = None,
             split: str | None = None, demo: bool = False, plain: bool | None = None, settings: Settings | None = None,
             clock: Callable[[], float] = time.perf_counter) -> FerApp:
    """The app, configured; ``fer-tui`` and the tests both build it here."""
    options = Options(data=str(data) if data is not None else None, demo=demo, models=[str(m) for m in models],
                      model_dirs=[str(d) for d in model_dirs] if model_dirs is not None else None, split=split, plain=plain,
                      settings=settings or Settings())
    return FerApp(options, clock=clock)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fer-tui", description="Look inside facial-expression models: faces and predictions, "
                                "confusion, saliency, models, training jobs.",
                                epilog="Data: --data, else $FER_DATA, else ../shared/data/fer2013/fer2013.csv.gz, else built-in demo faces.")
    p.add_argument("paths", nargs="*", help=".onnx models or folders of them (default: exported/); a CSV or image folder is taken as --data")
    p.add_argument("--data", default=None, help="FER2013 CSV (.csv/.csv.gz), course CSV or a folder of images (any size, colour)")
    p.add_argument("--demo", action="store_true", help="show the built-in demo faces (drawn, not FER2013)")
    p.add_argument("--models", action="append", default=None, metavar="DIR", help="look for models in DIR (repeatable; default: exported/)")
    p.add_argument("--split", default=None, help="split to open: val (default), test, train")
    p.add_argument("--plain", action="store_true", default=None, help="draw pictures with characters, without colour")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="which file predicts a split: auto, the fastest variant of the model that passed the accuracy gate "
                        "(int8, else fast, else the model), or that one (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="compute every prediction again instead of reading the ones an earlier "
                   "start stored (under $FER_CACHE_DIR/predictions) or the model shipped with (<stem>.predictions.npz), both keyed by "
                   "the model's and the data's content")
    p.add_argument("--export-dir", default="exported", help="where the Train view's jobs export models (default: %(default)s)")
    p.add_argument("--runs-root", default="runs", help="where the Train view's jobs keep their run folders (default: %(default)s)")
    return p.parse_args(argv)


def split_paths(paths: Sequence[str]) -> tuple[list[str], str | None]:
    """Model paths and a data path among the positional arguments (a CSV, or a folder without .onnx files)."""
    models, data = [], None
    for raw in paths:
        path = Path(raw)
        is_model_dir = path.is_dir() and any(p.suffix.lower() == ".onnx" for p in path.iterdir())
        if path.suffix.lower() == ".onnx" or is_model_dir:
            models.append(raw)
        elif data is None:
            data = raw
        else:
            raise SystemExit(f"fer-tui: more than one data source given ({data}, {raw}); pass one, or use --data")
    return models, data


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models, data = split_paths(args.paths)
    if args.data and data:
        raise SystemExit(f"fer-tui: two data sources given ({data} and --data {args.data}); pass one")
    app = make_app(data=args.data or data, models=models, model_dirs=args.models, split=args.split, demo=args.demo,
                   plain=args.plain, settings=Settings(export_dir=Path(args.export_dir), runs_root=Path(args.runs_root), variant=args.variant,
                                     disk_cache=not args.no_cache))
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
