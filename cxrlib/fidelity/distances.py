r"""Euclidean distances between feature (or pixel) vectors that hold on any CPU and BLAS.

The matrix-multiply form :math:`\lVert a\rVert^2 + \lVert b\rVert^2 - 2\,a^\top b` is several times
faster than differencing, but it is not exact: its error is bounded by the dot-product round-off
(Higham 2002, §3.1),

.. math:: \bigl|\mathrm{fl}(d^2) - d^2\bigr| \le \gamma\,(\lVert a\rVert^2 + \lVert b\rVert^2),
          \qquad \gamma = 2\,(D + 2)\,u ,

with :math:`u` the unit round-off of float64 and :math:`D` the dimension. Within that band the
value is whatever the BLAS kernel (MKL, OpenBLAS; AVX2, AVX-512) happens to round to: an image and
its exact copy come out at ~1e-7 on one machine and 0 on another. Any decision there ("is this an
exact copy?", "is this point inside that k-NN ball?") would compare round-off to round-off.

So every entry whose matrix-product value lies in the band is **recomputed exactly** from the
difference :math:`\sum_i (a_i - b_i)^2`, which is 0 for identical vectors on every machine (the
difference of equal floats is exactly 0). Entries outside the band keep the fast value; their
relative error is below :math:`\gamma (\lVert a\rVert^2 + \lVert b\rVert^2) / d^2 < 1`, far from any
decision threshold of the audits.
"""

from __future__ import annotations

import numpy as np
import torch

EPS64 = float(np.finfo(np.float64).eps)


def roundoff_band(sq_a: torch.Tensor, sq_b: torch.Tensor, dim: int) -> torch.Tensor:
    """``[len(a), len(b)]`` bound on the round-off of the matrix-multiply squared distance (module docstring)."""
    return 2.0 * (dim + 2) * EPS64 * (sq_a[:, None] + sq_b[None, :])


def _mm_squared(a: torch.Tensor, b: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor) -> torch.Tensor:
    """The fast matrix-multiply squared distances (clamped at 0)."""
    return (sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _exact_squared(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Squared distances of the pairs ``(a[rows], b[cols])`` by differencing (exactly 0 for copies)."""
    out = torch.empty(len(rows), dtype=torch.float64)
    for s in range(0, len(rows), 4096):  # bound the [pairs, D] temporary
        r, c = rows[s : s + 4096], cols[s : s + 4096]
        out[s : s + 4096] = (a[r] - b[c]).pow(2).sum(1)
    return out


def _as64(x, where: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2:
        raise ValueError(f"{where}: expected vectors [N, D], got shape {tuple(t.shape)}")
    return t


def pairwise_distances(a, b, block: int = 2048) -> np.ndarray:
    """Euclidean distances ``[len(a), len(b)]`` (float64): the matrix-multiply form, with every entry in
    its round-off band recomputed exactly (identical vectors: exactly 0 on every machine)."""
    ta, tb = _as64(a, "pairwise_distances(a)"), _as64(b, "pairwise_distances(b)")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"pairwise_distances: dimensions {ta.shape[1]} and {tb.shape[1]} differ")
    sq_a, sq_b = ta.pow(2).sum(1), tb.pow(2).sum(1)
    out = torch.empty(len(ta), len(tb), dtype=torch.float64)
    for s in range(0, len(ta), block):
        d2 = _mm_squared(ta[s : s + block], tb, sq_a[s : s + block], sq_b)
        rows, cols = torch.nonzero(d2 <= roundoff_band(sq_a[s : s + block], sq_b, ta.shape[1]), as_tuple=True)
        if len(rows):
            d2[rows, cols] = _exact_squared(ta[s : s + block], tb, rows, cols)
        out[s : s + block] = d2.sqrt_()
    return out.numpy()


def nearest_neighbors(query, reference, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``query [N, D]`` its nearest row of ``reference [M, D]``: ``(index int [N], distance [N])``.

    Every reference row whose matrix-multiply distance could, within round-off, be the smallest is a
    candidate; the candidates' distances are recomputed exactly and the smallest wins (ties: the
    lowest index). So an exact copy is found at distance exactly 0, and is preferred over a
    near-copy whatever the BLAS, and the returned distance of the chosen row is exact."""
    q, r = _as64(query, "nearest_neighbors(query)"), _as64(reference, "nearest_neighbors(reference)")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"nearest_neighbors: shapes {tuple(q.shape)} and {tuple(r.shape)} do not match")
    if len(r) == 0:
        raise ValueError("nearest_neighbors: empty reference set")
    sq_q, sq_r = q.pow(2).sum(1), r.pow(2).sum(1)
    idx, dist = [], []
    for s in range(0, len(q), block):
        qb, sq_qb = q[s : s + block], sq_q[s : s + block]
        d2 = _mm_squared(qb, r, sq_qb, sq_r)
        band = roundoff_band(sq_qb, sq_r, q.shape[1])
        # true d2_j <= true d2_min is possible only if d2_j - band_j <= min_k (d2_k + band_k)
        upper = (d2 + band).min(dim=1, keepdim=True).values
        rows, cols = torch.nonzero(d2 - band <= upper, as_tuple=True)
        exact = torch.full_like(d2, float("inf"))
        exact[rows, cols] = _exact_squared(qb, r, rows, cols)
        m = exact.min(dim=1)  # first minimal index on ties (torch.min's documented behaviour)
        idx.append(m.indices)
        dist.append(m.values.sqrt())
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()
