"""Run notebooks into run folders (``cxr run``) and publish them as a book (``cxr book``).

A notebook names its experiment's frozen config in its metadata::

    nb.metadata["cxrlib"] = {"config": "cxrlib.experiments.<module>:Config", "title": "..."}

and its ``parameters`` cell holds one flat literal per config field (``None`` = the profile's
value). ``cxr run NOTEBOOK -p NAME VALUE ... [-f params.yaml] [--profile P]``

1. checks every name against the config's fields (papermill alone would only warn and inject it)
   and every value's type (``-p`` values are YAML literals: ``1``, ``0.5``, ``1e-3``, ``true``,
   ``[1, 2]``, ``cuda:0``);
2. resolves the config (``Config.from_params``: defaults <- profile <- parameters) and its hash;
3. executes the notebook with papermill, injecting the user's parameters and the profile, into a
   staging folder, and renames it to ``runs/<notebook stem>/<profile>-<config hash>/`` when it has
   finished. A run folder under its final name is therefore always complete; ``run.json`` (written
   last) records the fingerprint of its inputs: config, notebook, the project modules its kernel
   imported, the data manifests and the package versions. papermill runs in a child process that
   dies with the runner; Ctrl-C, ``kill`` or ``kill -9`` never leave a run folder to be served.

Inside the notebook, right after building its config::

    run = start_run(cfg)                       # the run folder (same path as the runner's)
    run.save_results(df)                       # -> results.csv
    run.save_figure(fig, "auroc-vs-ratio", "AUROC against the synthetic ratio ...")

``start_run`` also works when the notebook is run by hand in Jupyter: it then computes the run
folder itself (from the notebook's name) and writes the config and provenance there.

``cxr book [--profile P]`` runs every ``notebooks/NN_name.ipynb`` (skipping runs that are complete
and unchanged, so an interrupted build resumes), copies the executed notebooks into
``book/chapters/``, builds the HTML with ``jupyter-book build -W -n --keep-going`` and prints a PDF
of the single-page HTML with headless Chromium.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from .config import ConfigError, ExperimentConfig, PROFILE_NAMES
from .utils import project_root

NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_\-]+\.ipynb$")
RUN_RECORD = "run.json"
# Environment variables through which the runner tells the notebook's kernel where its run goes.
ENV_RUN_DIR = "CXR_RUN_DIR"
ENV_RUN_HASH = "CXR_RUN_CONFIG_HASH"
ENV_RUN_NOTEBOOK = "CXR_RUN_NOTEBOOK"


class RunError(RuntimeError):
    """A notebook failed while executing (message names the notebook, the cell and the error)."""


def _user_error(msg: str) -> Exception:
    from .cli import UserError

    return UserError(msg)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- notebooks and their configs --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    path: Path
    config_cls: type
    title: str
    parameter_names: tuple[str, ...]

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def config_ref(self) -> str:
        return f"{self.config_cls.__module__}:{self.config_cls.__qualname__}"


def load_config_class(ref: str, where: str = "") -> type:
    """Import ``"package.module:Class"``; it must subclass :class:`ExperimentConfig`."""
    module_name, sep, cls_name = ref.partition(":")
    if not sep or not module_name or not cls_name:
        raise ValueError(f"{where}config reference {ref!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"{where}config module {module_name!r} cannot be imported ({e})") from e
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ValueError(f"{where}config class {cls_name!r} not found in module {module_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, ExperimentConfig)):
        raise ValueError(f"{where}{ref} is not a subclass of cxrlib.config.ExperimentConfig")
    return cls


def _parameter_cell_names(source: str, path: Path) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"{path}: the parameters cell is not valid Python ({e})") from e
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                names.append(t.id)
    return names


def read_notebook(path: str | os.PathLike) -> NotebookSpec:
    """Read a notebook's config reference and parameters cell, and check they agree."""
    import nbformat

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such notebook: {path}")
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("cxrlib")
    if not isinstance(meta, Mapping) or "config" not in meta:
        raise ValueError(
            f"{path}: notebook metadata has no cxrlib.config; add "
            '{"cxrlib": {"config": "cxrlib.experiments.<module>:Config", "title": "..."}} to the notebook metadata'
        )
    cls = load_config_class(str(meta["config"]), where=f"{path}: ")
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one code cell tagged 'parameters', found {len(cells)}")
    names = _parameter_cell_names(cells[0].source, path)
    fields = cls.field_names()
    unknown = [n for n in names if n not in fields]
    missing = [f for f in fields if f not in names]
    if unknown or missing:
        raise ValueError(
            f"{path}: the parameters cell does not match {meta['config']}: "
            + "; ".join(s for s in (f"not config fields: {unknown}" if unknown else "",
                                    f"config fields missing from the cell: {missing}" if missing else "") if s)
        )
    title = str(meta.get("title") or path.stem)
    return NotebookSpec(path=path, config_cls=cls, title=title, parameter_names=tuple(names))


