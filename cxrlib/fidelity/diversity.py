"""Within-set diversity: mean pairwise MS-SSIM (torchmetrics), overall and per label.

A set whose images all look alike (mode collapse, memorised templates) has a mean pairwise MS-SSIM
near 1; compare a synthetic set with a real set of the same labels and size.

MS-SSIM at small image sizes
----------------------------
MS-SSIM (Wang et al. 2003) compares images at 5 scales (the image halved 4 times) with an 11-px
Gaussian window (σ = 1.5); torchmetrics requires ``S // (scales - 1)² > kernel - 1``, i.e. at least
176 px for the standard setting. For the study's 32-64 px images :func:`ms_ssim_settings` keeps the
largest number of scales whose coarsest image still holds the window, with a 7-px window (σ = 1.5,
so ±2σ is kept) and the first scales' weights of Wang et al. renormalised to sum to 1:

====== ====== ====== =====================================================
size   scales kernel betas
====== ====== ====== =====================================================
32     3      7      (0.0448, 0.2856, 0.3001) / 0.6305
64     4      7      (0.0448, 0.2856, 0.3001, 0.2363) / 0.8668
128    5      7      Wang et al.'s five
>= 176 5      11     Wang et al.'s five (the standard MS-SSIM)
====== ====== ====== =====================================================

The numbers are therefore comparable only between sets at the same image size. ``normalize="relu"``
(torchmetrics) clips a negative contrast-structure term to 0 at a scale, which two unrelated images
can produce and which would otherwise make the fractional power NaN.
"""

from __future__ import annotations

import numpy as np
import torch

from .features import as_float_images
from .metrics import warn_small_n

WANG_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_settings(size: int) -> tuple[tuple[float, ...], int]:
    """``(betas, kernel_size)`` for ``size``-px images (see the module docstring's table)."""
    for scales in (5, 4, 3, 2):
        coarsest = size // 2 ** (scales - 1)
        for kernel in (11, 9, 7):
            # torchmetrics' own check, and the window must fit in the coarsest image
            if size // max(1, scales - 1) ** 2 > kernel - 1 and coarsest >= kernel:
                betas = np.asarray(WANG_BETAS[:scales])
                return tuple(float(b) for b in betas / betas.sum()), kernel
    raise ValueError(f"MS-SSIM: images of {size} px are too small for 2 scales with a 7-px window (need >= 16 px)")


@torch.no_grad()
def mean_pairwise_ms_ssim(images, *, max_pairs: int = 1000, seed: int = 0, batch_size: int = 256, warn: bool = True, what: str = "") -> dict:
    """Mean MS-SSIM over pairs of distinct images of one set: ``{"value", "n", "n_pairs"}``.

    All ``n(n-1)/2`` pairs when there are at most ``max_pairs``; otherwise ``max_pairs`` pairs of
    distinct images drawn uniformly with ``numpy.random.default_rng(seed)``. Fewer than 2 images
    gives NaN.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    x = as_float_images(images, "ms-ssim images")
    n = len(x)
    if warn:
        warn_small_n("ms_ssim", n, what)
    if n < 2:
        return {"value": float("nan"), "n": n, "n_pairs": 0}
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, max_pairs)
        j = (i + rng.integers(1, n, max_pairs)) % n  # uniform over the other n-1 images
    betas, kernel = ms_ssim_settings(int(x.shape[-1]))
    vals = []
    for s in range(0, len(i), batch_size):
        a, b = x[i[s : s + batch_size]], x[j[s : s + batch_size]]
        vals.append(ms_ssim(a, b, data_range=1.0, kernel_size=kernel, betas=betas, reduction="none", normalize="relu"))
    v = torch.cat(vals).double()
    return {"value": float(v.mean()), "n": n, "n_pairs": int(len(v))}
