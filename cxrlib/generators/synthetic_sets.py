"""Synthetic sets on disk, from any generator of the study, and loading them back.

A synthetic set (:func:`write_set`: the pixel DDPM, the GAN or the latent diffusion model, by the
``kind`` in the generator folder's ``config.json``)::

    images/000000.png ...   8-bit grayscale
    manifest.csv            file, sha256, index, seed, <labels...>, sex, age, [source_row],
                            generator_id, sampler, steps, guidance
    synthetic_set.json      generator folder + id + kind, set seed, sampler, steps, guidance, labels,
                            image size, sha256 of the manifest, and kind-specific settings (``extra``)

Image *i* draws all its randomness from ``derive_seed(seed, "image", i)``
(:func:`cxrlib.generators.sampling.image_seeds`), so it does not depend on the batch size or on the
other images of the set; any image of a DDPM set can be regenerated alone from its manifest row
(:func:`regenerate_image`). :func:`load_synthetic_set` reads a set as an
:class:`~cxrlib.data.base.ArrayDataset` whose labels are the sampling conditions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..data.base import ArrayDataset
from ..data.labels import LabelPolicy, check_label_names
from ..io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from ..models.unet import Condition, ConditionalUNet
from ..utils import progress_disabled, tqdm
from .ddpm import load_generator
from .gan import GANGenerator, load_gan, sample_gan
from .latent import LatentDiffusion, load_latent_diffusion
from .latent_sampling import sample_latent
from .sampling import DEFAULT_STEPS, image_seeds, sample_images, to_uint8
from .training_utils import generator_id, model_kind, read_model_info

GENERATOR_KINDS = ("ddpm", "gan", "latent-diffusion")

def write_generated_set(
    sample_fn: Callable[[slice, Condition, list[int]], torch.Tensor],
    conditions: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    model: torch.nn.Module,
    kind: str,
    seed: int,
    sampler: str,
    steps: int,
    guidance: float,
    extra: dict | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Write one image per row of ``conditions``: ``sample_fn(rows, cond, seeds)`` returns float images
    ``[n, 1, S, S]`` in ``[0, 1]`` for the table rows ``rows`` (a slice), their :class:`Condition` and
    their per-image seeds. ``model`` is the generator (its labels, image size, config, id and folder go
    into the manifest). Returns ``out_dir``."""
    from PIL import Image

    label_names, image_size = list(model.label_names), model.image_size
    gid = model.generator_id or generator_id(model)
    extra_cols = [c for c in conditions.columns if c not in (*label_names, "sex", "age", "source_row")]
    if extra_cols:
        raise ValueError(f"conditions table has columns {extra_cols} that are not labels of this generator "
                         f"{label_names} (nor sex/age/source_row)")
    cond = Condition.from_table(conditions, label_names)
    n = len(conditions)
    seeds = image_seeds(seed, n)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    # 1. generate chunk by chunk (bounded memory); write each PNG atomically
    files, digests = [], []
    bar = tqdm(total=n, desc=f"synthetic set ({kind})", unit="img", disable=not progress or progress_disabled())
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        imgs = sample_fn(slice(lo, hi), cond[lo:hi], seeds[lo:hi])
        if tuple(imgs.shape) != (hi - lo, 1, image_size, image_size):
            raise RuntimeError(f"sample_fn returned {tuple(imgs.shape)}, expected {(hi - lo, 1, image_size, image_size)}")
        for i, img in zip(range(lo, hi), to_uint8(imgs.cpu())):
            rel = f"images/{i:06d}.png"
            with atomic_path(out_dir / rel) as tmp:
                Image.fromarray(img, mode="L").save(tmp, format="PNG")
            files.append(rel)
            digests.append(sha256_file(out_dir / rel))
        bar.update(hi - lo)
    bar.close()

    # 2. the manifest: one row per image, enough to regenerate it alone
    manifest = pd.DataFrame({"file": files, "sha256": digests, "index": np.arange(n), "seed": [str(s) for s in seeds]})
    for c in (*label_names, "sex", "age"):
        manifest[c] = conditions[c].to_numpy() if c in conditions.columns else None
    if "source_row" in conditions.columns:
        manifest["source_row"] = conditions["source_row"].to_numpy()
    manifest["generator_id"] = gid
    manifest["sampler"] = sampler
    manifest["steps"] = int(steps)
    manifest["guidance"] = float(guidance)
    atomic_write_text(out_dir / "manifest.csv", manifest.to_csv(index=False))
    atomic_write_json(out_dir / "synthetic_set.json", {
        "generator_path": getattr(model, "path", None), "generator_id": gid, "generator_kind": kind,
        "generator_config": model.config, "seed": int(seed), "seed_rule": 'derive_seed(seed, "image", index)', "n": n,
        "sampler": sampler, "steps": int(steps), "guidance": float(guidance), "labels": label_names,
        "image_size": int(image_size), "extra": extra or {}, "manifest_sha256": sha256_file(out_dir / "manifest.csv"),
    })
    return out_dir


