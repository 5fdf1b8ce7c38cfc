"""Safe, atomic file I/O shared by every module.

* Writes go to a temporary file in the same folder and are renamed into place, so a killed write
  never leaves a half-written file under the final name.
* Model weights are safetensors; other tensors/state (optimizer, RNG) are loaded with
  ``torch.load(weights_only=True)``, which refuses pickled code. A pickle-based checkpoint from
  elsewhere is refused with a message saying how to convert it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where needed: cache users (Dask workers) need not pay for it
    import torch
from typing import Any, Iterator


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# --- tensors --------------------------------------------------------------------------------------
def save_tensors(path: str | os.PathLike, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None):
    """Write a dict of tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, "torch.Tensor"]:
    """Read safetensors; anything else (a pickle ``.pt``/``.ckpt``) is refused with advice."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsafeCheckpointError(
            f"{path} is not a safetensors file ({e}). cxrlib only reads weights as safetensors. "
            "If you trust the file's origin, convert it once with: python -c \"import torch; "
            "from safetensors.torch import save_file; "
            f"save_file(torch.load('{path}', weights_only=True), 'weights.safetensors')\""
        ) from e


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint is not in a safe format (or contains pickled objects)."""


def safe_torch_load(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors, dicts, lists, numbers only; pickled code is refused."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such state file: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError (or RuntimeError) for disallowed globals
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds pickled Python objects beyond tensors and plain "
            f"containers ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Loading it could run "
            "arbitrary code. Re-save the state with plain tensors, or convert the weights to safetensors."
        ) from e


def safe_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