# --- parameters ---------------------------------------------------------------------------------------
def _yaml_loader():
    """PyYAML's SafeLoader, also reading ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def parse_value(text: str) -> Any:
    """A ``-p`` value as a YAML literal: ``1`` -> 1, ``0.5`` -> 0.5, ``true`` -> True, ``[1,2]``,
    ``null`` -> None, anything else -> the string."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError:
        return text


def collect_params(pairs: list[tuple[str, str]] | None = None, files: list[str] | None = None) -> dict[str, Any]:
    """Parameters from ``-f`` YAML files (in order) then ``-p NAME VALUE`` pairs (later wins)."""
    import yaml

    params: dict[str, Any] = {}
    for f in files or []:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"no such parameter file: {p}")
        data = yaml.load(p.read_text(), Loader=_yaml_loader())
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ValueError(f"parameter file {p}: expected a mapping of NAME: VALUE, got {type(data).__name__}")
        params.update({str(k): v for k, v in data.items()})
    for name, value in pairs or []:
        params[name] = parse_value(value)
    return params


def _wants_text(tp: Any) -> bool:
    """True for ``str``, ``str | None`` and ``Literal["a", "b"]`` fields."""
    import typing

    if tp is str:
        return True
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return all(isinstance(a, str) for a in args)
    return bool(args) and all(_wants_text(a) for a in args)


def resolve_config(spec: NotebookSpec, params: Mapping[str, Any], profile: str | None = None,
                   raw: Mapping[str, str] | None = None):
    """Validate ``params`` against the notebook's config and resolve it.

    ``raw``: the command-line text of ``-p`` values; a text field keeps the text as typed (``-p
    label yes`` is the string "yes", not YAML's True; ``-p run_id 007`` stays "007").
    Returns ``(cfg, injected)``: the resolved config and the parameters to inject with papermill
    (the user's own, plus ``profile``; the notebook resolves the rest exactly as here).
    """
    import typing

    params = dict(params)
    spec.config_cls.check_names(params)  # unknown / mistyped name: ConfigError listing the valid ones
    hints = typing.get_type_hints(spec.config_cls)
    for name, text in (raw or {}).items():
        if name in params and not isinstance(params[name], str) and params[name] is not None and _wants_text(hints[name]):
            params[name] = text
    if profile is not None and params.get("profile") not in (None, profile):
        raise ConfigError(f"profile given twice: --profile {profile} and -p profile {params['profile']}")
    profile = profile or params.get("profile") or spec.config_cls.profile
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"profile {profile!r} is not one of {list(PROFILE_NAMES)}")
    params["profile"] = profile
    cfg = spec.config_cls.from_params(params)
    # papermill writes Python literals; a tuple is written as a list and coerced back by the config.
    injected = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    return cfg, injected


# --- run folders -------------------------------------------------------------------------------------
def runs_root(runs_dir: str | os.PathLike | None = None) -> Path:
    """``runs_dir``, else env ``CXR_RUNS_DIR``, else ``<project>/runs``."""
    if runs_dir is not None:
        return Path(runs_dir).resolve()
    env = os.environ.get("CXR_RUNS_DIR")
    return Path(env).resolve() if env else project_root() / "runs"


def run_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.profile}-{cfg.hash()}"


def run_dir_for(stem: str, cfg: ExperimentConfig, runs_dir: str | os.PathLike | None = None) -> Path:
    """``runs/<notebook stem>/<profile>-<config hash>/``."""
    return runs_root(runs_dir) / stem / run_name(cfg)