# --- writers per generator kind ---------------------------------------------------------------------
def _as_generator(generator, cls, load, device):
    """``generator`` itself if it is a ``cls`` model, else the finished folder it names, loaded."""
    return generator if isinstance(generator, cls) else load(generator, device=device)


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

    ``generator`` is a finished model folder or a model from :func:`cxrlib.generators.ddpm.load_generator`.
    Returns ``out_dir``. Existing files of an earlier set in ``out_dir`` are overwritten.
    """
    model = _as_generator(generator, ConditionalUNet, load_generator, device)
    steps = DEFAULT_STEPS[sampler] if steps is None and sampler in DEFAULT_STEPS else steps

    def sample_fn(rows: slice, cond: Condition, seeds: list[int]) -> torch.Tensor:
        return sample_images(model, cond, seeds, sampler=sampler, steps=steps, guidance=guidance,
                             batch_size=batch_size, device=device, progress=False)

    return write_generated_set(sample_fn, conditions, out_dir, model=model, kind="ddpm", seed=seed, sampler=sampler,
                               steps=int(steps), guidance=float(guidance), batch_size=batch_size, progress=progress)


def write_gan_set(generator: GANGenerator | str | os.PathLike, conditions: pd.DataFrame, out_dir: str | os.PathLike, *,
                  seed: int, batch_size: int = 64, device: str = "cpu", progress: bool = True) -> Path:
    """A synthetic set (PNG + manifest) from a GAN: ``sampler="gan"``,
    ``steps=1``, ``guidance=0``."""
    model = _as_generator(generator, GANGenerator, load_gan, device)
    return write_generated_set(
        lambda rows, cond, seeds: sample_gan(model, cond, seeds, batch_size=batch_size, device=device),
        conditions, out_dir, model=model, kind="gan", seed=seed, sampler="gan", steps=1, guidance=0.0,
        batch_size=batch_size, progress=progress)


def write_latent_set(
    generator: LatentDiffusion | str | os.PathLike,
    conditions: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    seed: int,
    sampler: str = "dpm++",
    steps: int | None = None,
    guidance: float = 0.0,
    source=None,
    strength: float = 1.0,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """A synthetic set (PNG + manifest) from the latent model.

    With ``source`` (a :class:`~cxrlib.data.base.CXRDataset` or uint8 images ``[M, 1, S, S]``) the set
    is image-to-image: row *i* translates ``source[conditions.source_row[i]]`` to the row's condition
    at ``strength``; the manifest's sampler reads ``sdedit-<strength>:<sampler>``."""
    model = _as_generator(generator, LatentDiffusion, load_latent_diffusion, device)
    steps = DEFAULT_STEPS.get(sampler, 20) if steps is None else int(steps)
    extra, src = {}, None
    if source is not None:
        if "source_row" not in conditions.columns:
            raise ValueError("image-to-image needs a 'source_row' column in the conditions table (the source image of each row)")
        src = source if isinstance(source, torch.Tensor) else source.to_tensors()[0]
        rows = conditions["source_row"].to_numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(src)):
            raise ValueError(f"source_row values must index the {len(src)} source images; got {rows.min()}..{rows.max()}")
        extra = {"mode": "img2img (SDEdit)", "strength": float(strength), "source": getattr(source, "name", "tensor"),
                 "source_n": len(src)}
    rows_all = conditions["source_row"].to_numpy(dtype=np.int64, copy=True) if src is not None else None

    def sample_fn(rows: slice, cond: Condition, seeds: list[int]) -> torch.Tensor:
        init = src[torch.as_tensor(rows_all[rows], dtype=torch.long)] if src is not None else None
        return sample_latent(model, cond, seeds, sampler=sampler, steps=steps, guidance=guidance, init_images=init,
                             strength=strength, batch_size=batch_size, device=device)

    return write_generated_set(
        sample_fn, conditions, out_dir, model=model, kind="latent-diffusion", seed=seed,
        sampler=f"sdedit-{strength:g}:{sampler}" if src is not None else sampler, steps=steps, guidance=guidance,
        extra=extra, batch_size=batch_size, progress=progress)


