"""Execute a notebook into its run folder (``cxr run``), and the run's record.

``cxr run NOTEBOOK -p NAME VALUE ... [-f params.yaml] [--profile P]``

1. checks every name against the config's fields (papermill alone would only warn and inject it)
   and every value's type, and resolves the config and its hash (:mod:`cxrlib.notebook_params`);
2. executes the notebook with papermill, injecting the user's parameters and the profile as
   variables after its ``parameters`` cell, into a staging folder, and renames it to
   ``runs/<notebook stem>/<profile>-<config hash>/`` when it has finished. A run folder under its
   final name is therefore always complete; ``run.json`` (written last) records the injected
   parameters and the fingerprint of the run's inputs: config, notebook, the project modules its
   kernel imported, the data manifests and the package versions. papermill runs in a child process
   that dies with the runner; Ctrl-C, ``kill`` or ``kill -9`` never leave a run folder to be served.

Inside the notebook, :mod:`cxrlib.run_context` (``start_run``) writes into the folder it is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from .config import PROFILE_NAMES, ExperimentConfig
from .errors import RunError
from .notebook_params import NotebookSpec, collect_params, read_notebook, resolve_config
from .run_context import ENV_RUN_DIR, ENV_RUN_HASH, ENV_RUN_NOTEBOOK, RUN_RECORD, read_json, run_dir_for, runs_root
from .utils import project_root

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


# papermill's command line, without its warning "Passed unknown parameter: NAME" for a parameter that
# is not in the parameters cell: the runner has checked every name against the config, and the
# notebook reads any config field from its namespace (Config.from_notebook).
_PAPERMILL_MAIN = """\
import logging
from papermill.cli import papermill
class _CheckedByTheRunner(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("Passed unknown parameter")
logging.getLogger("papermill").addFilter(_CheckedByTheRunner())
papermill(prog_name="papermill")
"""


def _papermill(nb_in: Path, nb_out: Path, params_file: Path, cwd: Path, env: Mapping[str, str],
               show_progress: bool, log: Path) -> tuple[int, int]:
    """Run papermill in a child process: its exit code and the peak resident memory (bytes) of it and its
    descendants (:class:`PeakMemory`). On Ctrl-C/SIGTERM kill it (and so its kernel) and re-raise.

    A child, not a call: nbclient traps SIGINT while a cell runs and can hang waiting for a busy
    kernel; killing the child is immediate and leaves nothing running.
    """
    cmd = [sys.executable, "-c", _PAPERMILL_MAIN, str(nb_in), str(nb_out), "-f", str(params_file), "-k", "python3",
           "--language", "python", "--cwd", str(cwd), "--log-level", "WARNING",
           "--progress-bar" if show_progress else "--no-progress-bar"]
    with open(log, "w") as err, _sigterm_as_interrupt():
        proc = subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL, stdout=err,
                                stderr=None if show_progress else err, preexec_fn=_die_with_parent)
        memory = PeakMemory(proc.pid)
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            peak = memory.stop()
        return code, peak


class PeakMemory:
    """The peak of the summed resident memory of process ``pid`` and its descendants (the papermill
    child, its kernel, the executor's workers and DataLoader workers), sampled every ``every`` seconds
    in a thread; :meth:`stop` returns it in bytes (pages two processes share count twice: an upper bound)."""

    def __init__(self, pid: int, every: float = 0.5):
        import threading

        self.pid, self.every, self.peak, self._done = pid, every, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # ended between the listing and the reading
                pass
        return total

    def _watch(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.sample())
            self._done.wait(self.every)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


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
        # config.json before the kernel starts: a chapter reads its own run folder while it runs (its
        # verdicts read the config there, e.g. the percentages of chapter 5's arms), as a hand run does.
        atomic_write_text(staging / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        env = {**os.environ, ENV_RUN_DIR: str(staging), ENV_RUN_HASH: cfg.hash(), ENV_RUN_NOTEBOOK: spec.stem,
               "CXR_RUNS_DIR": str(runs_root(runs_dir))}
        try:
            code, peak_rss = _papermill(nb_in, out_nb, params_file, spec.path.parent, env, show, log)
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
        kernel_side = read_json(staging / "provenance.json") or {}
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
                "parameters": dict(injected), "fingerprint": _fingerprint(inputs), "inputs": inputs, "wall_time_s": round(wall, 3),
                "peak_rss_gb": round(peak_rss / 1e9, 3), "finished": utc_now(), "files": _folder_files(staging),
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


# --- command line ------------------------------------------------------------------------------------
def plan_run(notebook, params: Mapping[str, Any] | None = None, *, profile: str | None = None,
             raw: Mapping[str, str] | None = None, budget_hours: float | None = None) -> str:
    """The cost plan of a run (:mod:`cxrlib.plan`) as text; a UserError if it exceeds ``budget_hours``."""
    from . import plan

    spec = read_notebook(notebook)
    cfg, _ = resolve_config(spec, params or {}, profile, raw=raw)
    sizes, jobs = plan.plan_for(cfg, spec.path.name)
    rates = plan.bench_rates(device=cfg.device)
    est = plan.estimate(jobs, cfg, rates)
    text = plan.plan_text(spec.path.name, cfg, sizes, est, rates)
    plan.check_budget(est, budget_hours)
    return text


def _cmd_run(args) -> int:
    params = collect_params(args.param, args.params_file)
    if args.plan or args.budget is not None:
        text = plan_run(args.notebook, params, profile=args.profile, raw={name: t for name, t in args.param},
                        budget_hours=args.budget)  # over the budget: a UserError, and nothing runs
        if args.plan:
            print(text)
            return 0
    result = run_notebook(args.notebook, params, profile=args.profile, runs_dir=args.runs_dir, force=args.force,
                          raw={name: text for name, text in args.param})  # a RunError is one line (cli.main)
    if result.status == "up-to-date":
        print(f"up to date (complete run with the same config and code; --force reruns it): {result.run_dir}")
    else:
        print(f"ran {result.notebook.name} in {result.wall_time_s:.1f} s: {result.run_dir}")
    return 0


def register_cli(subparsers) -> None:
    """``cxr run``."""
    p = subparsers.add_parser(
        "run", help="execute a notebook with validated parameters into runs/<notebook>/<profile>-<hash>/",
        description="Execute NOTEBOOK with papermill. -p/-f may set any field of the experiment's config, not only "
                    "those in the notebook's parameters cell; every name is checked (unknown names and wrong types "
                    "are errors). Values are YAML literals.",
    )
    p.add_argument("notebook", help="notebooks/NN_name.ipynb")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="set a parameter (VALUE is a YAML literal: 3, 0.5, 1e-3, true, [1, 2], text)")
    p.add_argument("-f", "--params-file", action="append", default=[], metavar="FILE",
                   help="YAML file of NAME: VALUE parameters (before -p; an 'overrides:' mapping is read as more NAME: VALUE)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="smoke | cpu | cpu-full | paper (default: cpu)")
    p.add_argument("--runs-dir", default=None, help="root of run folders (default: $CXR_RUNS_DIR or <project>/runs)")
    p.add_argument("--force", action="store_true", help="rerun even if a complete run with this config exists")
    p.add_argument("--plan", action="store_true",
                   help="print every generator, sampling and classifier job the run needs, the time estimate and the "
                        "memory bound (from make bench's rates), and exit without running")
    p.add_argument("--budget", type=float, default=None, metavar="HOURS",
                   help="refuse to start a run whose planned time exceeds HOURS (naming the parameters to change)")
    p.set_defaults(func=_cmd_run)
