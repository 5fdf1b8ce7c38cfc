"""The run context of a notebook's kernel: its run folder, results tables and citable figures.

This is the only part of the runner a notebook imports. Right after building its config::

    cfg = X.Config.from_notebook(globals())
    run = start_run(cfg)                       # the run folder (same path as the runner's)
    run.save_results(df)                       # -> results.csv
    run.save_figure(fig, "auroc-vs-ratio", "AUROC against the synthetic ratio ...")

Under ``cxr run``/``cxr book`` (:mod:`cxrlib.execution`) the runner tells the kernel its staging
folder and the config hash it resolved through the ``CXR_RUN_*`` environment variables below;
``start_run`` checks the notebook built the same config. Run by hand in Jupyter (or by plain
papermill), ``start_run`` computes the run folder itself (from the notebook's name) and writes the
config and provenance there.

A finished run records the project's Python files its kernel imported (their sha256 is part of the
run's fingerprint). So this module imports neither the execution nor the book modules: editing how
the book is built or printed does not make every chapter look changed.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from .config import ExperimentConfig
from .utils import project_root

RUN_RECORD = "run.json"
# Environment variables through which the runner tells the notebook's kernel where its run goes.
ENV_RUN_DIR = "CXR_RUN_DIR"
ENV_RUN_HASH = "CXR_RUN_CONFIG_HASH"
ENV_RUN_NOTEBOOK = "CXR_RUN_NOTEBOOK"


# --- run folders -------------------------------------------------------------------------------------
def runs_root(runs_dir: str | os.PathLike | None = None) -> Path:
    """``runs_dir``, else env ``CXR_RUNS_DIR``, else ``<project>/runs``."""
    if runs_dir is not None:
        return Path(runs_dir).resolve()
    env = os.environ.get("CXR_RUNS_DIR")
    return Path(env).resolve() if env else project_root() / "runs"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of a run folder, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.profile}-{cfg.hash()}"


def run_dir_for(stem: str, cfg: ExperimentConfig, runs_dir: str | os.PathLike | None = None) -> Path:
    """``runs/<notebook stem>/<profile>-<config hash>/``."""
    return runs_root(runs_dir) / stem / run_name(cfg)


# --- inside the notebook ----------------------------------------------------------------------------
class RunContext:
    """The run folder of a notebook execution, with helpers to write its results and figures."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, notebook: str, interactive: bool):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.notebook = notebook
        self.interactive = interactive
        self.figures: list[dict[str, Any]] = []
        self._provenance: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunContext({self.dir})"

    @property
    def provenance(self) -> dict[str, Any]:
        if self._provenance is None:
            from .provenance import collect

            self._provenance = collect(profile=self.cfg.profile, device=self.cfg.device,
                                       config_hash=self.cfg.hash(), notebook=self.notebook)
        return self._provenance

    def path(self, name: str) -> Path:
        """A file inside the run folder (for anything not covered by the helpers below)."""
        return self.dir / name

    def _check_dir(self) -> None:
        # Under the runner, a vanished staging folder means the runner was killed and a later run
        # cleaned up: an orphaned kernel must not recreate it (ipykernel exits ~1 s after its parent).
        if not self.dir.is_dir():
            raise RuntimeError(f"run folder {self.dir} no longer exists (was the runner stopped?)")

    def _record_cache_events(self) -> None:
        from . import cache
        from .io import atomic_write_json

        self._check_dir()
        record = dict(self.provenance)
        record["cache_events"] = cache.events()
        atomic_write_json(self.dir / "provenance.json", record)

    def save_results(self, df, name: str = "results") -> None:
        """Write a tidy results table as ``<name>.csv`` (one row per arm x label x metric x seed).

        Returns nothing, so a notebook cell ending with it shows no path; the file is
        ``run.path(name + ".csv")``."""
        from .io import atomic_path

        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise ValueError(f"results name {name!r}: use letters, digits, '-' and '_'")
        self._check_dir()
        path = self.dir / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
        self._record_cache_events()

    def save_figure(self, fig, name: str, caption: str, params: Mapping[str, Any] | None = None,
                    show: bool = True) -> None:
        """Save ``fig`` as a citable figure (PNG 300 dpi, PDF, SVG, JSON) in ``figures/`` and show it.

        ``params``: the parameters that made the figure (default: the whole resolved config). In the
        book the figure becomes a numbered figure labelled ``fig-<notebook>-<name>`` whose caption
        ends with the cite line; refer to it with ``{numref}`` in the notebook's markdown. The
        record (also ``figures/<name>.json``) is appended to ``run.figures``.
        """
        from .figures import save_figure

        self._check_dir()
        record = save_figure(
            fig, name, caption, out_dir=self.dir / "figures",
            params=self.cfg.to_dict() if params is None else params,
            provenance=self.provenance, citation_id=f"{self.notebook}/{name}",
        )
        self.figures.append(record)
        self._record_cache_events()
        if show:
            _display_figure(self.dir / "figures" / f"{name}.png", record)
        try:
            import matplotlib.pyplot as plt

            plt.close(fig)  # shown once, by the display above, not again by the inline backend
        except ImportError:
            pass


