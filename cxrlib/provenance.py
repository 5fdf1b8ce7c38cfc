"""Where a result came from: the project, its code, its data manifests, the machine.

``collect()`` returns the ``provenance.json`` of a run folder::

    {"git": {"commit": "3f2a...", "dirty": false}, "packages": {"torch": "2.14.1", ...},
     "data_manifests": {"data_manifests/splits.csv": "<sha256>", ...}, "profile": "cpu",
     "device": "cpu", "hostname": ..., "python": "3.11.9", "platform": ..., "wall_time_s": 812.4, ...}

``file_hashes()`` hashes the files a run depended on (the notebook, the project's Python modules
its kernel imported, the data manifests); ``cxr book`` reruns a finished notebook only when one of
them, or its configuration, changed.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .utils import project_root

# The packages whose versions decide a result; recorded in every run's provenance.
PACKAGES = (
    "cxrlib", "torch", "torchvision", "diffusers", "accelerate", "safetensors", "torchxrayvision",
    "torchmetrics", "scikit-learn", "scipy", "statsmodels", "numpy", "pandas", "pillow",
    "matplotlib", "seaborn", "papermill", "nbclient", "jupyter-book", "myst-nb", "dask", "distributed",
)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}``; None when git or the repository is absent
    (a run from a tarball is still recorded, with the reason)."""
    root = root or project_root()

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"commit": None, "dirty": None, "note": f"git unavailable: {e}"}
    commit = head.stdout.strip() if head.returncode == 0 else None
    note = None if commit else (head.stderr.strip().splitlines() or ["no commit"])[0]
    # Uncommitted edits to tracked files mean the commit alone does not reproduce the run.
    dirty = bool(status.stdout.strip()) if status.returncode == 0 and commit else None
    out: dict[str, Any] = {"commit": commit, "dirty": dirty}
    if note:
        out["note"] = note
    return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def manifest_hashes(root: Path | None = None) -> dict[str, str]:
    """sha256 of every file under ``data_manifests/`` (the frozen splits a run read)."""
    from .io import sha256_file

    root = root or project_root()
    folder = root / "data_manifests"
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def device_info(device: str | None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"requested": device, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda_version"] = torch.version.cuda
    return info


def collect(*, profile: str | None = None, device: str | None = None, wall_time_s: float | None = None,
            **extra: Any) -> dict[str, Any]:
    """The provenance record of a run (see the module docstring); ``extra`` keys are added as-is."""
    root = project_root()
    record = {
        "created": utc_now(),
        "git": git_state(root),
        "packages": package_versions(),
        "data_manifests": manifest_hashes(root),
        "profile": profile,
        "device": device_info(device),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    record.update(extra)
    return record


def file_hashes(paths) -> dict[str, str | None]:
    """``{path relative to the project (or absolute): sha256}``; None for a file that is gone."""
    from .io import sha256_file

    root = project_root()
    out: dict[str, str | None] = {}
    for p in paths:
        p = Path(p)
        full = p if p.is_absolute() else root / p
        try:
            rel = full.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(full)
        out[rel] = sha256_file(full) if full.is_file() else None
    return dict(sorted(out.items()))