# Appended to the notebook for the run and removed from the executed copy: records which of the
# project's Python files the kernel imported, so a finished run is redone only when one of them (or
# the notebook, the config or a data manifest) changes, not on any edit anywhere in the library.
_EPILOGUE_TAG = "cxrlib-epilogue"
_EPILOGUE = """\
import json as _cxr_json, os as _cxr_os, sys as _cxr_sys
_cxr_root = {root!r}
_cxr_files = sorted({{
    _cxr_os.path.realpath(_m.__file__) for _m in list(_cxr_sys.modules.values())
    if isinstance(getattr(_m, "__file__", None), str)
    and _cxr_os.path.realpath(_m.__file__).startswith(_cxr_root + _cxr_os.sep)
    and "site-packages" not in _m.__file__ and _m.__file__.endswith(".py")
}})
with open({out!r}, "w") as _cxr_f:
    _cxr_json.dump(_cxr_files, _cxr_f)
"""


def _with_epilogue(spec: NotebookSpec, out: Path):
    import nbformat

    nb = nbformat.read(spec.path, as_version=4)
    cell = nbformat.v4.new_code_cell(_EPILOGUE.format(root=str(project_root()), out=str(out)))
    cell.metadata["tags"] = [_EPILOGUE_TAG]
    nb.cells.append(cell)
    return nb


def _finalize_notebook(path: Path, source: Path, final: Path) -> None:
    """Drop the epilogue cell; record the real input/output paths (not the staging copies)."""
    import nbformat

    from .io import atomic_write_text

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if _EPILOGUE_TAG not in c.get("metadata", {}).get("tags", [])]
    if "papermill" in nb.metadata:
        nb.metadata.papermill["input_path"] = str(source)
        nb.metadata.papermill["output_path"] = str(final)
    atomic_write_text(path, nbformat.writes(nb))


def run_inputs(spec: NotebookSpec, cfg: ExperimentConfig, code_files) -> dict[str, Any]:
    """What a finished run depends on: its config, the notebook, the project's code files its
    kernel imported and the data manifests (each as sha256), and the versions of the packages."""
    from .provenance import file_hashes, manifest_hashes, package_versions

    return {
        "config": cfg.to_dict(),
        "notebook": file_hashes([spec.path]),
        "code": file_hashes(code_files),
        "data_manifests": manifest_hashes(),
        "packages": package_versions(),
    }


def _fingerprint(inputs: Mapping[str, Any]) -> str:
    from .config import stable_hash

    return stable_hash(inputs, n=64)


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RUN_RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(run_dir: Path, spec: NotebookSpec | None = None, cfg: ExperimentConfig | None = None) -> bool:
    """A run folder is complete when its ``run.json`` exists and its files match the sha256 recorded
    there; given ``spec`` and ``cfg``, also when none of its inputs (:func:`run_inputs`) changed."""
    from .io import sha256_file

    rec = read_run_record(run_dir)
    if rec is None:
        return False
    if spec is not None and cfg is not None:
        code_files = list(rec.get("inputs", {}).get("code", {}))
        if rec.get("fingerprint") != _fingerprint(run_inputs(spec, cfg, code_files)):
            return False
    for rel, digest in rec.get("files", {}).items():
        f = run_dir / rel
        if not f.is_file() or sha256_file(f) != digest:
            return False
    return True


def _folder_files(folder: Path) -> dict[str, str]:
    from .io import sha256_file

    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != RUN_RECORD and ".ipynb_checkpoints" not in p.parts
    }


@dataclasses.dataclass
class RunResult:
    notebook: Path
    run_dir: Path
    config: ExperimentConfig
    status: str  # "ran" | "up-to-date"
    wall_time_s: float


