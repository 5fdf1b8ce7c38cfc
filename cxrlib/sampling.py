"""Sampling a trained generator: samplers, condition specs, per-image seeds, synthetic sets on disk.

**Samplers** (diffusers schedulers; the loop is written out in :func:`sample_images`):

=========== ======================================================= =============== ==============
name        scheduler                                               typical steps   stochastic
=========== ======================================================= =============== ==============
``ddpm``    ``DDPMScheduler`` (ancestral, Ho et al. 2020)            1000            yes
``ddim``    ``DDIMScheduler``, η = 0 (Song et al. 2021)             50              no
``dpm++``   ``DPMSolverMultistepScheduler``, 2nd-order DPM-Solver++  20              no
            (Lu et al. 2022)
=========== ======================================================= =============== ==============

All use ``timestep_spacing="trailing"`` so that few-step sampling starts from the last training
timestep (Lin et al. 2024).

**Per-image seeds** (as NVlabs/edm's ``generate.py``): image *i* of a set with seed *s* draws all of its
noise (start and, for DDPM, every ancestral step) from its own ``torch.Generator`` seeded with
``derive_seed(s, "image", i)``, so it does not depend on the batch size or on the other images.

**Condition specs** return a *conditions table*: one row per image, one column per label
(1 present, 0 absent, NaN unknown = the label's null embedding), ``sex`` ("F"/"M"/None) and ``age``
(years, NaN unknown), plus ``source_row`` when drawn from a dataset:

* :func:`explicit_conditions` — given label vectors / demographics;
* :func:`prevalence_conditions` — rows of a dataset drawn jointly (labels *and* demographics), so the
  training prevalence and the co-occurrence of findings are preserved;
* :func:`balanced_conditions` — an equal number of images positive for each label;
* :func:`minority_conditions` — images positive for one (minority) label;
* :func:`flipped_conditions` — counterfactual twins: the same rows with one label switched off.

**Synthetic set** on disk (:func:`write_synthetic_set`)::

    images/000000.png ...   8-bit grayscale
    manifest.csv            file, sha256, index, seed, <labels...>, sex, age, source_row,
                            generator_id, sampler, steps, guidance
    synthetic_set.json      generator folder + id, set seed, sampler, steps, guidance, labels, sha256 of the manifest

Any image can be regenerated alone from its manifest row (:func:`regenerate_image`), and the set
loads as an :class:`~cxrlib.data.base.ArrayDataset` (:func:`load_synthetic_set`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .data.base import ArrayDataset, CXRDataset
from .data.labels import LabelPolicy, check_label_names
from .io import sha256_file
from .models.unet import Condition, ConditionalUNet
from .utils import derive_seed, progress_disabled, resolve_device, torch_generator, tqdm

SAMPLERS = ("ddpm", "ddim", "dpm++")
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm++": 20}


def make_scheduler(sampler: str, schedule: dict):
    """A fresh diffusers scheduler for ``sampler`` on the generator's training noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=schedule["num_train_timesteps"],
        beta_schedule=schedule["beta_schedule"],
        prediction_type=schedule["prediction_type"],
        timestep_spacing="trailing",
    )
    if sampler == "ddpm":
        return DDPMScheduler(**common, clip_sample=True)
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=True)
    if sampler == "dpm++":
        # thresholding with sample_max_value=1 clips the predicted clean image to [-1, 1] at every step, as
        # clip_sample does for DDPM/DDIM; without it an imperfect epsilon at high noise (x0 = (x - sigma eps) /
        # alpha, 1/alpha ~ 150 at t = T) drives multistep DPM-Solver++ to saturated black or white images.
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)
    raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")


def image_seeds(seed: int, n: int, start: int = 0) -> list[int]:
    """Per-image seeds of a set: ``derive_seed(seed, "image", i)`` for i in [start, start + n)."""
    return [derive_seed(seed, "image", i) for i in range(start, start + n)]


