"""A label-conditional latent diffusion model (Rombach et al. 2022) and its image-to-image mode (SDEdit).

Two networks, both diffusers', trained here on the real training images:

1. **Autoencoder**: diffusers ``AutoencoderKL`` (1 channel in and out; a small config). With
   ``k = len(vae_channels)`` levels an ``S``-px image becomes ``latent_channels × S/2^(k−1) × S/2^(k−1)``
   latents (32 px with 3 levels -> 4 x 8 x 8). Trained with Rombach's KL-regularized objective without
   the perceptual and adversarial terms (no LPIPS weights can be downloaded here)::

       L_AE = Σ_pixels |D(z) − x| + β · KL(q(z|x) ‖ N(0, I)),   z ~ q(z|x),   β = kl_weight

   per image (averaged over the batch). Rombach's β = 1e-6 (with their perceptual and adversarial
   terms) left this small autoencoder's posterior nearly deterministic in some channels, and a
   briefly trained denoiser's samples decoded to blobs; β = 1e-2 (the default here) keeps the
   posterior noise, and hence a decoder that tolerates the denoiser's errors, at the same test L1
   (measured at 32 px: 0.047 with β = 1e-2, 0.047 with 1e-6). The latents are then standardized **per channel** with the
   mean ``m_c`` and standard deviation ``s_c`` of the training set's posterior means,
   ``ẑ = (z − m_c) / s_c`` (Stable Diffusion uses one global factor, 0.18215; a weakly regularized
   autoencoder's channels differ in scale and offset by an order of magnitude, and a diffusion model
   wants zero-mean, unit-variance data in every channel).
2. **Denoiser**: the study's :class:`~cxrlib.models.unet.ConditionalUNet` (diffusers ``UNet2DModel`` +
   the condition encoder added to the time embedding) on the latents, trained exactly like the
   pixel DDPM (:mod:`cxrlib.generators.ddpm`: ε- or v-prediction, condition and field dropout for
   classifier-free guidance, warm-up, gradient clipping, EMA), on ``ẑ = (μ + σ ε − m) / s``.

Sampling (:func:`cxrlib.generators.latent_sampling.sample_latent`) runs a diffusers scheduler (:func:`cxrlib.generators.sampling.make_scheduler`)
in latent space and decodes. As the pixel DDPM clips its predicted clean image to the data range
[−1, 1], every step here clips the denoiser's implied clean latent to ``±clip`` (default
:data:`LATENT_CLIP` = 4 standard deviations of the standardized latents; Imagen's *static
thresholding*, Saharia 2022) and turns it back into the model's output type, for every sampler::

    x̂0 = (z_t − σ_t ε̂) / α_t  (ε)   or   α_t z_t − σ_t v̂  (v),      x̂0 ← clamp(x̂0, −clip, clip),
    ε̂ ← (z_t − α_t x̂0) / σ_t,        v̂ ← (α_t z_t − x̂0) / σ_t,       α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t).

Without it, a briefly trained denoiser's poor predictions at high noise (where x̂0 divides by a tiny
α_t) throw the trajectory far off the latent distribution and the decoder returns blobs (measured
here: a CPU-trained model gave blobs unclipped and lung fields clipped at ±2.5 or ±4). **Image-to-image**
(SDEdit, Meng et al. 2022; diffusers' ``StableDiffusionImg2ImgPipeline``): encode a source image,
keep the last ``⌊strength · steps⌋`` of the sampler's timesteps, noise the latent to the first of
them with ``scheduler.add_noise`` and denoise under the *target* condition. ``strength`` 0 returns
the reconstruction of the source, 1 ignores it (nearly).

Run folder (``out_dir``) of :func:`train_latent_diffusion`::

    options.json            every option + a fingerprint of the training data
    autoencoder_log.csv     step, loss, l1, kl, images_per_s
    train_log.csv           step, loss, lr, images_per_s        (the denoiser)
    autoencoder/            the finished autoencoder (weights.safetensors + config.json)
    resume/autoencoder.pt   resume states (plain tensors, loaded with weights_only=True)
    resume/denoiser.pt
    model/                  the finished model: weights.safetensors (autoencoder + EMA denoiser) +
                            config.json (kind "latent-diffusion", latent mean/std, both configs)
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from ..data.labels import CHEXPERT_LABELS, check_label_names
from ..io import atomic_write_json, load_tensors, save_tensors
from ..models.unet import ConditionalUNet, GeneratorModel, generator_config
from ..utils import derive_seed, progress_disabled, resolve_device, torch_generator, tqdm
from .training_utils import (append_csv, batch_indices, load_model_folder, load_resume_state, open_run_folder,
                             save_model_folder, save_resume_state, training_tensors)

# Sizes and recipes: ``train_latent_diffusion(**LATENT_PRESETS["cpu"], train_data=..., out_dir=...)``.
LATENT_PRESETS: dict[str, dict] = {
    # Unit tests: 16 px -> 2 x 8 x 8 latents.
    "tiny": dict(image_size=16, vae_channels=(8, 8), latent_channels=2, vae_steps=3, vae_batch_size=4,
                 unet_channels=(16, 16), layers_per_block=1, attention=(False, False), cond_hidden=16,
                 time_scale_shift="scale_shift", label_channels=True,
                 total_steps=4, batch_size=4, warmup_steps=1, ema_decay=0.9, checkpoint_every=2),
    # Laptop CPU, 32 px -> 4 x 8 x 8 latents.
    "cpu": dict(image_size=32, vae_channels=(16, 32, 64), latent_channels=4, vae_steps=400, vae_batch_size=32, vae_lr=1e-3,
                unet_channels=(32, 64), layers_per_block=1, attention=(False, True), cond_hidden=128,
                time_scale_shift="scale_shift", label_channels=True, total_steps=800, batch_size=64, lr=1e-3,
                warmup_steps=80, ema_decay=0.995),
    # 256 px -> 4 x 32 x 32 latents (Stable Diffusion's f = 8), one GPU.
    "paper": dict(image_size=256, vae_channels=(64, 128, 256, 256), latent_channels=4, vae_steps=50_000, vae_batch_size=16,
                  vae_lr=1e-4, unet_channels=(128, 256, 512), layers_per_block=2, attention=(False, True, True),
                  cond_hidden=512, total_steps=100_000, batch_size=64, lr=1e-4, warmup_steps=1000, ema_decay=0.9999,
                  prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2", checkpoint_every=5000, log_every=100),
}


# Bumped whenever a code change changes what training produces (it is part of the cache key).
FORMAT_VERSION = 4


_RESUME_FREE_OPTIONS = ("device", "progress", "resume", "checkpoint_every", "log_every", "total_steps")


def autoencoder_config(*, image_size: int, vae_channels: Sequence[int], latent_channels: int, vae_layers_per_block: int = 1) -> dict:
    """Keyword arguments of diffusers' ``AutoencoderKL`` for 1-channel images."""
    ch = [int(c) for c in vae_channels]
    if image_size % 2 ** (len(ch) - 1):
        raise ValueError(f"image_size={image_size} must be divisible by 2**{len(ch) - 1} for vae_channels={ch}")
    groups = min(32, *ch)
    while any(c % groups for c in ch):
        groups //= 2
    return dict(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * len(ch),
                up_block_types=["UpDecoderBlock2D"] * len(ch), block_out_channels=ch, layers_per_block=int(vae_layers_per_block),
                latent_channels=int(latent_channels), norm_num_groups=groups, sample_size=int(image_size))


