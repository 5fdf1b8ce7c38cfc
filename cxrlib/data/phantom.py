"""The embedded default dataset: phantom frontal chest radiographs (a simulation, not patient data).

Why a phantom: no real CXR can be downloaded where this study is built and tested, yet every
experiment must run, mean something and be tested on a CPU. The phantom is built from *real*
ingredients that torchxrayvision ships: 431 usable real lung masks (of 517) give the lung shapes,
and CheXpert's train.csv gives the joint distribution of the 14 labels (with its uncertain ``-1``
and unmentioned ``NaN`` values), sex, age, view and the follow-up structure of patients. Two
external sites take their label prevalence, demographics and follow-ups from NIH ChestX-ray14 and
PadChest and differ in acquisition (exposure, contrast, noise, blur, collimation, burned-in
markers). See :mod:`cxrlib.data.phantom_render` for how each finding is drawn.

Determinism: image *i* of a site is a pure function of ``(seed, site, size, i)`` (its meta row of
``(seed, site, i)``): patients are taken in a seeded order and each image draws from its own
``numpy`` generator seeded by ``derive_seed(seed, site, i, stream)``. Rendering uses only
platform-independent numpy/scipy operations and quantizes to uint8, so the same call gives the same
bytes on another machine (a golden checksum in the tests guards it; bump ``RENDERER_VERSION`` on
any intended change).

Latent truth vs labels: a raw label of 1 renders the finding with severity in [0.25, 1]; ``-1``
(uncertain) renders a mild finding with probability 0.5; an unmentioned (NaN) finding is rendered,
mildly, with probability 0.02 (report-label noise); a label a site does not annotate at all is
rendered with that site's prior. The latent severities are in ``meta`` (columns ``sev:<label>``),
so analyses can separate label noise from model error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..utils import derive_seed, tqdm
from .base import CXRDataset
from .labels import CHEXPERT_LABELS, LabelPolicy, check_label_names
from .phantom_render import Acquisition, Findings, render, sample_anatomy
from .phantom_sources import SOURCE_TABLES, lung_mask_bank

RENDERER_VERSION = "3"
RENDERED = tuple(l for l in CHEXPERT_LABELS if l != "No Finding")  # No Finding = none of these


@dataclass(frozen=True)
class SiteSpec:
    """A simulated acquisition site: where its labels come from and how it images."""

    name: str
    source: str  # "chexpert" | "nih" | "padchest": the real table its labels/demographics follow
    description: str
    exposure: tuple = (1.0, 0.05)  # (mean, sd) of each parameter per image
    contrast: tuple = (1.0, 0.06)
    gamma: tuple = (1.0, 0.06)
    brightness: tuple = (0.0, 0.02)
    noise: tuple = (0.025, 0.006)
    blur: tuple = (0.5, 0.12)
    collimation: float = 0.03  # max border fraction per side
    collimation_p: float = 0.3
    collimation_value: float = 0.0
    marker: str = "R"
    marker_pos: str = "tl"
    marker_p: float = 0.8
    text_bar: str | None = None
    text_p: float = 0.0
    rotation_sd: float = 2.0
    shift_sd: float = 0.025
    max_studies: int = 5  # follow-ups kept per patient (CheXpert has patients with dozens)
    unannotated_prior: dict = field(default_factory=dict)  # label -> P(present) where the source has no annotation


SITES: dict[str, SiteSpec] = {
    "internal": SiteSpec(
        name="internal",
        source="chexpert",
        description="internal site: CheXpert's label/demographic distribution, modern DR look",
    ),
    "nih": SiteSpec(
        name="nih",
        source="nih",
        description="external site A: NIH ChestX-ray14 prevalence; soft, low-contrast, white shutters, 'L' marker",
        exposure=(0.95, 0.05),
        contrast=(0.82, 0.06),
        gamma=(1.25, 0.08),
        brightness=(0.04, 0.02),
        noise=(0.015, 0.004),
        blur=(0.95, 0.2),
        collimation=0.06,
        collimation_p=0.7,
        collimation_value=0.92,
        marker="L",
        marker_pos="tr",
        marker_p=0.9,
        text_bar="tl",
        text_p=0.5,
        rotation_sd=3.0,
        unannotated_prior={"Enlarged Cardiomediastinum": 0.03, "Fracture": 0.02, "Support Devices": 0.08},
    ),
    "padchest": SiteSpec(
        name="padchest",
        source="padchest",
        description="external site B: PadChest prevalence; high contrast, noisy, black borders, text block",
        exposure=(1.06, 0.06),
        contrast=(1.18, 0.08),
        gamma=(0.85, 0.06),
        brightness=(-0.03, 0.02),
        noise=(0.04, 0.008),
        blur=(0.3, 0.1),
        collimation=0.05,
        collimation_p=0.6,
        collimation_value=0.0,
        marker="R",
        marker_pos="bl",
        marker_p=0.7,
        text_bar="br",
        text_p=0.85,
        rotation_sd=4.0,
    ),
}


def _check_site(site: str) -> SiteSpec:
    if site not in SITES:
        raise ValueError(f"unknown phantom site {site!r}; valid sites: {', '.join(SITES)}")
    return SITES[site]


# ------------------------------------------------------------------------------------------------
# Meta: labels, demographics, patients, latent truth (no rendering)
# ------------------------------------------------------------------------------------------------
def _severities(raw: np.ndarray, rng: np.random.Generator, priors: np.ndarray) -> np.ndarray:
    """Latent severity of each rendered finding given its raw label (see module docstring).

    ``priors[j]`` is the site's P(present) for a label it does not annotate (NaN elsewhere)."""
    u, b, m = rng.random(raw.shape), rng.beta(2.0, 2.0, raw.shape), rng.random(raw.shape)
    strong, mild = 0.25 + 0.75 * b, 0.1 + 0.3 * m
    sev = np.zeros(raw.shape)
    sev = np.where(raw == 1.0, strong, sev)
    sev = np.where((raw == -1.0) & (u < 0.5), mild, sev)
    missing = np.isnan(raw)
    has_prior = ~np.isnan(priors)
    sev = np.where(missing & has_prior & (u < np.nan_to_num(priors)), strong, sev)
    sev = np.where(missing & ~has_prior & (u < 0.02), mild, sev)
    return sev


