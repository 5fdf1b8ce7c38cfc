"""Sampling a trained diffusion model: samplers, per-image seeds, the reverse process.

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
CPU kernels block the batch dimension, so every network call is padded to a multiple of
:data:`PAD_BATCH` rows (:func:`pad_batch`): image *i* is then bitwise the same whatever the batch size.

Condition tables are built by :mod:`cxrlib.generators.conditions`; synthetic sets on disk by
:mod:`cxrlib.generators.synthetic_sets`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..models.unet import Condition, ConditionalUNet
from ..utils import derive_seed, progress_disabled, resolve_device, torch_generator, tqdm

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


def prepare_model(model, conditions: Condition, seeds: Sequence[int], device):
    """Check one seed per condition and the condition's labels against the generator's; return the
    model on ``device`` in eval mode and the device."""
    if len(seeds) != len(conditions):
        raise ValueError(f"{len(seeds)} seeds for {len(conditions)} conditions")
    if conditions.n_labels != len(model.label_names):
        raise ValueError(f"conditions have {conditions.n_labels} labels; the generator has {len(model.label_names)}: "
                         f"{model.label_names}")
    dev = resolve_device(device)
    return model.to(dev).eval(), dev


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
    from diffusers.utils.torch_utils import randn_tensor

    model, dev = prepare_model(model, conditions, seeds, device)
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
            pred = padded_forward(model, x_in, t, cond, guidance)
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


def pad_batch(x: torch.Tensor, cond: Condition | None = None) -> tuple[torch.Tensor, Condition | None, int]:
    """``(x, cond, b)`` padded with copies of row 0 to a multiple of :data:`PAD_BATCH` rows; ``b`` is the
    original number of rows (keep ``[:b]`` of the result)."""
    b = x.shape[0]
    pad = -b % PAD_BATCH
    if pad:
        rep = torch.zeros(pad, dtype=torch.long, device=x.device)
        x = torch.cat([x, x[rep]])
        cond = Condition.cat([cond, cond[rep]]) if cond is not None else None
    return x, cond, b


def padded_forward(model: ConditionalUNet, x: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float) -> torch.Tensor:
    """``model(x, t, cond, guidance)`` on a batch padded by :func:`pad_batch` (padding rows discarded)."""
    x, cond, b = pad_batch(x, cond)
    return model(x, t.expand(x.shape[0]), cond, guidance=guidance)[:b]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 1, S, S] in [0, 1] -> uint8 [N, S, S] (round to nearest)."""
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


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