def _notebook_error(path: Path) -> str | None:
    """``cell [n] raised Name: message`` from the first error output of an executed notebook."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # a notebook killed mid-write cannot be read; the caller says so
        return None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                evalue = str(out.get("evalue", "")).strip().splitlines()
                where = f"cell [{cell.get('execution_count')}]" if cell.get("execution_count") else "a cell"
                return f"{where} raised {out.get('ename')}: {evalue[0] if evalue else ''}"
    return None


def _die_with_parent() -> None:
    """In the papermill child: get SIGKILL when the runner dies, even by SIGKILL (Linux prctl).
    The kernel then exits too (ipykernel polls its parent), so nothing outlives a killed runner."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the runner still kills the child on SIGINT/SIGTERM


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """``kill <runner>`` (SIGTERM) cleans up like Ctrl-C instead of dying without cleanup."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _papermill(nb_in: Path, nb_out: Path, params_file: Path, cwd: Path, env: Mapping[str, str],
               show_progress: bool, log: Path) -> int:
    """Run papermill in a child process; on Ctrl-C/SIGTERM kill it (and so its kernel) and re-raise.

    A child, not a call: nbclient traps SIGINT while a cell runs and can hang waiting for a busy
    kernel; killing the child is immediate and leaves nothing running.
    """
    cmd = [sys.executable, "-m", "papermill", str(nb_in), str(nb_out), "-f", str(params_file), "-k", "python3",
           "--language", "python", "--cwd", str(cwd), "--log-level", "WARNING",
           "--progress-bar" if show_progress else "--no-progress-bar"]
    with open(log, "w") as err, _sigterm_as_interrupt():
        proc = subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL, stdout=err,
                                stderr=None if show_progress else err, preexec_fn=_die_with_parent)
        try:
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def execute(
    spec: NotebookSpec,
    cfg: ExperimentConfig,
    injected: Mapping[str, Any],
    *,
    runs_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> RunResult:
    """Execute ``spec`` with papermill into its run folder (see the module docstring)."""
    import nbformat
    import yaml
    from filelock import FileLock

    from .io import atomic_write_json, atomic_write_text
    from .provenance import collect, utc_now
    from .utils import progress_disabled

    final = run_dir_for(spec.stem, cfg, runs_dir)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    # One runner per run folder at a time (two `cxr book` processes, or a book and a `cxr run`).
    with FileLock(str(parent / f".{final.name}.lock")):
        if not force and is_complete(final, spec, cfg):
            rec = read_run_record(final) or {}
            return RunResult(spec.path, final, cfg, "up-to-date", float(rec.get("wall_time_s") or 0.0))
        # Leftovers of an interrupted run of this folder are never served: remove them.
        for stale in parent.glob(f".{final.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = parent / f".{final.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        staging.mkdir()
        out_nb = staging / spec.path.name
        started = utc_now()
        t0 = time.perf_counter()
        show = (not progress_disabled()) if progress is None else progress
        nb_in = staging / f".input-{spec.path.name}"
        params_file = staging / ".parameters.yaml"
        log = staging / ".papermill.log"
        atomic_write_text(nb_in, nbformat.writes(_with_epilogue(spec, staging / "code_files.json")))
        atomic_write_text(params_file, yaml.safe_dump(dict(injected), sort_keys=True))
        env = {**os.environ, ENV_RUN_DIR: str(staging), ENV_RUN_HASH: cfg.hash(), ENV_RUN_NOTEBOOK: spec.stem,
               "CXR_RUNS_DIR": str(runs_root(runs_dir))}
        try:
            code = _papermill(nb_in, out_nb, params_file, spec.path.parent, env, show, log)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # interrupted: nothing half-written remains
            raise
        for tmp_file in (nb_in, params_file):
            tmp_file.unlink(missing_ok=True)
        if code != 0 or not (staging / "code_files.json").is_file():
            why = _notebook_error(out_nb) if out_nb.is_file() else None
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.is_file() else []
            failed = parent / f"{final.name}.failed"
            shutil.rmtree(failed, ignore_errors=True)
            os.rename(staging, failed)
            detail = why or ("papermill exited with code %d: %s" % (code, " | ".join(tail) or "no output"))
            raise RunError(
                f"notebook {spec.path} failed: {detail}. The executed notebook with the full traceback is in "
                f"{failed / spec.path.name}"
            )
        log.unlink(missing_ok=True)
        _finalize_notebook(out_nb, spec.path, final / spec.path.name)
        wall = time.perf_counter() - t0
        code_files = json.loads((staging / "code_files.json").read_text())
        (staging / "code_files.json").unlink()
        inputs = run_inputs(spec, cfg, code_files)
        # The run's record: config, provenance, then run.json last (its presence = complete).
        atomic_write_text(staging / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        kernel_side = _read_json(staging / "provenance.json") or {}
        atomic_write_json(
            staging / "provenance.json",
            collect(
                profile=cfg.profile, device=cfg.device, wall_time_s=wall, started=started,
                notebook=str(spec.path.relative_to(project_root())) if spec.path.is_relative_to(project_root()) else str(spec.path),
                config_class=spec.config_ref, config_hash=cfg.hash(), parameters=dict(injected),
                runner="cxr run (papermill)", cache_events=kernel_side.get("cache_events", []),
            ),
        )
        atomic_write_json(
            staging / RUN_RECORD,
            {
                "notebook": spec.path.name, "title": spec.title, "profile": cfg.profile, "config_hash": cfg.hash(),
                "fingerprint": _fingerprint(inputs), "inputs": inputs, "wall_time_s": round(wall, 3),
                "finished": utc_now(), "files": _folder_files(staging),
            },
        )
        # Commit: move any older folder aside, then one rename publishes the complete run.
        if final.exists():
            trash = parent / f".{final.name}.old-{uuid.uuid4().hex[:6]}"
            os.rename(final, trash)
            os.rename(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, final)
        shutil.rmtree(parent / f"{final.name}.failed", ignore_errors=True)
    return RunResult(spec.path, final, cfg, "ran", wall)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_notebook(
    notebook: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    *,
    profile: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool | None = None,
    raw: Mapping[str, str] | None = None,
) -> RunResult:
    """Validate ``params``, resolve the config and execute the notebook into its run folder."""
    spec = read_notebook(notebook)
    cfg, injected = resolve_config(spec, params or {}, profile, raw=raw)
    return execute(spec, cfg, injected, runs_dir=runs_dir, force=force, progress=progress)


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
                "from the same parameters. Build the config only from the parameters cell (Config.from_params(...)) "
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


# --- the book ----------------------------------------------------------------------------------------
def book_dir() -> Path:
    return project_root() / "book"


def planned_chapters(book: Path) -> list[dict[str, Any]]:
    """The rows of ``book/chapters.yml``: ``{"number": 3, "title": ...}``."""
    import yaml

    f = book / "chapters.yml"
    if not f.is_file():
        return []
    return list((yaml.safe_load(f.read_text()) or {}).get("chapters", []))


def discover_notebooks(notebooks_dir: Path) -> list[Path]:
    """``notebooks/NN_name.ipynb`` in chapter order."""
    return sorted(p for p in notebooks_dir.glob("*.ipynb") if NOTEBOOK_RE.match(p.name))


def _md_cell(text: str):
    import nbformat

    return nbformat.v4.new_markdown_cell(text)


# A tqdm progress line ("name:  40%|####  | 4/10 [00:07<00:09, 1.67s/batch]") and tqdm's warning that
# ipywidgets is missing (which carries an external URL): noise in a printed chapter, not results.
_PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?\s*\[.*\]\s*$")
_TQDM_WARNING = re.compile(r"^.*TqdmWarning: IProgress not found.*$|^\s*from \.autonotebook import tqdm as notebook_tqdm\s*$")


def _without_progress(text: str) -> str:
    """``text`` (a stderr stream) without progress-bar lines and tqdm's ipywidgets warning."""
    kept = []
    for line in text.split("\n"):
        last = line.split("\r")[-1]  # what a terminal would show after carriage returns
        if _PROGRESS_LINE.match(last) or _TQDM_WARNING.match(last):
            continue
        kept.append(last)
    return "\n".join(kept)


