"""Small shared helpers: devices, seeds, progress bars."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """Return a torch.device; a requested accelerator that is absent is an error, never a fallback."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={str(device)!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False). Use device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device={str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError(f"device={str(device)!r} was requested but MPS is not available")
    elif dev.type != "cpu":
        raise RuntimeError(f"device={str(device)!r}: unsupported device type {dev.type!r}")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (code should still prefer explicit generators)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from a tuple of ints/strings (stable across machines and Python runs)."""
    import hashlib

    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def progress_disabled() -> bool:
    """tqdm bars are on unless CXR_NO_PROGRESS=1 (set by the tests to keep logs short)."""
    return os.environ.get("CXR_NO_PROGRESS", "") not in ("", "0")


def tqdm(*args, **kwargs):
    # tqdm.std, not tqdm.auto: text bars work in terminals and kernels alike, without ipywidgets
    from tqdm.std import tqdm as _tqdm

    kwargs.setdefault("disable", progress_disabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return _tqdm(*args, **kwargs)


def project_root():
    """The checkout holding this package (where runs/, .cache/ and data_manifests/ live)."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def cache_root():
    """Where cached artifacts live: ``$CXR_CACHE_DIR`` or ``<project>/.cache/cxrlib``."""
    from pathlib import Path

    env = os.environ.get("CXR_CACHE_DIR")
    return Path(env).expanduser() if env else project_root() / ".cache" / "cxrlib"