def _display_figure(png: Path, record: Mapping[str, Any]) -> None:
    """Show the saved PNG in Jupyter, marked so ``cxr book`` turns it into a numbered figure."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    data = {
        "image/png": base64.b64encode(png.read_bytes()).decode(),
        "text/plain": f"<figure {record['figure_id']}: {record['caption'][:60]}>",
    }
    meta = {"cxrlib_figure": {"id": png.stem, "figure_id": record["figure_id"]}, "image/png": {"width": 640}}
    display(data, raw=True, metadata=meta)


def _guess_notebook_stem(cfg: ExperimentConfig) -> str:
    """The notebook running ``cfg`` when run by hand: Jupyter's session name, else the one
    notebook in ``notebooks/`` whose metadata names ``cfg``'s class."""
    session = os.environ.get("JPY_SESSION_NAME", "")  # set by Jupyter Server for a notebook's kernel
    if session.endswith(".ipynb"):
        return Path(session).stem
    try:
        from IPython import get_ipython

        ip = get_ipython()
        session = ip.user_ns.get("__session__") if ip is not None else None
        if isinstance(session, str) and session.endswith(".ipynb"):
            return Path(session).stem
    except ImportError:
        pass
    ref = f"{type(cfg).__module__}:{type(cfg).__qualname__}"
    matches = []
    for nb_path in sorted((project_root() / "notebooks").glob("*.ipynb")):
        try:
            meta = json.loads(nb_path.read_text()).get("metadata", {}).get("cxrlib", {})
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("config") == ref:
            matches.append(nb_path.stem)
    if len(matches) == 1:
        return matches[0]
    raise RuntimeError(
        f"start_run: cannot tell which notebook runs {ref} (candidates: {matches or 'none'}); "
        "pass it explicitly: start_run(cfg, notebook='NN_name')"
    )


def start_run(cfg: ExperimentConfig, notebook: str | None = None, runs_dir: str | os.PathLike | None = None) -> RunContext:
    """The run folder for ``cfg``: the runner's staging folder under ``cxr run``/``cxr book``, else
    ``runs/<notebook>/<profile>-<hash>/`` (created, with ``config.json`` and ``provenance.json``)."""
    from .io import atomic_write_json, atomic_write_text

    staging = os.environ.get(ENV_RUN_DIR)
    if staging:
        expected = os.environ.get(ENV_RUN_HASH)
        if expected and expected != cfg.hash():
            raise RuntimeError(
                f"start_run: the notebook built a config with hash {cfg.hash()}, but the runner resolved {expected} "
                "from the same parameters. Build the config only from the parameters cell (Config.from_notebook(globals())) "
                "without changing values afterwards."
            )
        ctx = RunContext(cfg, Path(staging), os.environ.get(ENV_RUN_NOTEBOOK) or notebook or "notebook", interactive=False)
    else:
        stem = notebook or _guess_notebook_stem(cfg)
        ctx = RunContext(cfg, run_dir_for(stem, cfg, runs_dir), stem, interactive=True)
        ctx.dir.mkdir(parents=True, exist_ok=True)
        # A hand run writes into the final folder; it has no run.json, so `cxr book` reruns it.
        (ctx.dir / RUN_RECORD).unlink(missing_ok=True)
        atomic_write_text(ctx.dir / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        atomic_write_json(ctx.dir / "provenance.json", {**ctx.provenance, "runner": "interactive"})
    (ctx.dir / "figures").mkdir(parents=True, exist_ok=True)
    return ctx
