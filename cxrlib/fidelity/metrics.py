"""Distribution metrics between a real and a synthetic feature set ``[N, D]``.

* Fréchet distance (FD; "FID" in Inception features, "FXD" in torchxrayvision features),
* kernel distance (KID, unbiased MMD² with the cubic polynomial kernel),
* improved precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020),
* bootstrap confidence intervals for FD and KID.

Sample-size honesty
-------------------
Every function reports the n it used, and warns (:class:`SmallSampleWarning`) below the minimum in
:data:`MIN_N`:

=============== ======= ===============================================================================
metric          min n   why
=============== ======= ===============================================================================
``fd``          1000    FD is biased upwards by roughly ``tr(Σ)/n`` terms (Chong & Forsyth 2020); at a
                        few hundred images the bias rivals the differences between generators. It
                        also warns when ``n <= D`` (a singular covariance). Schaudt 2023's 50 real
                        images per class are far below this.
``kid``         100     KID is unbiased at any n (Bińkowski et al. 2018), only its variance grows.
``prdc``        200     k-NN radii (k = 5) from a few dozen points describe the manifold poorly.
``ms_ssim``     20      mean over pairs of a set of at least 20 images.
``memorization`` 100    held-out images calibrating the replica threshold (a 5 % quantile of < 100
                        distances rests on < 5 of them).
``label_auroc`` 10      positives and negatives each.
=============== ======= ===============================================================================

These minima apply to each set separately and to each per-label subset.
"""

from __future__ import annotations

import warnings

import numpy as np

from .distances import pairwise_distances

MIN_N = {"fd": 1000, "kid": 100, "prdc": 200, "ms_ssim": 20, "memorization": 100, "label_auroc": 10}


class SmallSampleWarning(UserWarning):
    """A metric was computed from fewer samples than :data:`MIN_N` recommends."""


def warn_small_n(metric: str, n: int, what: str = "", stacklevel: int = 3) -> bool:
    """Warn if ``n < MIN_N[metric]``; return True if it warned."""
    if n < MIN_N[metric]:
        where = f" ({what})" if what else ""
        warnings.warn(
            f"{metric}: n={n}{where} is below the documented minimum {MIN_N[metric]} "
            "(cxrlib.fidelity.metrics.MIN_N); the estimate is noisy or biased",
            SmallSampleWarning,
            stacklevel=stacklevel,
        )
        return True
    return False


