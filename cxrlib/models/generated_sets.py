"""What the GAN and the latent diffusion model share with the pixel DDPM: training tensors with the
study's conditions, and synthetic sets on disk in the format of :func:`cxrlib.sampling.write_synthetic_set`.

A synthetic set written here loads with :func:`cxrlib.sampling.load_synthetic_set` like a DDPM's::

    images/000000.png ...   8-bit grayscale
    manifest.csv            file, sha256, index, seed, <labels...>, sex, age, [source_row],
                            generator_id, sampler, steps, guidance
    synthetic_set.json      generator folder + id + kind, set seed, sampler, steps, guidance, labels,
                            image size, sha256 of the manifest, and kind-specific settings (``extra``)

Image *i* draws all its randomness from ``derive_seed(seed, "image", i)`` (:func:`cxrlib.sampling.image_seeds`),
so it does not depend on the batch size or on the other images of the set.

:func:`write_set` writes a set from any generator folder of the study (``kind`` in its ``config.json``):
the pixel DDPM (:mod:`cxrlib.diffusion`), the GAN (:mod:`cxrlib.models.gan`) or the latent diffusion
model (:mod:`cxrlib.models.latent`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from ..utils import progress_disabled, tqdm
from .unet import Condition

GENERATOR_KINDS = ("ddpm", "gan", "latent-diffusion")


def training_tensors(train_data, labels: Sequence[str], image_size: int, progress: bool = False):
    """``(images uint8 [N,1,S,S], Condition of every image, data fingerprint)`` as the DDPM trains on them:
    labels after the dataset's policy (masked = the label's null state), sex and age."""
    from ..data.labels import check_label_names
    from ..diffusion import data_fingerprint

    labels = list(check_label_names(labels, allowed=tuple(train_data.label_names), where="labels"))
    if int(train_data.size) != int(image_size):
        raise ValueError(f"image_size={image_size} but train_data ({train_data.name}) has images of {train_data.size} px; "
                         f"load the data at {image_size} px")
    if len(train_data) == 0:
        raise ValueError(f"train_data ({train_data.name}) is empty")
    x, y, m = train_data.to_tensors(progress=progress)
    col = [list(train_data.label_names).index(n) for n in labels]
    y, m = y[:, col].float(), m[:, col].bool()
    sex_np, age_np = train_data.demographics()
    sex, age = torch.from_numpy(sex_np).long(), torch.from_numpy(age_np).float()
    return x, Condition(y, m, sex, age), data_fingerprint(x, y, m, sex, age)


def write_generated_set(
    sample_fn: Callable[[slice, Condition, list[int]], torch.Tensor],
    conditions: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    label_names: Sequence[str],
    seed: int,
    generator_id: str,
    generator_path: str | None,
    generator_config: dict,
    kind: str,
    image_size: int,
    sampler: str,
    steps: int,
    guidance: float,
    extra: dict | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Write one image per row of ``conditions``: ``sample_fn(rows, cond, seeds)`` returns float images
    ``[n, 1, S, S]`` in ``[0, 1]`` for the table rows ``rows`` (a slice), their :class:`Condition` and
    their per-image seeds. Returns ``out_dir``."""
    from PIL import Image

    from ..sampling import image_seeds, to_uint8

    label_names = list(label_names)
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
    manifest["generator_id"] = generator_id
    manifest["sampler"] = sampler
    manifest["steps"] = int(steps)
    manifest["guidance"] = float(guidance)
    atomic_write_text(out_dir / "manifest.csv", manifest.to_csv(index=False))
    atomic_write_json(out_dir / "synthetic_set.json", {
        "generator_path": generator_path, "generator_id": generator_id, "generator_kind": kind,
        "generator_config": generator_config, "seed": int(seed), "seed_rule": 'derive_seed(seed, "image", index)', "n": n,
        "sampler": sampler, "steps": int(steps), "guidance": float(guidance), "labels": label_names,
        "image_size": int(image_size), "extra": extra or {}, "manifest_sha256": sha256_file(out_dir / "manifest.csv"),
    })
    return out_dir


# --- any generator of the study ------------------------------------------------------------------
def generator_kind(path: str | os.PathLike) -> str:
    """``"ddpm"``, ``"gan"`` or ``"latent-diffusion"`` from a finished generator folder's ``config.json``."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path} is not a finished generator folder: {cfg_path.name} is missing (did training finish?)")
    info = json.loads(cfg_path.read_text())
    kind = info.get("kind", "ddpm" if "generator" in info else None)
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"{cfg_path}: unknown generator kind {kind!r}; expected one of {GENERATOR_KINDS}")
    return kind


def load_any_generator(path: str | os.PathLike, device: str = "cpu"):
    """Load a finished generator folder of any kind (it has ``generator_id``, ``label_names``, ``image_size``)."""
    kind = generator_kind(path)
    if kind == "gan":
        from .gan import load_gan

        return load_gan(path, device=device)
    if kind == "latent-diffusion":
        from .latent import load_latent_diffusion

        return load_latent_diffusion(path, device=device)
    from ..diffusion import load_generator

    return load_generator(path, device=device)


def write_set(generator_dir: str | os.PathLike, conditions: pd.DataFrame, out_dir: str | os.PathLike, *, seed: int,
              sampler: str = "dpm++", steps: int | None = None, guidance: float = 0.0, batch_size: int = 64,
              device: str = "cpu", progress: bool = True) -> Path:
    """A synthetic set from any generator folder: the diffusion models sample with ``sampler``/``steps``/
    ``guidance``; the GAN ignores them (one forward pass; its manifest says ``sampler="gan"``)."""
    kind = generator_kind(generator_dir)
    if kind == "gan":
        from .gan import write_gan_set

        return write_gan_set(generator_dir, conditions, out_dir, seed=seed, batch_size=batch_size, device=device,
                             progress=progress)
    if kind == "latent-diffusion":
        from .latent import write_latent_set

        return write_latent_set(generator_dir, conditions, out_dir, seed=seed, sampler=sampler, steps=steps,
                                guidance=guidance, batch_size=batch_size, device=device, progress=progress)
    from ..sampling import write_synthetic_set

    return write_synthetic_set(generator_dir, conditions, out_dir, seed=seed, sampler=sampler, steps=steps,
                               guidance=guidance, batch_size=batch_size, device=device, progress=progress)