def latent_size(ae_config: dict) -> int:
    return ae_config["sample_size"] // 2 ** (len(ae_config["block_out_channels"]) - 1)


def denoiser_config(ae_config: dict, **generator_options) -> dict:
    """The latent denoiser's config: the pixel DDPM's (:func:`generator_config` with ``generator_options``)
    at the latent size, seeing the autoencoder's latent channels (+ the label channels) instead of one
    image channel."""
    latent_channels = int(ae_config["latent_channels"])
    den = generator_config(image_size=latent_size(ae_config), **generator_options)
    den["unet"].update(in_channels=den["unet"]["in_channels"] - 1 + latent_channels, out_channels=latent_channels)
    return den


class LatentDiffusion(GeneratorModel):
    """``vae`` (AutoencoderKL) + ``denoiser`` (ConditionalUNet on the scaled latents).

    ``config = {"autoencoder": AutoencoderKL kwargs, "denoiser": generator_config of the latent UNet,
    "latent_mean": [C floats], "latent_std": [C floats], "image_size": int, "labels": [...]}``."""

    def __init__(self, config: dict):
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = copy.deepcopy(config)
        self.vae = AutoencoderKL(**self.config["autoencoder"])
        self.denoiser = ConditionalUNet(self.config["denoiser"])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = latent_size(self.config["autoencoder"])
        return (self.config["autoencoder"]["latent_channels"], s, s)

    def _moments(self, like: torch.Tensor):
        m = torch.tensor(self.config["latent_mean"], dtype=like.dtype, device=like.device)[None, :, None, None]
        s = torch.tensor(self.config["latent_std"], dtype=like.dtype, device=like.device)[None, :, None, None]
        return m, s

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> standardized posterior means ``(μ(x) − m) / s`` (deterministic)."""
        mu = self.vae.encode(images * 2 - 1).latent_dist.mean
        m, s = self._moments(mu)
        return (mu - m) / s

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardized latents -> images in [0, 1]."""
        m, s = self._moments(latents)
        x = self.vae.decode(latents * s + m).sample
        return ((x.clamp(-1, 1) + 1) / 2).float()