def _as_features(x, where: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{where}: expected features [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: features contain NaN or inf")
    return x


def _check_pair(real, syn, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    real, syn = _as_features(real, "real features"), _as_features(syn, "synthetic features")
    if real.shape[1] != syn.shape[1]:
        raise ValueError(f"feature dimensions differ: real D={real.shape[1]}, synthetic D={syn.shape[1]}")
    for name, x in (("real", real), ("synthetic", syn)):
        if len(x) < min_n:
            raise ValueError(f"{name} set has {len(x)} samples; at least {min_n} are needed")
    return real, syn


# ------------------------------------------------------------------------------------------------
# Fréchet distance
# ------------------------------------------------------------------------------------------------
def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _blas_limit(d: int = 0):
    """One BLAS thread for small matrices (D <= 512) and matrix-vector products (call with d=0).
    Measured on the shared 2-core machine: covariance + eigh of a 256 x 256 matrix took 0.33 s with
    OpenBLAS' default threads and 0.017 s with one; 200 KID bootstrap replicates (n = 1295 + 705)
    3.9 s and 0.7 s (thread hand-offs dominate small calls when the cores are busy). Larger D keeps
    the default. ``threadpoolctl`` comes with scikit-learn."""
    import contextlib

    if d > 512:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    r"""Fréchet distance between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`:

    .. math:: d^2 = \lVert\mu_1-\mu_2\rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2\operatorname{tr}\bigl(\Sigma_1\Sigma_2\bigr)^{1/2}

    The trace of the square root is computed without a general (non-symmetric) matrix square root:
    :math:`\Sigma_1\Sigma_2` has the same eigenvalues as the symmetric PSD matrix
    :math:`M=\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}`, so :math:`\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}
    =\sum_i\sqrt{\lambda_i(M)}`, with :math:`\Sigma_1^{1/2}` and :math:`\lambda(M)` from symmetric
    eigendecompositions (``numpy.linalg.eigh``) and round-off negatives clipped to 0. This stays
    real and accurate when the covariances are singular (``n <= D``) or near-singular, where
    ``scipy.linalg.sqrtm`` of the product returns complex parts and pytorch-fid needs an
    ``eps * I`` offset. Tested against torchmetrics and a scipy ``sqrtm`` computation.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    # Only round-off can make d negative; a clearly negative value would be a bug, not noise.
    scale = float(np.trace(s1) + np.trace(s2)) + 1e-12
    if d < -1e-6 * scale:
        raise FloatingPointError(f"Fréchet distance came out negative ({d:.3g}); covariances are not PSD")
    return max(d, 0.0)


def frechet_distance(real, syn, *, warn: bool = True) -> dict:
    """FD between two feature sets; returns ``{"value", "n_real", "n_syn"}``.

    Means and unbiased covariances (``ddof=1``, as torchmetrics and pytorch-fid) of each set, then
    :func:`frechet_distance_from_stats`.
    """
    real, syn = _check_pair(real, syn)
    if warn:
        for name, x in (("real", real), ("synthetic", syn)):
            warn_small_n("fd", len(x), name)
            if len(x) <= x.shape[1]:
                warnings.warn(
                    f"fd: {name} set has n={len(x)} <= D={x.shape[1]} features: its covariance is singular",
                    SmallSampleWarning,
                    stacklevel=2,
                )
    with _blas_limit(real.shape[1]):
        value = frechet_distance_from_stats(real.mean(0), np.cov(real, rowvar=False), syn.mean(0), np.cov(syn, rowvar=False))
    return {"value": value, "n_real": len(real), "n_syn": len(syn)}


# ------------------------------------------------------------------------------------------------
# KID
# ------------------------------------------------------------------------------------------------
def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> np.ndarray:
    r""":math:`k(x, y) = (\gamma\,x^\top y + c)^{d}`, default :math:`\gamma = 1/D`, :math:`c = 1`, :math:`d = 3`."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef) ** degree


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, wx=None, wy=None) -> float:
    r"""Unbiased MMD² (a U-statistic; Gretton et al. 2012, eq. 3) for sets of sizes m and n:

    .. math:: \frac{1}{m(m-1)}\sum_{i\ne j}k(x_i,x_j) + \frac{1}{n(n-1)}\sum_{i\ne j}k(y_i,y_j)
              - \frac{2}{mn}\sum_{i,j}k(x_i,y_j)

    With bootstrap multiplicities ``wx``/``wy`` (counts per original point) the within-set sums
    skip pairs of copies of the same point, so resampling with replacement does not add the large
    :math:`k(x,x)` terms that would bias every bootstrap replicate upwards.
    """
    m, n = len(kxx), len(kyy)
    wx = np.ones(m) if wx is None else wx
    wy = np.ones(n) if wy is None else wy
    sxx = wx @ kxx @ wx - (wx**2 * np.diag(kxx)).sum()
    syy = wy @ kyy @ wy - (wy**2 * np.diag(kyy)).sum()
    nxx = wx.sum() ** 2 - (wx**2).sum()
    nyy = wy.sum() ** 2 - (wy**2).sum()
    return float(sxx / nxx + syy / nyy - 2 * (wx @ kxy @ wy) / (wx.sum() * wy.sum()))


def kernel_distance(
    real,
    syn,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
    warn: bool = True,
) -> dict:
    """KID: unbiased MMD² with the polynomial kernel (Bińkowski et al. 2018).

    ``subset_size=None`` (default): one U-statistic over all pairs of the two full sets (sizes may
    differ) -- deterministic and the lowest-variance unbiased estimate. ``subset_size=m``: the
    torchmetrics / original convention, the mean (and std) over ``subsets`` random subsets of m
    real and m synthetic samples drawn without replacement with ``numpy.random.default_rng(seed)``.
    Returns ``{"value", "std" (NaN for full sets), "n_real", "n_syn"}``. KID can be slightly
    negative (it is unbiased); it is not clipped.
    """
    real, syn = _check_pair(real, syn)
    if warn:
        warn_small_n("kid", len(real), "real")
        warn_small_n("kid", len(syn), "synthetic")
    kern = lambda a, b: polynomial_kernel(a, b, degree, gamma, coef)  # noqa: E731
    if subset_size is None:
        value = _mmd2_from_kernels(kern(real, real), kern(syn, syn), kern(real, syn))
        return {"value": value, "std": float("nan"), "n_real": len(real), "n_syn": len(syn)}
    if subset_size < 2 or subset_size > min(len(real), len(syn)):
        raise ValueError(
            f"kid: subset_size={subset_size} must be in [2, min(n_real, n_syn) = {min(len(real), len(syn))}]"
        )
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        r = real[rng.choice(len(real), subset_size, replace=False)]
        s = syn[rng.choice(len(syn), subset_size, replace=False)]
        vals.append(_mmd2_from_kernels(kern(r, r), kern(s, s), kern(r, s)))
    return {"value": float(np.mean(vals)), "std": float(np.std(vals)), "n_real": len(real), "n_syn": len(syn)}


# ------------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------------
def _interval(boot: np.ndarray, point: float, level: float, method: str) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    if method == "percentile":
        return float(lo), float(hi)
    if method == "basic":  # reverse percentile: 2θ̂ - q; corrects a bootstrap shift to first order
        return float(2 * point - hi), float(2 * point - lo)
    raise ValueError(f"ci method {method!r}: expected 'percentile' or 'basic'")


def bootstrap_ci(
    metric: str,
    real,
    syn,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    method: str = "basic",
    seed: int = 0,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> dict:
    r"""Bootstrap CI for ``metric`` = ``"fd"`` or ``"kid"`` (full-set KID).

    Each replicate resamples the real and the synthetic set independently, with replacement, to
    their own sizes (``numpy.random.default_rng(seed)``) and recomputes the metric. Returns
    ``{"value", "ci_low", "ci_high", "n_real", "n_syn", "n_boot"}``.

    ``method="basic"`` (default) is the reverse-percentile interval
    :math:`[2\hat\theta - q_{1-\alpha/2},\ 2\hat\theta - q_{\alpha/2}]`; ``"percentile"`` is
    :math:`[q_{\alpha/2}, q_{1-\alpha/2}]`. Why basic: FD is biased upwards at finite n and a
    bootstrap resample (only ~63 % distinct points) is biased upwards again by about the same
    amount, so FD replicates sit *above* the point estimate. The percentile interval then lies
    above the estimate and misses the true FD, while the basic interval mirrors the shift and
    corrects the bias to first order (in a Gaussian simulation, 16-d, n = 300 per set, 200
    resamples, it covered the true FD in 38/40 runs; the percentile interval in 0/40 -- rerun
    ``tests/test_fidelity.py::test_fd_bootstrap_basic_interval_covers_truth``). FD's lower bound is
    clipped at 0 (FD cannot be negative).

    For KID the replicates use the multiplicity-aware U-statistic (copies of one point are not
    paired with each other), so resampling adds no bias and both methods agree closely. KID keeps
    the three kernel matrices in memory: ``(n_real + n_syn)²`` doubles.
    """
    real, syn = _check_pair(real, syn)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    nr, ns = len(real), len(syn)
    boot = np.empty(n_boot)
    if metric == "fd":
        point = frechet_distance(real, syn, warn=False)["value"]
        with _blas_limit(real.shape[1]):
            for b in range(n_boot):
                ir, is_ = rng.integers(0, nr, nr), rng.integers(0, ns, ns)
                boot[b] = frechet_distance(real[ir], syn[is_], warn=False)["value"]
    elif metric == "kid":
        kxx = polynomial_kernel(real, real, degree, gamma, coef)
        kyy = polynomial_kernel(syn, syn, degree, gamma, coef)
        kxy = polynomial_kernel(real, syn, degree, gamma, coef)
        point = _mmd2_from_kernels(kxx, kyy, kxy)
        with _blas_limit():
            for b in range(n_boot):
                wx = np.bincount(rng.integers(0, nr, nr), minlength=nr).astype(np.float64)
                wy = np.bincount(rng.integers(0, ns, ns), minlength=ns).astype(np.float64)
                boot[b] = _mmd2_from_kernels(kxx, kyy, kxy, wx, wy)
    else:
        raise ValueError(f"bootstrap_ci: metric {metric!r} not supported; expected 'fd' or 'kid'")
    lo, hi = _interval(boot, point, level, method)
    if metric == "fd":
        lo = max(lo, 0.0)
    return {"value": point, "ci_low": lo, "ci_high": hi, "n_real": nr, "n_syn": ns, "n_boot": n_boot}


# ------------------------------------------------------------------------------------------------
# Precision / recall / density / coverage
# ------------------------------------------------------------------------------------------------
def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest *other* point of the same set."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {len(x)}")
    d = pairwise_distances(x, x)
    # column 0 of the sorted row is the point itself (distance exactly 0, see cxrlib.fidelity.distances),
    # so the k-th neighbour is column k
    return np.partition(d, k, axis=1)[:, k]


def precision_recall_density_coverage(real, syn, *, k: int = 5, warn: bool = True) -> dict:
    r"""Improved precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

    With :math:`B(x, r)` the open ball, :math:`r_k(x)` the distance from :math:`x` to its k-th
    nearest neighbour in its own set, real :math:`X_{1..N}` and synthetic :math:`Y_{1..M}`:

    * precision :math:`=\frac1M\sum_j 1[\exists i: Y_j\in B(X_i, r_k(X_i))]` (synthetic on the real manifold),
    * recall :math:`=\frac1N\sum_i 1[\exists j: X_i\in B(Y_j, r_k(Y_j))]` (real on the synthetic manifold),
    * density :math:`=\frac{1}{kM}\sum_j\sum_i 1[Y_j\in B(X_i, r_k(X_i))]` (can exceed 1),
    * coverage :math:`=\frac1N\sum_i 1[\exists j: Y_j\in B(X_i, r_k(X_i))]`.

    Strict inequalities, Euclidean distances, as the reference code (clovaai/generative-evaluation-prdc).
    Identical sets give precision = recall = coverage = 1 and density = 1 (without ties); far-apart
    sets give 0. Returns the four values plus ``n_real``, ``n_syn``, ``k``.
    """
    real, syn = _check_pair(real, syn, min_n=k + 1)
    if warn:
        warn_small_n("prdc", len(real), "real")
        warn_small_n("prdc", len(syn), "synthetic")
    r_real, r_syn = knn_radii(real, k), knn_radii(syn, k)
    d = pairwise_distances(real, syn)
    inside_real = d < r_real[:, None]  # [N, M]: Y_j inside the ball of X_i
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d < r_syn[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float(inside_real.any(axis=1).mean()),
        "n_real": len(real),
        "n_syn": len(syn),
        "k": k,
    }