_META_MEMO: dict[tuple[str, int], pd.DataFrame] = {}


def phantom_meta(site: str = "internal", n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The first ``n`` images of a site: one row per image (no pixels rendered).

    Columns: ``image_id, patient_id, study, site, view, sex, age``, the 14 CheXpert labels with raw
    values (1/0/-1/NaN), ``sev:<label>`` latent severities, and ``source_patient`` (the real
    patient whose labels were borrowed). Prefix-stable, so the longest table computed in this
    process is kept and sliced."""
    memo = _META_MEMO.get((site, seed))
    if memo is not None and n <= len(memo):
        return memo.iloc[:n].copy()
    meta = _phantom_meta(site, n, seed)
    _META_MEMO[(site, seed)] = meta
    return meta.copy()


def _phantom_meta(site: str, n: int, seed: int) -> pd.DataFrame:
    spec = _check_site(site)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    table = SOURCE_TABLES[spec.source]()
    # patients in a seeded order; each contributes its first `max_studies` frontal images
    starts = np.flatnonzero(np.r_[True, table["source_patient"].to_numpy()[1:] != table["source_patient"].to_numpy()[:-1]])
    counts = np.diff(np.r_[starts, len(table)])
    order = np.random.default_rng(derive_seed(seed, site, "patients")).permutation(len(starts))
    take = np.minimum(counts[order], spec.max_studies)
    n_pat = int(np.searchsorted(np.cumsum(take), n) + 1) if n else 0
    if n_pat > len(order) or (n and np.cumsum(take)[min(n_pat, len(order)) - 1] < n):
        raise ValueError(f"site {site!r} can provide at most {int(take.sum())} images, asked for {n}")
    rows, pids, studies = [], [], []
    for k in range(n_pat):
        p = order[k]
        for j in range(int(take[k])):
            rows.append(starts[p] + j)
            pids.append(f"{site}-p{k:06d}")
            studies.append(j)
    rows, pids, studies = rows[:n], pids[:n], studies[:n]
    src = table.iloc[rows].reset_index(drop=True)
    meta = pd.DataFrame(
        {
            "image_id": [f"{site}-{i:06d}" for i in range(n)],
            "patient_id": pids,
            "study": studies,
            "site": site,
            "view": src["view"].to_numpy(),
            "sex": src["sex"].to_numpy(),
            "age": src["age"].to_numpy(),
            "source_patient": src["source_patient"].to_numpy(),
        }
    )
    for lab in CHEXPERT_LABELS:
        meta[lab] = src[lab].to_numpy(dtype=np.float64)
    raw = meta[list(RENDERED)].to_numpy(dtype=np.float64)
    priors = np.array([spec.unannotated_prior.get(lab, np.nan) for lab in RENDERED])
    sev = np.zeros((n, len(RENDERED)))
    for i in range(n):
        sev[i] = _severities(raw[i], np.random.default_rng(derive_seed(seed, site, i, "truth")), priors)
    for j, lab in enumerate(RENDERED):
        meta[f"sev:{lab}"] = sev[:, j]
    return meta


def _acquisition(spec: SiteSpec, rng: np.random.Generator) -> Acquisition:
    g = lambda ms: float(rng.normal(*ms))  # noqa: E731
    coll = tuple(float(rng.uniform(0, spec.collimation)) if rng.random() < spec.collimation_p else 0.0 for _ in range(4))
    return Acquisition(
        exposure=g(spec.exposure),
        contrast=max(0.3, g(spec.contrast)),
        gamma=max(0.4, g(spec.gamma)),
        brightness=g(spec.brightness),
        noise=max(0.0, g(spec.noise)),
        blur=max(0.0, g(spec.blur)),
        collimation=coll,
        collimation_value=spec.collimation_value,
        marker=spec.marker if rng.random() < spec.marker_p else None,
        marker_pos=spec.marker_pos,
        text_bar=spec.text_bar if (spec.text_bar and rng.random() < spec.text_p) else None,
        rotation=float(rng.normal(0, spec.rotation_sd)),
        shift=(float(rng.normal(0, spec.shift_sd)), float(rng.normal(0, spec.shift_sd))),
        inspiration=float(rng.uniform(0.93, 1.05)),
    )


def render_image(meta_row: pd.Series, size: int, seed: int, bank: dict | None = None) -> np.ndarray:
    """Render the image of one meta row (uint8 [size, size])."""
    if size < 16:
        raise ValueError(f"phantom size must be >= 16 px, got {size}")
    bank = bank if bank is not None else lung_mask_bank()
    site = meta_row["site"]
    spec = _check_site(site)
    i = int(str(meta_row["image_id"]).rsplit("-", 1)[1])
    prng = np.random.default_rng(derive_seed(seed, site, meta_row["patient_id"], "anatomy"))
    age = float(meta_row["age"]) if pd.notna(meta_row["age"]) else float("nan")
    sex = meta_row["sex"] if isinstance(meta_row["sex"], str) else None
    anatomy = sample_anatomy(prng, bank, sex, age)
    rng = np.random.default_rng(derive_seed(seed, site, i, "render"))
    acq = _acquisition(spec, rng)
    findings = Findings({lab: float(meta_row[f"sev:{lab}"]) for lab in RENDERED if meta_row[f"sev:{lab}"] > 0})
    img, _ = render(size, anatomy, findings, acq, str(meta_row["view"]), bank, rng)
    return img


def _render_chunk(args) -> np.ndarray:
    meta, size, seed = args
    bank = lung_mask_bank()
    return np.stack([render_image(meta.iloc[k], size, seed, bank) for k in range(len(meta))])


def render_images(meta: pd.DataFrame, size: int, seed: int, progress: bool = True, workers: int | None = None) -> np.ndarray:
    """Render every row of ``meta`` (uint8 [N, size, size]), with a progress bar.

    ``workers`` processes (default: all cores, at most 8) share large jobs; each image depends only
    on its own meta row, so the result is identical for any number of workers."""
    import os

    workers = workers or min(8, os.cpu_count() or 1)
    n = len(meta)
    chunk = 250
    starts = list(range(0, n, chunk))
    bar = tqdm(total=n, desc=f"rendering phantom {size}px", unit="img", **({} if progress else {"disable": True}))
    parts = []
    if workers > 1 and n >= 2000:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        lung_mask_bank()  # build the cached bank once; forked workers inherit it
        # fork (not spawn): no re-import of the caller's __main__, and the workers only run
        # numpy/scipy code (no OpenMP/torch threads that a fork could leave in a bad state)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
            for part in ex.map(_render_chunk, [(meta.iloc[s : s + chunk], size, seed) for s in starts]):
                parts.append(part)
                bar.update(len(part))
    else:
        for s in starts:
            parts.append(_render_chunk((meta.iloc[s : s + chunk], size, seed)))
            bar.update(len(parts[-1]))
    bar.close()
    return np.concatenate(parts) if parts else np.zeros((0, size, size), np.uint8)


# ------------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------------
class PhantomDataset(CXRDataset):
    """Phantom CXRs of one site: images ``indices`` (default ``range(n)``) at ``size`` px.

    Images are rendered once and cached (key: site, size, seed, renderer version, indices), so
    a second construction is a file read. ``cache=False`` renders in memory only."""

    def __init__(
        self,
        site: str = "internal",
        size: int = 64,
        seed: int = 0,
        n: int | None = None,
        indices=None,
        labels=CHEXPERT_LABELS,
        policy: LabelPolicy = LabelPolicy(),
        cache: bool = True,
        progress: bool = True,
    ):
        _check_site(site)
        if indices is None:
            if n is None:
                raise ValueError("PhantomDataset needs n (the first n images) or indices")
            indices = np.arange(n)
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and indices.min() < 0:
            raise ValueError("PhantomDataset indices must be >= 0")
        self.site, self.seed, self.size = site, int(seed), int(size)
        self.name = f"phantom-{site}"
        self.label_names = check_label_names(labels, where="PhantomDataset labels")
        self.policy = policy
        n_needed = int(indices.max()) + 1 if len(indices) else 0
        full = phantom_meta(site, n_needed, seed)
        self.meta = full.iloc[indices].reset_index(drop=True)
        self.indices = indices
        self.images = self._load(cache, progress)

    def _load(self, cache: bool, progress: bool) -> np.ndarray:
        if not cache:
            return render_images(self.meta, self.size, self.seed, progress)
        from .. import cache as C

        spec = {"site": self.site, "size": self.size, "seed": self.seed, "renderer": RENDERER_VERSION}
        k = C.key("phantom", spec, inputs=[self.indices.tolist()])

        def produce(d):
            np.save(d / "images.npy", render_images(self.meta, self.size, self.seed, progress))

        entry = C.get_or_create(k, produce, expected_bytes=len(self.meta) * self.size**2 + 4096,
                                description=f"phantom {self.site} {self.size}px, {len(self.meta)} images")
        return np.load(entry / "images.npy")

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def to_tensors(self, progress: bool = False):
        import torch

        y, m = self.targets()
        return torch.from_numpy(self.images)[:, None], torch.from_numpy(y), torch.from_numpy(m)


# ------------------------------------------------------------------------------------------------
# The frozen manifest
# ------------------------------------------------------------------------------------------------
PHANTOM_DATA_SEED = 0  # the phantom "world" the committed manifest describes
N_INTERNAL = 20000  # images of the internal site in the manifest (train/val/test by patient)


def build_manifest(out_dir, *, seed: int = PHANTOM_DATA_SEED, n: int = N_INTERNAL):
    """``phantom.csv.gz``: the internal site's first ``n`` images split by patient 70/10/20,
    stratified on the 14 labels, with nested labeled subsets of train. The external sites
    (``nih``, ``padchest``) are test-only and need no manifest."""
    from pathlib import Path

    from .manifests import build_splits, write_manifest
    from .phantom_sources import CHEXPERT_CSV, source_file

    meta = phantom_meta("internal", n, seed)
    df = build_splits(meta, seed=seed, stratify=CHEXPERT_LABELS)
    return write_manifest(
        df, Path(out_dir) / "phantom.csv.gz", source=source_file(CHEXPERT_CSV), seed=seed,
        label_policy="stratified on raw value 1 = positive; the loader's LabelPolicy applies at load time",
        stratify=CHEXPERT_LABELS,
        notes=f"phantom internal site, images 0..{n - 1} of data seed {seed}, renderer v{RENDERER_VERSION}; "
        "image_id = 'internal-<i>' (image i is a pure function of (seed, site, size, i)); "
        "external sites nih/padchest are test-only (no rows here).",
    )