# --- any generator of the study ------------------------------------------------------------------
def generator_kind(path: str | os.PathLike) -> str:
    """``"ddpm"``, ``"gan"`` or ``"latent-diffusion"`` from a finished generator folder's ``config.json``."""
    kind = model_kind(read_model_info(path))
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"{Path(path) / 'config.json'}: unknown generator kind {kind!r}; expected one of {GENERATOR_KINDS}")
    return kind


def load_any_generator(path: str | os.PathLike, device: str = "cpu"):
    """Load a finished generator folder of any kind (it has ``generator_id``, ``label_names``, ``image_size``)."""
    kind = generator_kind(path)
    if kind == "gan":
        return load_gan(path, device=device)
    if kind == "latent-diffusion":
        return load_latent_diffusion(path, device=device)
    return load_generator(path, device=device)


def write_set(generator_dir: str | os.PathLike, conditions: pd.DataFrame, out_dir: str | os.PathLike, *, seed: int,
              sampler: str = "dpm++", steps: int | None = None, guidance: float = 0.0, batch_size: int = 64,
              device: str = "cpu", progress: bool = True) -> Path:
    """A synthetic set from any generator folder: the diffusion models sample with ``sampler``/``steps``/
    ``guidance``; the GAN ignores them (one forward pass; its manifest says ``sampler="gan"``)."""
    kind = generator_kind(generator_dir)
    if kind == "gan":
        return write_gan_set(generator_dir, conditions, out_dir, seed=seed, batch_size=batch_size, device=device,
                             progress=progress)
    if kind == "latent-diffusion":
        return write_latent_set(generator_dir, conditions, out_dir, seed=seed, sampler=sampler, steps=steps,
                                guidance=guidance, batch_size=batch_size, device=device, progress=progress)
    return write_synthetic_set(generator_dir, conditions, out_dir, seed=seed, sampler=sampler, steps=steps,
                               guidance=guidance, batch_size=batch_size, device=device, progress=progress)


# --- reading sets back ------------------------------------------------------------------------------
def read_manifest(set_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(set_dir) / "manifest.csv"
    if not path.exists():
        raise FileNotFoundError(f"{set_dir} is not a synthetic set: {path.name} is missing")
    return pd.read_csv(path, dtype={"seed": str, "sex": object}, keep_default_na=True)


def regenerate_image(set_dir: str | os.PathLike, index: int, *, generator=None, device: str = "cpu") -> np.ndarray:
    """Regenerate image ``index`` of a synthetic set alone from its manifest row: uint8 [S, S].

    ``generator`` defaults to the folder recorded in ``synthetic_set.json``; its id must match the manifest's.
    """
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
    model = _as_generator(generator, ConditionalUNet, load_generator, device)
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