def train_latent_diffusion(
    *,
    train_data,                                  # CXRDataset/ArrayDataset at image_size
    out_dir: str | os.PathLike,                  # run folder (module docstring)
    labels: Sequence[str] = CHEXPERT_LABELS,     # findings conditioned on
    image_size: int = 32,
    # autoencoder ---------------------------------------------------------------------------------
    vae_channels: Sequence[int] = (16, 32, 64),  # AutoencoderKL widths per level (levels − 1 halvings)
    latent_channels: int = 4,
    vae_layers_per_block: int = 1,
    vae_steps: int = 400,                        # autoencoder optimizer steps
    vae_batch_size: int = 32,
    vae_lr: float = 1e-3,                        # AdamW, constant
    kl_weight: float = 1e-2,                     # β of the KL term (see the module docstring)
    # denoiser (as cxrlib.generators.ddpm.train_generator) ----------------------------------------------
    unet_channels: Sequence[int] = (64, 128),    # latent UNet widths per level
    layers_per_block: int = 2,
    attention: Sequence[bool] | None = None,     # self-attention per level (default: the lowest resolution)
    norm_groups: int = 32,
    cond_hidden: int = 128,
    time_scale_shift: str = "default",           # "scale_shift": AdaGN conditioning (cxrlib.models.unet.generator_config)
    label_channels: bool = False,                # label states also as constant input channels
    total_steps: int = 1500,                     # denoiser optimizer steps
    batch_size: int = 64,
    lr: float = 1e-3,                            # AdamW, constant after a linear warm-up
    warmup_steps: int = 100,
    grad_clip: float = 1.0,
    ema_decay: float = 0.995,
    cond_drop_prob: float = 0.1,                 # P(whole condition nulled): classifier-free guidance
    field_drop_prob: float = 0.1,                # P(each field nulled)
    prediction_type: str = "epsilon",
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    # run -------------------------------------------------------------------------------------------
    device: str = "cpu",
    seed: int = 0,
    resume: bool = True,
    checkpoint_every: int = 250,
    log_every: int = 10,
    progress: bool = True,
) -> Path:
    """Train (or resume) the autoencoder, then the latent denoiser; return the finished folder ``out_dir/model``."""
    from diffusers import AutoencoderKL
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from .ddpm import diffusion_loss, noise_scheduler

    # 1. Options, data, options.json (a resumed run must match it)
    out_dir = Path(out_dir)
    labels = list(check_label_names(labels, allowed=tuple(train_data.label_names), where="labels"))
    ae_cfg = autoencoder_config(image_size=image_size, vae_channels=vae_channels, latent_channels=latent_channels,
                                vae_layers_per_block=vae_layers_per_block)
    den_cfg = denoiser_config(ae_cfg, labels=labels, channels=unet_channels, layers_per_block=layers_per_block,
                              attention=attention, norm_groups=min(norm_groups, *[int(c) for c in unet_channels]),
                              cond_hidden=cond_hidden, prediction_type=prediction_type, beta_schedule=beta_schedule,
                              num_train_timesteps=num_train_timesteps, time_scale_shift=time_scale_shift,
                              label_channels=label_channels)
    for name, p in (("cond_drop_prob", cond_drop_prob), ("field_drop_prob", field_drop_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p}: expected a probability in [0, 1]")
    if min(vae_steps, total_steps, batch_size, vae_batch_size) < 1:
        raise ValueError(f"vae_steps={vae_steps}, total_steps={total_steps}, batch sizes {vae_batch_size}/{batch_size} must be >= 1")
    images_u8, cond_all, fp = training_tensors(train_data, labels, image_size, progress=progress)
    options = dict(autoencoder=ae_cfg, denoiser=den_cfg, vae_steps=vae_steps, vae_batch_size=vae_batch_size, vae_lr=vae_lr,
                   kl_weight=kl_weight, total_steps=total_steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                   grad_clip=grad_clip, ema_decay=ema_decay, cond_drop_prob=cond_drop_prob, field_drop_prob=field_drop_prob,
                   seed=seed, data=dict(name=train_data.name, n=len(train_data), size=int(image_size), sha256=fp),
                   device=device, progress=progress, resume=resume, checkpoint_every=checkpoint_every, log_every=log_every)
    ae_dir, model_dir = out_dir / "autoencoder", out_dir / "model"
    ae_state, den_state = out_dir / "resume" / "autoencoder.pt", out_dir / "resume" / "denoiser.pt"
    ae_log, den_log = out_dir / "autoencoder_log.csv", out_dir / "train_log.csv"
    if open_run_folder(out_dir, options, resume=resume, free=_RESUME_FREE_OPTIONS, what="latent-diffusion",
                       restart=(ae_dir, ae_state.parent, ae_log, den_log)):
        return model_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "options.json", options)
    dev = resolve_device(device)
    n = len(images_u8)

    # 2. The autoencoder (skipped once autoencoder/ is finished)
    torch.manual_seed(derive_seed(seed, "latent", "vae-init"))
    vae = AutoencoderKL(**ae_cfg).to(dev)
    if (ae_dir / "config.json").exists():
        vae.load_state_dict(load_tensors(ae_dir / "weights.safetensors"))
    else:
        opt = torch.optim.AdamW(vae.parameters(), lr=vae_lr)
        step = load_resume_state(ae_state, log=ae_log, model=vae, optimizer=opt) if resume else 0
        vae.train()
        bar = tqdm(total=vae_steps, initial=step, desc="train autoencoder", unit="step", disable=not progress or progress_disabled())
        t_last, step_last = time.perf_counter(), step
        while step < vae_steps:
            # 2a. batch and posterior sample z ~ q(z|x) from this step's generator
            idx = batch_indices(step, vae_batch_size, n, derive_seed(seed, "vae"))
            g = torch_generator(derive_seed(seed, "vae-step", step))
            x = (images_u8[idx].float() / 127.5 - 1.0).to(dev)
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(dev)
            # 2b. L = Σ_pixels |x̂ − x| + β KL, per image
            rec = vae.decode(z).sample
            l1 = (rec - x).abs().sum(dim=(1, 2, 3)).mean()
            kl = post.kl().mean()
            loss = l1 + kl_weight * kl
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite autoencoder loss at step {step + 1} of {out_dir}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(l1=f"{l1.item() / x[0].numel():.4f}")
            if step % max(log_every, 1) == 0 or step == vae_steps:
                now = time.perf_counter()
                append_csv(ae_log, ["step", "loss", "l1_per_pixel", "kl", "images_per_s"],
                            [step, loss.item(), l1.item() / x[0].numel(), kl.item(), vae_batch_size * (step - step_last) / (now - t_last)])
                t_last, step_last = now, step
            if (checkpoint_every and step % checkpoint_every == 0) or step == vae_steps:
                save_resume_state(ae_state, step=step, model=vae, optimizer=opt)
        bar.close()
        ae_dir.mkdir(parents=True, exist_ok=True)
        save_tensors(ae_dir / "weights.safetensors", vae.state_dict(), metadata={"format": "pt"})
        atomic_write_json(ae_dir / "config.json", {"autoencoder": ae_cfg, "steps_done": step})
    vae.eval().requires_grad_(False)

    # 3. Latents of the training set: posterior means and stds; per-channel mean and std of μ
    mus, sds = [], []
    with torch.no_grad():
        for lo in range(0, n, 256):
            post = vae.encode((images_u8[lo:lo + 256].float() / 127.5 - 1.0).to(dev)).latent_dist
            mus.append(post.mean.cpu())
            sds.append(post.std.cpu())
    mu_all, sd_all = torch.cat(mus), torch.cat(sds)
    lat_mean, lat_std = mu_all.mean(dim=(0, 2, 3)), mu_all.std(dim=(0, 2, 3))
    config = {"autoencoder": ae_cfg, "denoiser": den_cfg, "latent_mean": [float(v) for v in lat_mean],
              "latent_std": [float(v) for v in lat_std], "image_size": int(image_size), "labels": labels}
    lat_mean, lat_std = lat_mean[None, :, None, None], lat_std[None, :, None, None]

    # 4. The denoiser on ẑ = (μ + σ ε − m) / s: the pixel DDPM's recipe (cxrlib.generators.ddpm) on latents
    torch.manual_seed(derive_seed(seed, "latent", "unet-init"))
    model = ConditionalUNet(den_cfg).to(dev)
    ema = EMAModel(model.parameters(), decay=ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    lr_sched = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    scheduler = noise_scheduler(den_cfg["schedule"])
    step = load_resume_state(den_state, log=den_log, total_steps=total_steps, model=model, ema=ema, optimizer=optimizer,
                             lr_scheduler=lr_sched) if resume else 0
    ema.to(dev)
    model.train()
    n_labels = len(labels)
    bar = tqdm(total=total_steps, initial=step, desc="train latent denoiser", unit="step", disable=not progress or progress_disabled())
    t_last, step_last, loss_sum, n_loss = time.perf_counter(), step, 0.0, 0
    while step < total_steps:
        # 4a. batch, timesteps, noise, posterior noise and condition dropout from this step's generator
        idx = batch_indices(step, batch_size, n, seed)
        g = torch_generator(derive_seed(seed, "step", step))
        t = torch.randint(0, num_train_timesteps, (batch_size,), generator=g)
        noise = torch.randn((batch_size, *mu_all.shape[1:]), generator=g)
        eps_post = torch.randn((batch_size, *mu_all.shape[1:]), generator=g)
        drop_all = torch.rand(batch_size, generator=g) < cond_drop_prob
        drop = (torch.rand(batch_size, n_labels + 2, generator=g) < field_drop_prob) | drop_all[:, None]
        z0 = ((mu_all[idx] + sd_all[idx] * eps_post - lat_mean) / lat_std).to(dev)
        cond = cond_all[idx].drop(labels=drop[:, :n_labels], sex=drop[:, -2], age=drop[:, -1]).to(dev)
        t, noise = t.to(dev), noise.to(dev)
        # 4b. forward diffusion, target, loss
        z_t = scheduler.add_noise(z0, noise, t)
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(z0, noise, t)
        loss = diffusion_loss(model(z_t, t, cond), target)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite loss at denoiser step {step + 1} of {out_dir}")
        # 4c. backward, clip, step, EMA
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        lr_sched.step()
        ema.step(model.parameters())
        step += 1
        # 4d. log, checkpoint
        loss_sum, n_loss = loss_sum + loss.item(), n_loss + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % max(log_every, 1) == 0 or step == total_steps:
            now = time.perf_counter()
            append_csv(den_log, ["step", "loss", "lr", "images_per_s"],
                        [step, loss_sum / n_loss, lr_sched.get_last_lr()[0], batch_size * (step - step_last) / (now - t_last)])
            t_last, step_last, loss_sum, n_loss = now, step, 0.0, 0
        if (checkpoint_every and step % checkpoint_every == 0) or step == total_steps:
            save_resume_state(den_state, step=step, model=model, ema=ema, optimizer=optimizer, lr_scheduler=lr_sched)
    bar.close()

    # 5. The finished model: autoencoder + EMA denoiser + config
    final = LatentDiffusion(config)
    final.vae.load_state_dict(vae.state_dict())
    ema.copy_to(final.denoiser.parameters())
    training = {k: v for k, v in options.items() if k not in ("autoencoder", "denoiser")} | {"steps_done": step}
    save_latent_diffusion(final, model_dir, training=training)
    return model_dir


# --- finished models -------------------------------------------------------------------------------
# --- finished models -------------------------------------------------------------------------------
def save_latent_diffusion(model: LatentDiffusion, path: str | os.PathLike, training: dict | None = None) -> Path:
    """``weights.safetensors`` (``vae.*`` and ``denoiser.*``) then ``config.json`` (kind ``latent-diffusion``)."""
    return save_model_folder(model, path, config_key="latent", kind="latent-diffusion", training=training)


def load_latent_diffusion(path: str | os.PathLike, device: str = "cpu") -> LatentDiffusion:
    """Load a finished latent-diffusion folder in eval mode (weights must hash to the recorded id)."""
    return load_model_folder(path, LatentDiffusion, config_key="latent", kind="latent-diffusion",
                             what="latent diffusion model", device=device)