@torch.no_grad()
def sample_images(
    model: ConditionalUNet,
    conditions: Condition,
    seeds: Sequence[int],
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 0.0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """Sample one image per (condition, seed): float [N, 1, S, S] in [0, 1] (on CPU).

    ``guidance`` is the classifier-free guidance weight w (0 = the conditional model; see
    :mod:`cxrlib.models.unet`). ``steps`` defaults to :data:`DEFAULT_STEPS`.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
    steps = DEFAULT_STEPS[sampler] if steps is None else int(steps)
    if not 1 <= steps <= model.config["schedule"]["num_train_timesteps"]:
        raise ValueError(f"steps={steps}: expected 1..{model.config['schedule']['num_train_timesteps']}")
    if len(seeds) != len(conditions):
        raise ValueError(f"{len(seeds)} seeds for {len(conditions)} conditions")
    if conditions.n_labels != len(model.label_names):
        raise ValueError(f"conditions have {conditions.n_labels} labels; the generator has {len(model.label_names)}: {model.label_names}")
    from diffusers.utils.torch_utils import randn_tensor

    dev = resolve_device(device)
    model = model.to(dev).eval()
    size = model.image_size
    out = []
    bar = tqdm(total=len(seeds) * steps, desc=f"sample {sampler}-{steps}", unit="img-step", disable=not progress or progress_disabled())
    for lo in range(0, len(seeds), batch_size):
        hi = min(lo + batch_size, len(seeds))
        # 1. per-image generators (on CPU: the same noise whatever the device) and the starting noise
        gens = [torch_generator(s) for s in seeds[lo:hi]]
        scheduler = make_scheduler(sampler, model.config["schedule"])  # multistep solvers keep state: one per batch
        scheduler.set_timesteps(steps, device=dev)
        x = randn_tensor((hi - lo, 1, size, size), generator=gens, device=dev, dtype=torch.float32)
        x = x * scheduler.init_noise_sigma
        cond = conditions[lo:hi].to(dev)
        # 2. the reverse process
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            pred = _padded_forward(model, x_in, t, cond, guidance)
            x = scheduler.step(pred, t, x, generator=gens).prev_sample
            bar.update(hi - lo)
        # 3. [-1, 1] -> [0, 1]
        out.append(((x.clamp(-1, 1) + 1) / 2).float().cpu())
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, 1, size, size)


# CPU kernels (oneDNN convolutions, BLAS) block the batch dimension: a row's floating-point result can
# depend on how many rows are in the call (we measured 1e-6..2e-5 differences between batch sizes 1, 2,
# 3, 5 and 4, 8, 16). Padding every call up to a multiple of PAD_BATCH rows keeps image i bitwise
# identical whatever the batch size (tested in tests/test_sampling.py); the padding rows are discarded.
PAD_BATCH = 8


def _padded_forward(model: ConditionalUNet, x: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float) -> torch.Tensor:
    b = x.shape[0]
    pad = -b % PAD_BATCH
    if pad:
        rep = torch.zeros(pad, dtype=torch.long, device=x.device)  # copies of row 0
        x = torch.cat([x, x[rep]])
        cond = Condition.cat([cond, cond[rep]])
    return model(x, t.expand(b + pad), cond, guidance=guidance)[:b]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 1, S, S] in [0, 1] -> uint8 [N, S, S] (round to nearest)."""
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# --- condition specs -----------------------------------------------------------------------------
def _table(y: np.ndarray, label_names: Sequence[str], sex, age, source_row=None) -> pd.DataFrame:
    t = pd.DataFrame(np.asarray(y, dtype=np.float64), columns=list(label_names))
    t["sex"] = list(sex)
    t["age"] = np.asarray(age, dtype=np.float64)
    if source_row is not None:
        t["source_row"] = np.asarray(source_row, dtype=np.int64)
    return t


def explicit_conditions(labels, *, label_names: Sequence[str], sex=None, age=None) -> pd.DataFrame:
    """Conditions from label vectors ``labels`` [N, L] (1 / 0 / NaN unknown) and optional ``sex``
    ("F"/"M"/None per image, or one value for all) and ``age`` (years or NaN)."""
    label_names = check_label_names(label_names, where="label_names")
    y = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    if y.shape[1] != len(label_names):
        raise ValueError(f"labels have {y.shape[1]} columns but label_names has {len(label_names)}: {list(label_names)}")
    n = len(y)
    sex = [sex] * n if sex is None or isinstance(sex, str) else list(sex)
    age = np.full(n, np.nan if age is None else age, dtype=np.float64) if age is None or np.isscalar(age) else np.asarray(age, np.float64)
    if len(sex) != n or len(age) != n:
        raise ValueError(f"{n} label vectors but {len(sex)} sex and {len(age)} age values")
    bad = [s for s in sex if s not in ("F", "M", None)]
    if bad:
        raise ValueError(f"sex values must be 'F', 'M' or None; got {bad[:3]}")
    return _table(y, label_names, sex, age)


def _source_arrays(source: CXRDataset, label_names: Sequence[str]):
    """Labels of ``source`` after its policy (NaN where masked), and its sex/age as table values."""
    label_names = check_label_names(label_names, allowed=tuple(source.label_names), where="label_names")
    y, mask = source.targets()
    col = [list(source.label_names).index(n) for n in label_names]
    y = np.where(mask[:, col], y[:, col], np.nan)
    sex_code, age = source.demographics()
    sex = np.array([{0: "F", 1: "M"}.get(int(s)) for s in sex_code], dtype=object)
    return label_names, y, sex, age


def prevalence_conditions(source: CXRDataset, n: int, *, label_names: Sequence[str], seed: int) -> pd.DataFrame:
    """``n`` rows of ``source`` drawn uniformly with replacement: labels and demographics jointly."""
    label_names, y, sex, age = _source_arrays(source, label_names)
    if len(y) == 0:
        raise ValueError(f"prevalence_conditions: source {source.name} is empty")
    rows = torch.randint(len(y), (n,), generator=torch_generator(derive_seed(seed, "prevalence"))).numpy()
    return _table(y[rows], label_names, sex[rows], age[rows], rows)


def _positive_rows(y: np.ndarray, j: int, label: str, source: CXRDataset) -> np.ndarray:
    rows = np.flatnonzero(y[:, j] == 1.0)
    if len(rows) == 0:
        raise ValueError(f"label {label!r} has no positive image in {source.name}; cannot sample conditions for it")
    return rows


def balanced_conditions(source: CXRDataset, n: int, *, label_names: Sequence[str], seed: int) -> pd.DataFrame:
    """``n`` rows, image k positive for ``label_names[k % L]``: each drawn from the source rows positive
    for that label (labels and demographics jointly, so co-occurring findings stay realistic)."""
    label_names, y, sex, age = _source_arrays(source, label_names)
    g = torch_generator(derive_seed(seed, "balanced"))
    pools = [_positive_rows(y, j, name, source) for j, name in enumerate(label_names)]
    rows = np.array([pools[k % len(pools)][torch.randint(len(pools[k % len(pools)]), (1,), generator=g).item()] for k in range(n)], dtype=np.int64)
    return _table(y[rows], label_names, sex[rows], age[rows], rows)


def minority_conditions(source: CXRDataset, label: str, n: int, *, label_names: Sequence[str], seed: int, others: str = "joint") -> pd.DataFrame:
    """``n`` images positive for ``label``. ``others="joint"``: the other labels and demographics come
    from a source row positive for ``label`` (realistic co-occurrence); ``"absent"``: only ``label``
    is present, the others 0 (demographics still from such a row)."""
    label_names, y, sex, age = _source_arrays(source, label_names)
    if label not in label_names:
        raise ValueError(f"label {label!r} is not among label_names {list(label_names)}")
    if others not in ("joint", "absent"):
        raise ValueError(f"others={others!r}: expected 'joint' or 'absent'")
    j = list(label_names).index(label)
    pool = _positive_rows(y, j, label, source)
    rows = pool[torch.randint(len(pool), (n,), generator=torch_generator(derive_seed(seed, "minority", label))).numpy()]
    yy = y[rows].copy()
    if others == "absent":
        yy[:] = 0.0
        yy[:, j] = 1.0
    return _table(yy, label_names, sex[rows], age[rows], rows)


def flipped_conditions(source: CXRDataset, label: str, n: int, *, label_names: Sequence[str], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counterfactual twins for ``label``: ``(on, off)``, ``n`` rows each. ``on`` is
    :func:`minority_conditions` (rows of ``source`` positive for ``label``, the other labels and the
    demographics jointly); ``off`` is the same table with only ``label`` set to 0. Sampled with the same
    seed, twin *i* of both sets shares its noise, so the pair differs only by that label
    (:func:`cxrlib.fidelity.paired_label_effect`)."""
    on = minority_conditions(source, label, n, label_names=label_names, seed=seed)
    off = on.copy()
    off[label] = 0.0
    return on, off


# --- synthetic sets on disk ------------------------------------------------------------------------
def _as_generator(generator, device) -> ConditionalUNet:
    if isinstance(generator, ConditionalUNet):
        return generator
    from .diffusion import load_generator

    return load_generator(generator, device=device)


def write_synthetic_set(
    generator: ConditionalUNet | str | os.PathLike,
    conditions: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    seed: int,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 0.0,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Sample one image per row of ``conditions`` and write PNGs + ``manifest.csv`` + ``synthetic_set.json``.

    ``generator`` is a finished model folder or a model from :func:`cxrlib.diffusion.load_generator`.
    Returns ``out_dir``. Existing files of an earlier set in ``out_dir`` are overwritten.
    """
    from .diffusion import generator_id
    from .models.generated_sets import write_generated_set

    model = _as_generator(generator, device)
    steps = DEFAULT_STEPS[sampler] if steps is None and sampler in DEFAULT_STEPS else steps

    def sample_fn(rows: slice, cond: Condition, seeds: list[int]) -> torch.Tensor:
        return sample_images(model, cond, seeds, sampler=sampler, steps=steps, guidance=guidance,
                             batch_size=batch_size, device=device, progress=False)

    return write_generated_set(sample_fn, conditions, out_dir, label_names=model.label_names, seed=seed,
                               generator_id=model.generator_id or generator_id(model),
                               generator_path=getattr(model, "path", None), generator_config=model.config, kind="ddpm",
                               image_size=model.image_size, sampler=sampler, steps=int(steps), guidance=float(guidance),
                               batch_size=batch_size, progress=progress)


def read_manifest(set_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(set_dir) / "manifest.csv"
    if not path.exists():
        raise FileNotFoundError(f"{set_dir} is not a synthetic set: {path.name} is missing")
    return pd.read_csv(path, dtype={"seed": str, "sex": object}, keep_default_na=True)


def regenerate_image(set_dir: str | os.PathLike, index: int, *, generator=None, device: str = "cpu") -> np.ndarray:
    """Regenerate image ``index`` of a synthetic set alone from its manifest row: uint8 [S, S].

    ``generator`` defaults to the folder recorded in ``synthetic_set.json``; its id must match the manifest's.
    """
    import json

    set_dir = Path(set_dir)
    manifest = read_manifest(set_dir)
    if not 0 <= index < len(manifest):
        raise IndexError(f"index {index} out of range for the {len(manifest)} images of {set_dir}")
    row = manifest.iloc[[index]]
    if generator is None:
        info = json.loads((set_dir / "synthetic_set.json").read_text())
        if not info.get("generator_path"):
            raise ValueError(f"{set_dir}/synthetic_set.json records no generator folder; pass generator=")
        generator = info["generator_path"]
    model = _as_generator(generator, device)
    from .diffusion import generator_id

    gid = model.generator_id or generator_id(model)
    if gid != row["generator_id"].iloc[0]:
        raise ValueError(f"generator id {gid} differs from the manifest's {row['generator_id'].iloc[0]} for image {index} of {set_dir}")
    cond = Condition.from_table(row.reset_index(drop=True), model.label_names)
    steps = int(row["steps"].iloc[0])
    x = sample_images(model, cond, [int(row["seed"].iloc[0])], sampler=row["sampler"].iloc[0], steps=steps,
                      guidance=float(row["guidance"].iloc[0]), batch_size=1, device=device, progress=False)
    return to_uint8(x)[0]


def load_synthetic_set(set_dir: str | os.PathLike, *, policy: LabelPolicy = LabelPolicy(missing="ignore"), verify: bool = True) -> ArrayDataset:
    """A synthetic set as an :class:`ArrayDataset` whose labels/demographics are the sampling conditions.

    An unknown (null) label condition is NaN in ``meta``; the default policy masks it (``missing="ignore"``).
    Every synthetic image is its own "patient" (``patient_id`` = ``syn-<generator id>-<index>``).
    ``verify`` checks each file's sha256 against the manifest.
    """
    from PIL import Image

    set_dir = Path(set_dir)
    manifest = read_manifest(set_dir)
    label_names = [c for c in manifest.columns if c not in ("file", "sha256", "index", "seed", "sex", "age", "source_row", "generator_id", "sampler", "steps", "guidance")]
    check_label_names(label_names, where=f"{set_dir}/manifest.csv")
    images = []
    for f, digest in zip(manifest["file"], manifest["sha256"]):
        path = set_dir / f
        if verify and sha256_file(path) != digest:
            raise ValueError(f"{path}: sha256 differs from manifest.csv (file modified or corrupt)")
        images.append(np.asarray(Image.open(path).convert("L")))
    meta = pd.DataFrame({
        "image_id": manifest["file"],
        "patient_id": [f"syn-{g}-{i}" for g, i in zip(manifest["generator_id"], manifest["index"])],
        "study": 0,
        "site": "synthetic",
        "view": "",
        "sex": [s if s in ("F", "M") else None for s in manifest["sex"]],
        "age": pd.to_numeric(manifest["age"], errors="coerce"),
    })
    for c in label_names:
        meta[c] = manifest[c].astype(np.float64)
    size = images[0].shape[-1] if images else 0
    arr = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return ArrayDataset(arr, meta, label_names=label_names, policy=policy, name=f"synthetic:{set_dir.name}")


def time_samplers(
    model: ConditionalUNet,
    *,
    samplers: Sequence[str] = SAMPLERS,
    steps: dict | None = None,
    n_images: int = 16,
    batch_size: int = 16,
    guidance: float = 0.0,
    device: str = "cpu",
    seed: int = 0,
) -> pd.DataFrame:
    """Wall-clock throughput of each sampler at its step count (default :data:`DEFAULT_STEPS`):
    ``sampler, steps, images, seconds, images_per_s, image_steps_per_s``. One untimed warm-up
    batch first. A shared machine makes these noisy: compare ratios measured in one call."""
    import time

    steps = {**DEFAULT_STEPS, **(steps or {})}
    cond = Condition.null(n_images, len(model.label_names))
    seeds = image_seeds(seed, n_images)
    sample_images(model, cond[:1], seeds[:1], sampler="ddim", steps=2, guidance=guidance, device=device, progress=False)
    rows = []
    for s in samplers:
        t0 = time.perf_counter()
        sample_images(model, cond, seeds, sampler=s, steps=steps[s], guidance=guidance, batch_size=batch_size, device=device, progress=False)
        sec = time.perf_counter() - t0
        rows.append({"sampler": s, "steps": steps[s], "images": n_images, "seconds": sec,
                     "images_per_s": n_images / sec, "image_steps_per_s": n_images * steps[s] / sec})
    return pd.DataFrame(rows)