def _figure_markdown(stem: str, fig_id: str, record: Mapping[str, Any], files_dir: str) -> str:
    label = f"fig-{stem}-{fig_id}".lower()
    base = f"{files_dir}/figures/{fig_id}"
    downloads = ", ".join(f"{{download}}`{fmt.upper()} <{base}.{fmt}>`" for fmt in ("png", "pdf", "svg", "json"))
    caption = " ".join(str(record["caption"]).split())
    return (
        f":::{{figure}} {base}.png\n:name: {label}\n:width: 90%\n\n"
        f"{caption} *Cite this figure:* {record['cite']} Files: {downloads}.\n:::\n"
    )


def prepare_chapter(run_dir: Path, chapters_dir: Path, stem: str, title: str, rerun_hint: str) -> Path:
    """Copy an executed notebook into the book: figures become numbered, labelled, citable MyST
    figures; progress bars are dropped from stderr (the run folder keeps the notebook as executed);
    the chapter ends with the run record. Returns the chapter's path."""
    import nbformat

    files_name = f"{stem}_files"
    files_dir = chapters_dir / files_name
    if files_dir.exists():
        shutil.rmtree(files_dir)
    files_dir.mkdir(parents=True)
    for item in ("figures", "config.json", "provenance.json", RUN_RECORD):
        src = run_dir / item
        if src.is_dir():
            shutil.copytree(src, files_dir / item)
        elif src.is_file():
            shutil.copy2(src, files_dir / item)
    tables = sorted(p.name for p in run_dir.glob("*.csv"))
    for t in tables:
        shutil.copy2(run_dir / t, files_dir / t)

    nb = nbformat.read(run_dir / f"{stem}.ipynb", as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        keep, figs = [], []
        for out in cell.get("outputs", []):
            fig = out.get("metadata", {}).get("cxrlib_figure")
            if fig and (files_dir / "figures" / f"{fig['id']}.json").is_file():
                figs.append(fig["id"])
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = _without_progress(out.get("text", ""))
                if text.strip():
                    out["text"] = text
                    keep.append(out)
            else:
                keep.append(out)
        cell.outputs = keep
        cells.append(cell)
        for fig_id in figs:
            record = json.loads((files_dir / "figures" / f"{fig_id}.json").read_text())
            cells.append(_md_cell(_figure_markdown(stem, fig_id, record, files_name)))
    first_md = next((c for c in cells if c.cell_type == "markdown"), None)
    if first_md is None or not first_md.source.lstrip().startswith("# "):
        cells.insert(0, _md_cell(f"# {title}"))
    rec = read_run_record(run_dir) or {}
    prov = _read_json(run_dir / "provenance.json") or {}
    git = prov.get("git", {})
    commit = (git.get("commit") or "none")[:12] + (" (with uncommitted changes)" if git.get("dirty") else "")
    links = ", ".join(f"{{download}}`{n} <{files_name}/{n}>`" for n in ["config.json", "provenance.json", *tables])
    cells.append(_md_cell(
        "## Run record\n\n"
        f"This chapter is the notebook `{stem}.ipynb` as executed by `cxr run`: profile `{rec.get('profile')}`, "
        f"configuration hash `{rec.get('config_hash')}`, wall time {float(rec.get('wall_time_s') or 0):.1f} s, "
        f"code commit `{commit}`, finished {rec.get('finished')}. Files: {links}.\n\n"
        f"Rerun it with `{rerun_hint}` (add `-p NAME VALUE` to change a parameter)."
    ))
    nb.cells = cells
    out = chapters_dir / f"{stem}.ipynb"
    nbformat.write(nb, out)
    return out


def _status_page(rows: list[dict[str, Any]], profile: str) -> str:
    lines = [
        "# Build status",
        "",
        f"Experiment chapters of this build (profile `{profile}`). A chapter is *missing* until its "
        "notebook `notebooks/NN_name.ipynb` exists; *failed* means the notebook raised an error and is not shown.",
        "",
        "| # | chapter | notebook | status | run | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = f"{r['wall_time_s']:.1f}" if r.get("wall_time_s") is not None else ""
        run = f"`{r['run']}`" if r.get("run") else ""
        nb = f"`{r['notebook']}`" if r.get("notebook") else ""
        status = r["status"].replace("|", "\\|").replace("`", "'").replace("{", "(").replace("}", ")")
        status = status if status in ("ran", "up to date") else f"**{status}**"
        lines.append(f"| {r.get('number', '')} | {r['title']} | {nb} | {status} | {run} | {wall} |")
    return "\n".join(lines) + "\n"


def _jupyter_book(args: list[str], log: Path, what: str) -> None:
    """Run the jupyter-book CLI, logging to ``log``; on failure show the log's errors."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", *args]
    t0 = time.perf_counter()
    _say(f"[book] {what} ...")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=project_root(), text=True)
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or "There was an error in building your book" in text:
        errors = [ln for ln in text.splitlines() if re.search(r"(WARNING:|ERROR:|Error:|Exception|Traceback)", ln)][:25]
        raise _user_error(f"{what} failed (exit {proc.returncode}); full log: {log}\n" + "\n".join(errors))
    _say(f"[book] {what}: done in {time.perf_counter() - t0:.0f} s")


def chromium_path() -> str:
    exe = os.environ.get("CXR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise _user_error("chromium is needed to print the PDF: install Debian's 'chromium' package "
                          "(or set CXR_CHROMIUM), or pass --no-pdf")
    return exe


# Headless Chromium, offline and quiet: no sandbox (containers), no GPU, no network side traffic.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--disable-sync", "--disable-extensions",
    "--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=30000",
)


def print_pdf(html: Path, pdf: Path, timeout: float = 600) -> Path:
    """Print ``html`` to ``pdf`` with headless Chromium (MathJax is typeset before printing)."""
    from .io import atomic_path

    exe = chromium_path()
    _say(f"[book] printing PDF with {exe} ...")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr-chromium-") as profile_dir, atomic_path(pdf) as tmp:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--print-to-pdf={tmp}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0 or tmp.read_bytes()[:5] != b"%PDF-":
            raise _user_error(f"chromium could not print {html} to PDF (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    _say(f"[book] PDF: {pdf} ({pdf.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.0f} s)")
    return pdf


@dataclasses.dataclass
class BookResult:
    html: Path
    pdf: Path | None
    chapters: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    wall_time_s: float


def build_book(
    profile: str = "cpu",
    *,
    book: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    pdf: bool = True,
    force: bool = False,
) -> BookResult:
    """Run every notebook at ``profile`` (resuming), copy them into the book, build HTML (+ PDF)."""
    from .utils import tqdm

    t0 = time.perf_counter()
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"--profile {profile!r} is not one of {list(PROFILE_NAMES)}")
    book = Path(book).resolve() if book else book_dir()
    if not (book / "_config.yml").is_file():
        raise FileNotFoundError(f"no Jupyter Book at {book} (expected {book / '_config.yml'})")
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir else project_root() / "notebooks"
    notebooks = discover_notebooks(notebooks_dir) if notebooks_dir.is_dir() else []
    planned = {int(c["number"]): c for c in planned_chapters(book)}
    by_number = {int(NOTEBOOK_RE.match(p.name).group(1)): p for p in notebooks}
    missing = [c for n, c in sorted(planned.items()) if n not in by_number]
    _say(f"[book] profile {profile}: {len(notebooks)} notebook(s) in {notebooks_dir}")
    if missing:
        _say("[book] missing chapters (no notebooks/NN_*.ipynb yet; the book is built without them): "
             + "; ".join(f"{c['number']:02d} {c['title']}" for c in missing))

    # 1. Run the notebooks (finished, unchanged runs are skipped: an interrupted build resumes).
    chapters, failed, rows = [], [], []
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for nb_path in bar:
        number = int(NOTEBOOK_RE.match(nb_path.name).group(1))
        row = {"number": number, "title": planned.get(number, {}).get("title", nb_path.stem), "notebook": nb_path.name}
        bar.set_postfix_str(nb_path.stem)
        try:
            spec = read_notebook(nb_path)
            row["title"] = spec.title
            cfg, injected = resolve_config(spec, {}, profile)
            _say(f"[book] {nb_path.name}: run folder {run_dir_for(spec.stem, cfg, runs_dir)}")
            result = execute(spec, cfg, injected, runs_dir=runs_dir, force=force)
        except (RunError, ValueError, ImportError) as e:
            _say(f"[book] {nb_path.name}: FAILED: {e}")
            row.update(status=f"failed: {str(e).splitlines()[0][:200]}")
            failed.append(row)
            rows.append(row)
            continue
        verb = "up to date (not rerun)" if result.status == "up-to-date" else f"ran in {result.wall_time_s:.1f} s"
        _say(f"[book] {nb_path.name}: {verb}")
        row.update(status="up to date" if result.status == "up-to-date" else "ran", run=str(result.run_dir.name),
                   wall_time_s=result.wall_time_s, run_dir=result.run_dir, spec=spec)
        chapters.append(row)
        rows.append(row)
    for c in missing:
        rows.append({"number": c["number"], "title": c["title"], "status": "missing"})
    rows.sort(key=lambda r: r["number"])

    # 2. The book's generated chapters: executed notebooks + the status page.
    chapters_dir = book / "chapters"
    if chapters_dir.exists():
        shutil.rmtree(chapters_dir)
    chapters_dir.mkdir()
    from .io import atomic_write_text

    for row in chapters:
        spec = row["spec"]
        nb_rel = os.path.relpath(spec.path, project_root())
        prepare_chapter(row["run_dir"], chapters_dir, spec.stem, spec.title, f"cxr run {nb_rel} --profile {profile}")
    atomic_write_text(chapters_dir / "status.md", _status_page(rows, profile))
    if not chapters:  # the TOC's chapter glob must match something, or Sphinx warns (an error with -W)
        atomic_write_text(chapters_dir / "00_no_experiments.md",
                          "# No experiment chapters yet\n\nNo notebook has run successfully for this build; "
                          "see {doc}`status`.\n")

    # 3. HTML (warnings are errors), then the single-page HTML printed to PDF.
    build = book / "_build"
    _jupyter_book(["build", str(book), "--all", "-W", "-n", "--keep-going"], build / "logs" / "html.log", "building HTML")
    pdf_path = None
    if pdf:
        _jupyter_book(["build", str(book), "--all", "--builder", "singlehtml", "-W", "-n", "--keep-going"],
                      build / "logs" / "singlehtml.log", "building single-page HTML for the PDF")
        pdf_path = print_pdf(build / "singlehtml" / "index.html", build / "pdf" / "book.pdf")
    wall = time.perf_counter() - t0
    html = build / "html" / "index.html"
    _say(f"[book] HTML: {html}")
    _say(f"[book] {len(chapters)} chapter(s) built, {len(missing)} missing, {len(failed)} failed; {wall:.0f} s in total")
    for r in chapters:
        r.pop("spec", None)
    return BookResult(html, pdf_path, chapters, missing, failed, wall)


# --- command line ------------------------------------------------------------------------------------
def _cmd_run(args) -> int:
    params = collect_params(args.param, args.params_file)
    try:
        result = run_notebook(args.notebook, params, profile=args.profile, runs_dir=args.runs_dir, force=args.force,
                              raw={name: text for name, text in args.param})
    except RunError as e:
        raise _user_error(str(e)) from e
    if result.status == "up-to-date":
        print(f"up to date (complete run with the same config and code; --force reruns it): {result.run_dir}")
    else:
        print(f"ran {result.notebook.name} in {result.wall_time_s:.1f} s: {result.run_dir}")
    return 0


def _cmd_book(args) -> int:
    result = build_book(args.profile, book=args.book_dir, notebooks_dir=args.notebooks_dir, runs_dir=args.runs_dir,
                        pdf=not args.no_pdf, force=args.force)
    print(f"HTML: {result.html}")
    if result.pdf:
        print(f"PDF:  {result.pdf}")
    if result.missing:
        print("missing chapters: " + ", ".join(f"{c['number']:02d} {c['title']}" for c in result.missing))
    if result.failed:
        print("FAILED notebooks (not in the book): " + ", ".join(r["notebook"] for r in result.failed))
        return 1
    return 0


def register_cli(subparsers) -> None:
    """``cxr run`` and ``cxr book``."""
    p = subparsers.add_parser(
        "run", help="execute a notebook with validated parameters into runs/<notebook>/<profile>-<hash>/",
        description="Execute NOTEBOOK with papermill. Every -p/-f name is checked against the experiment's config "
                    "(unknown names and wrong types are errors); values are YAML literals.",
    )
    p.add_argument("notebook", help="notebooks/NN_name.ipynb")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="set a parameter (VALUE is a YAML literal: 3, 0.5, 1e-3, true, [1, 2], text)")
    p.add_argument("-f", "--params-file", action="append", default=[], metavar="FILE",
                   help="YAML file of NAME: VALUE parameters (before -p)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="smoke | cpu | paper (default: cpu)")
    p.add_argument("--runs-dir", default=None, help="root of run folders (default: $CXR_RUNS_DIR or <project>/runs)")
    p.add_argument("--force", action="store_true", help="rerun even if a complete run with this config exists")
    p.set_defaults(func=_cmd_run)

    b = subparsers.add_parser("book", help="run every notebook at a profile and build the book (HTML + PDF)")
    b.add_argument("--profile", choices=PROFILE_NAMES, default="cpu", help="profile for every notebook (default: cpu)")
    b.add_argument("--runs-dir", default=None, help="root of run folders (default: $CXR_RUNS_DIR or <project>/runs)")
    b.add_argument("--book-dir", default=None, help="the Jupyter Book folder (default: <project>/book)")
    b.add_argument("--notebooks-dir", default=None, help="where NN_name.ipynb notebooks are (default: <project>/notebooks)")
    b.add_argument("--no-pdf", action="store_true", help="build the HTML only")
    b.add_argument("--force", action="store_true", help="rerun every notebook even if its run is complete")
    b.set_defaults(func=_cmd_book)
