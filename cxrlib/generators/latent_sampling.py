"""Sampling the latent diffusion model (:mod:`cxrlib.generators.latent`), text-to-image and image-to-image.

Sampling (:func:`sample_latent`) runs a diffusers scheduler (:func:`cxrlib.generators.sampling.make_scheduler`)
in latent space and decodes. As the pixel DDPM clips its predicted clean image to the data range
[−1, 1], every step here clips the denoiser's implied clean latent to ``±clip`` (default
:data:`LATENT_CLIP` = 4 standard deviations of the standardized latents; Imagen's *static
thresholding*, Saharia 2022) and turns it back into the model's output type, for every sampler
(:func:`clip_prediction`; the formulas are in :mod:`cxrlib.generators.latent`). **Image-to-image**
(SDEdit, Meng et al. 2022; diffusers' ``StableDiffusionImg2ImgPipeline``): encode a source image,
keep the last ``⌊strength · steps⌋`` of the sampler's timesteps, noise the latent to the first of
them with ``scheduler.add_noise`` and denoise under the *target* condition. ``strength`` 0 returns
the reconstruction of the source, 1 ignores it (nearly).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.unet import Condition
from ..utils import progress_disabled, torch_generator, tqdm
from .latent import LatentDiffusion
from .sampling import DEFAULT_STEPS, SAMPLERS, make_scheduler, pad_batch, padded_forward, prepare_model

# --- sampling ---------------------------------------------------------------------------------------
# Clean-latent clipping of every sampling step, in standard deviations of the standardized latents.
LATENT_CLIP = 4.0


def latent_scheduler(sampler: str, schedule: dict):
    """The study's sampler (:func:`cxrlib.generators.sampling.make_scheduler`) without its clipping to [−1, 1]
    (:func:`clip_prediction` clips in latent units instead, for every sampler)."""
    s = make_scheduler(sampler, schedule)
    if "clip_sample" in s.config:
        return type(s).from_config(s.config, clip_sample=False)
    return type(s).from_config(s.config, thresholding=False) if s.config.get("thresholding") else s


def clip_prediction(pred: torch.Tensor, z: torch.Tensor, t, alphas_cumprod: torch.Tensor, prediction_type: str,
                    clip: float) -> torch.Tensor:
    """The model output ``pred`` (ε or v at noisy latents ``z``, timestep ``t``) with its implied clean
    latent clamped to ``±clip`` (the formulas are in the module docstring)."""
    a = alphas_cumprod.to(z.device)[t].to(z.dtype)
    alpha, sigma = a.sqrt(), (1 - a).sqrt()
    if prediction_type == "epsilon":
        x0 = ((z - sigma * pred) / alpha).clamp(-clip, clip)
        return (z - alpha * x0) / sigma
    if prediction_type == "v_prediction":
        x0 = (alpha * z - sigma * pred).clamp(-clip, clip)
        return (alpha * z - x0) / sigma
    raise ValueError(f"prediction_type={prediction_type!r}: expected 'epsilon' or 'v_prediction'")


def img2img_timesteps(scheduler, steps: int, strength: float):
    """The timesteps SDEdit runs (diffusers ``StableDiffusionImg2ImgPipeline.get_timesteps``): the last
    ``⌊strength · steps⌋`` of the ``steps``-step schedule. Sets the scheduler's begin index."""
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps


@torch.no_grad()
def sample_latent(
    model: LatentDiffusion,
    conditions: Condition,
    seeds: Sequence[int],
    *,
    sampler: str = "dpm++",
    steps: int | None = None,
    guidance: float = 0.0,
    init_images: torch.Tensor | None = None,
    strength: float = 1.0,
    clip: float | None = LATENT_CLIP,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """One image per (condition, seed): float ``[N, 1, S, S]`` in [0, 1] on CPU.

    Text-to-image without ``init_images``; with them (float ``[N, 1, S, S]`` in [0, 1] or uint8),
    SDEdit image-to-image at ``strength`` (module docstring). ``clip``: the clean-latent clipping of
    every step (None = off). Image *i* draws its starting noise and, for ``ddpm``, its ancestral noise
    from a generator seeded with ``seeds[i]``."""
    from diffusers.utils.torch_utils import randn_tensor

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
    steps = DEFAULT_STEPS[sampler] if steps is None else int(steps)
    if not 1 <= steps <= model.config["denoiser"]["schedule"]["num_train_timesteps"]:
        raise ValueError(f"steps={steps}: expected 1..{model.config['denoiser']['schedule']['num_train_timesteps']}")
    if init_images is not None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength={strength}: expected a value in [0, 1]")
        if init_images.dtype == torch.uint8:
            init_images = init_images.float() / 255
        if tuple(init_images.shape) != (len(seeds), 1, model.image_size, model.image_size):
            raise ValueError(f"init_images has shape {tuple(init_images.shape)}; expected {(len(seeds), 1, model.image_size, model.image_size)}")
    model, dev = prepare_model(model, conditions, seeds, device)
    shape = model.latent_shape
    schedule = model.config["denoiser"]["schedule"]
    out = []
    bar = tqdm(total=len(seeds), desc=f"sample latent {sampler}-{steps}", unit="img", disable=not progress or progress_disabled())
    for lo in range(0, len(seeds), batch_size):
        hi = min(lo + batch_size, len(seeds))
        # 1. per-image generators, the scheduler (multistep solvers keep state: one per batch), timesteps
        gens = [torch_generator(s) for s in seeds[lo:hi]]
        scheduler = latent_scheduler(sampler, schedule)
        scheduler.set_timesteps(steps, device=dev)
        noise = randn_tensor((hi - lo, *shape), generator=gens, device=dev, dtype=torch.float32)
        cond = conditions[lo:hi].to(dev)
        if init_images is None:
            timesteps = scheduler.timesteps
            z = noise * scheduler.init_noise_sigma
        else:
            # 2. SDEdit: encode the sources, noise them to the first kept timestep
            timesteps = img2img_timesteps(scheduler, steps, strength)
            x0, _, b = pad_batch(init_images[lo:hi].to(dev))
            z0 = model.encode(x0)[:b]
            z = scheduler.add_noise(z0, noise, timesteps[:1].repeat(hi - lo)) if len(timesteps) else z0
        # 3. the reverse process in latent space, then decode
        for t in timesteps:
            z_in = scheduler.scale_model_input(z, t)
            pred = padded_forward(model.denoiser, z_in, t, cond, guidance)
            if clip is not None:
                pred = clip_prediction(pred, z, t, scheduler.alphas_cumprod, schedule["prediction_type"], clip)
            z = scheduler.step(pred, t, z, generator=gens).prev_sample
        zp, _, b = pad_batch(z)
        out.append(model.decode(zp)[:b].cpu())
        bar.update(hi - lo)
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, 1, model.image_size, model.image_size)
