"""A label-conditional GAN for 1-channel chest radiographs (32-256 px): the GAN arm of Schaudt et al. (2023).

No library ships a conditional GAN for this setting, so this one is written compactly from the
standard parts:

* **Generator** (DCGAN-like, Radford 2016): ``z ~ N(0, I)`` and the encoded condition go through a
  linear layer to a 4x4 map, then per level nearest-neighbour 2x upsampling and a 3x3 convolution,
  up to the image size; ``tanh`` output in [-1, 1]. Every level is normalized by a **conditional
  GroupNorm** (GroupNorm without affine parameters, then a per-channel gain and bias computed from
  the condition embedding joined with ``z``: BigGAN's conditional normalization with hierarchical
  latents, Brock 2019, without batch statistics, so an image never depends on the others in its batch).
* **Discriminator** with **projection** conditioning (Miyato & Koyama 2018): strided 4x4 convolutions
  with spectral normalization (Miyato 2018) and LeakyReLU(0.2) down to 4x4, ProGAN's minibatch
  standard deviation channel (Karras 2018; against mode collapse, which a first version without it
  showed after a few hundred steps), a 3x3 convolution, features ``φ(x) = Σ_spatial h``, and
  ``D(x, c) = w·φ(x) + ⟨e(c), φ(x)⟩``.
* The condition (labels, sex, age, each with a null state) is encoded by the study's
  :class:`~cxrlib.models.unet.ConditionEncoder`, the encoder of the conditional DDPM, so the GAN is
  conditioned on exactly the same vectors.
* **Hinge loss** (Lim & Ye 2017; Miyato 2018)::

      L_D = E[max(0, 1 − D(x, c))] + E[max(0, 1 + D(G(z, c), c))],     L_G = −E[D(G(z, c), c)]

  with Adam(β = (0, 0.9)), one D step per G step, and an **EMA** of the generator's weights
  (Karras 2018; diffusers' ``EMAModel``) as the finished model.
* **DiffAugment** translation (Zhao et al. 2020) on real and fake images before D (on by default):
  the standard remedy for a discriminator that overfits a small training set. No flips (a chest
  radiograph is lateralized).

Run folder (``out_dir``) of :func:`train_gan`, as :func:`cxrlib.generators.ddpm.train_generator`'s::

    options.json        every option + a fingerprint of the training data (a resumed run must match)
    train_log.csv       step, d_loss, g_loss, d_real, d_fake, images_per_s
    resume/state.pt     G, D, EMA, optimizers, step, RNG state (plain tensors; weights_only load)
    model/              weights.safetensors (the EMA generator) + config.json (kind "gan")

Randomness: step *k* draws its batch from per-epoch permutations and its latents and translations
from ``derive_seed(seed, "step", k)``, so a resumed run equals an uninterrupted one (bit for bit on
CPU). Sampling draws the latent of image *i* from its own seed (:func:`sample_gan`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..data.labels import CHEXPERT_LABELS, check_label_names
from ..io import atomic_write_json
from ..models.unet import Condition, ConditionEncoder, GeneratorModel
from ..utils import derive_seed, progress_disabled, resolve_device, torch_generator, tqdm
from .sampling import pad_batch, prepare_model
from .training_utils import (append_csv, batch_indices, load_model_folder, load_resume_state, open_run_folder,
                             save_model_folder, save_resume_state, training_tensors)

# Sizes and recipes: ``train_gan(**GAN_PRESETS["cpu"], train_data=..., out_dir=...)``.
GAN_PRESETS: dict[str, dict] = {
    # Unit tests: 16 px, a few thousand parameters.
    "tiny": dict(image_size=16, z_dim=8, g_channels=(16, 8, 8), d_channels=(8, 16), cond_hidden=8, total_steps=4,
                 batch_size=4, checkpoint_every=2),
    # Laptop CPU, 32 px.
    "cpu": dict(image_size=32, z_dim=64, g_channels=(128, 64, 32, 16), d_channels=(32, 64, 128), cond_hidden=64,
                total_steps=1500, batch_size=64, lr_g=2e-4, lr_d=4e-4, ema_decay=0.99),
    # 256 px on one GPU.
    "paper": dict(image_size=256, z_dim=128, g_channels=(512, 512, 256, 256, 128, 64, 32), d_channels=(32, 64, 128, 256, 512, 512),
                  cond_hidden=256, total_steps=100_000, batch_size=64, lr_g=1e-4, lr_d=4e-4, ema_decay=0.9999,
                  checkpoint_every=5000, log_every=100),
}


# Bumped whenever a code change changes what training produces (it is part of the cache key).
FORMAT_VERSION = 1


_RESUME_FREE_OPTIONS = ("device", "progress", "resume", "checkpoint_every", "log_every", "total_steps")


def gan_config(*, image_size: int, labels: Sequence[str] = CHEXPERT_LABELS, z_dim: int = 64,
               g_channels: Sequence[int] = (128, 64, 32, 16), d_channels: Sequence[int] = (32, 64, 128),
               cond_hidden: int = 64, norm_groups: int = 8) -> dict:
    """The JSON-able architecture. ``g_channels`` are the generator widths at 4x4, 8x8, ..., image_size
    (``log2(image_size / 4) + 1`` entries); ``d_channels`` the discriminator widths after each strided
    convolution, from image_size / 2 down to 4x4 (``log2(image_size / 4)`` entries)."""
    labels = list(check_label_names(labels, where="labels"))
    levels = math.log2(image_size / 4) if image_size >= 4 else -1
    if levels != int(levels) or levels < 1:
        raise ValueError(f"image_size={image_size}: expected a power of two >= 8 (e.g. 32, 64, 128, 256)")
    levels = int(levels)
    g_channels, d_channels = [int(c) for c in g_channels], [int(c) for c in d_channels]
    if len(g_channels) != levels + 1:
        raise ValueError(f"g_channels={g_channels}: image_size={image_size} needs {levels + 1} widths (4x4 ... {image_size}x{image_size})")
    if len(d_channels) != levels:
        raise ValueError(f"d_channels={d_channels}: image_size={image_size} needs {levels} widths ({image_size // 2}x{image_size // 2} ... 4x4)")
    groups = min(norm_groups, *g_channels)
    if any(c % groups for c in g_channels):
        raise ValueError(f"norm_groups={norm_groups} must divide every entry of g_channels={g_channels}")
    return {"image_size": int(image_size), "labels": labels, "z_dim": int(z_dim), "g_channels": g_channels,
            "d_channels": d_channels, "cond_hidden": int(cond_hidden), "norm_groups": int(groups)}


class ConditionalNorm(nn.Module):
    """``GroupNorm(h) · (1 + γ(e)) + β(e)``: γ, β linear in the condition embedding ``e`` (zero at init)."""

    def __init__(self, channels: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.proj = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(e)[:, :, None, None].chunk(2, dim=1)
        return self.norm(h) * (1 + gamma) + beta


class GANGenerator(GeneratorModel):
    """``G(z, cond)`` -> images ``[B, 1, S, S]`` in [-1, 1] (see the module docstring)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        ch, emb = config["g_channels"], config["cond_hidden"] + config["z_dim"]
        self.cond_encoder = ConditionEncoder(len(config["labels"]), config["cond_hidden"], config["cond_hidden"])
        self.fc = nn.Linear(emb, ch[0] * 16)
        self.norms = nn.ModuleList([ConditionalNorm(c, emb, config["norm_groups"]) for c in ch])
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3, padding=1) for a, b in zip(ch[:-1], ch[1:])])
        self.to_image = nn.Conv2d(ch[-1], 1, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        if len(cond) != z.shape[0]:
            raise ValueError(f"{len(cond)} conditions for {z.shape[0]} latents")
        # 1. condition embedding joined with z (it also drives every norm: BigGAN's hierarchical z), then the 4x4 map
        e = torch.cat([self.cond_encoder(cond), z], dim=1)
        h = self.fc(e).view(z.shape[0], -1, 4, 4)
        # 2. per level: conditional norm, ReLU, 2x nearest upsampling, 3x3 conv
        for norm, conv in zip(self.norms[:-1], self.convs):
            h = conv(F.interpolate(F.relu(norm(h, e)), scale_factor=2, mode="nearest"))
        # 3. to one channel in [-1, 1]
        return torch.tanh(self.to_image(F.relu(self.norms[-1](h, e))))


class GANDiscriminator(nn.Module):
    """Projection discriminator ``D(x, cond) = w·φ(x) + ⟨e(cond), φ(x)⟩`` with spectral norm."""

    def __init__(self, config: dict):
        super().__init__()
        ch = [1] + list(config["d_channels"])
        self.convs = nn.ModuleList([spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)) for a, b in zip(ch[:-1], ch[1:])])
        self.conv_out = spectral_norm(nn.Conv2d(ch[-1] + 1, ch[-1], 3, padding=1))
        self.linear = spectral_norm(nn.Linear(ch[-1], 1))
        self.embed = ConditionEncoder(len(config["labels"]), config["cond_hidden"], ch[-1])
        self.embed.out[1] = spectral_norm(self.embed.out[1])

    def forward(self, x: torch.Tensor, cond: Condition) -> torch.Tensor:
        # 1. features φ(x): strided convolutions down to 4x4, the minibatch standard deviation (Karras
        #    2018: a collapsed batch of fakes is told apart by its low spread), a sum over positions
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        h = torch.cat([h, minibatch_std(h)], dim=1)
        phi = F.leaky_relu(self.conv_out(h), 0.2).sum(dim=(2, 3))
        # 2. unconditional term + projection of the condition embedding
        return self.linear(phi)[:, 0] + (self.embed(cond) * phi).sum(dim=1)


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """One extra channel: the standard deviation of each feature over groups of ``group`` images,
    averaged over features and positions (ProGAN's minibatch-stddev layer)."""
    b, c, s1, s2 = h.shape
    g = group if b % group == 0 else 1
    y = h.float().view(g, -1, c, s1, s2)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [b / g]
    return y.repeat(g)[:, None, None, None].expand(b, 1, s1, s2).to(h.dtype)


def translate(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """DiffAugment translation (Zhao 2020): shift each image by up to ``ratio · S`` pixels in x and y,
    filling with black (−1). Differentiable in ``x``; the shifts come from ``generator`` (CPU)."""
    b, _, s, _ = x.shape
    p = int(s * ratio + 0.5)
    if p == 0:
        return x
    shift = torch.randint(-p, p + 1, (b, 2), generator=generator).to(x.device)
    padded = F.pad(x, (p, p, p, p), value=-1.0)
    idx = torch.arange(s, device=x.device)
    rows = idx[None, :] + p - shift[:, :1]
    cols = idx[None, :] + p - shift[:, 1:]
    return padded[torch.arange(b, device=x.device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def hinge_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()


def train_gan(
    *,
    train_data,                                   # CXRDataset/ArrayDataset at image_size; labels after its policy
    out_dir: str | os.PathLike,                   # run folder (module docstring)
    labels: Sequence[str] = CHEXPERT_LABELS,      # findings conditioned on
    image_size: int = 32,                         # must equal train_data.size
    z_dim: int = 64,                              # latent dimension
    g_channels: Sequence[int] = (128, 64, 32, 16),  # generator widths at 4x4 ... image_size
    d_channels: Sequence[int] = (32, 64, 128),    # discriminator widths at image_size/2 ... 4x4
    cond_hidden: int = 64,                        # width of the condition encoders
    total_steps: int = 1500,                      # generator (= discriminator) steps
    batch_size: int = 64,
    lr_g: float = 2e-4,                           # Adam learning rates (constant)
    lr_d: float = 4e-4,                           # (two time-scale update rule: D faster, Heusel 2017)
    betas: tuple[float, float] = (0.0, 0.9),      # Adam betas (SNGAN / BigGAN)
    ema_decay: float = 0.99,                      # EMA of G (0 = the finished model is the raw G); short CPU runs need a fast one
    augment: bool = True,                         # DiffAugment translation before D
    device: str = "cpu",                          # a requested GPU that is absent is an error
    seed: int = 0,                                # every random stream derives from it
    resume: bool = True,                          # continue from out_dir/resume/state.pt
    checkpoint_every: int = 250,                  # steps between resume states (0 = only at the end)
    log_every: int = 10,                          # steps between rows of train_log.csv
    progress: bool = True,
) -> Path:
    """Train (or resume) the conditional GAN; return the finished model folder ``out_dir/model``."""
    from diffusers.training_utils import EMAModel

    # 1. Options, data, options.json (a resumed run must match it)
    out_dir = Path(out_dir)
    labels = list(check_label_names(labels, allowed=tuple(train_data.label_names), where="labels"))
    arch = gan_config(image_size=image_size, labels=labels, z_dim=z_dim, g_channels=g_channels, d_channels=d_channels,
                      cond_hidden=cond_hidden)
    if total_steps < 1 or batch_size < 1:
        raise ValueError(f"total_steps={total_steps} and batch_size={batch_size} must be >= 1")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay={ema_decay}: expected 0 (off) or a decay in (0, 1)")
    images_u8, cond_all, fp = training_tensors(train_data, labels, image_size, progress=progress)
    options = dict(gan=arch, total_steps=total_steps, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d, betas=list(betas),
                   ema_decay=ema_decay, augment=augment, seed=seed,
                   data=dict(name=train_data.name, n=len(train_data), size=int(image_size), sha256=fp),
                   device=device, progress=progress, resume=resume, checkpoint_every=checkpoint_every, log_every=log_every)
    state_path, model_dir, log_path = out_dir / "resume" / "state.pt", out_dir / "model", out_dir / "train_log.csv"
    if open_run_folder(out_dir, options, resume=resume, free=_RESUME_FREE_OPTIONS, what="GAN",
                       restart=(state_path.parent, log_path)):
        return model_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "options.json", options)

    # 2. Networks (initialized from derived seeds), EMA, optimizers
    dev = resolve_device(device)
    torch.manual_seed(derive_seed(seed, "gan", "init"))
    G, D = GANGenerator(arch).to(dev), GANDiscriminator(arch).to(dev)
    ema = EMAModel(G.parameters(), decay=ema_decay) if ema_decay > 0 else None
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=tuple(betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=tuple(betas))

    # 3. Resume: everything the next step depends on (spectral norm's power-iteration vectors are D buffers)
    step = load_resume_state(state_path, log=log_path, total_steps=total_steps, G=G, D=D, opt_g=opt_g, opt_d=opt_d,
                             ema=ema) if resume else 0
    if ema is not None:
        ema.to(dev)

    # 4. The loop
    G.train(), D.train()
    n = len(images_u8)
    bar = tqdm(total=total_steps, initial=step, desc="train GAN", unit="step", disable=not progress or progress_disabled())
    sums, n_sum, t_last, step_last = torch.zeros(4), 0, time.perf_counter(), step
    while step < total_steps:
        # 4a. this step's batch, latents and augmentation draws
        idx = batch_indices(step, batch_size, n, seed)
        g = torch_generator(derive_seed(seed, "step", step))
        z = torch.randn(batch_size, arch["z_dim"], generator=g).to(dev)
        real = (images_u8[idx].float() / 127.5 - 1.0).to(dev)
        cond = cond_all[idx].to(dev)
        aug = (lambda x: translate(x, g)) if augment else (lambda x: x)

        # 4b. discriminator step (hinge): real images with their conditions vs G's images for the same conditions
        with torch.no_grad():
            fake = G(z, cond)
        d_real, d_fake = D(aug(real), cond), D(aug(fake), cond)
        d_loss = hinge_d_loss(d_real, d_fake)
        # 4c. generator step: −E[D(G(z, c), c)]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = -D(aug(G(z, cond)), cond).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if ema is not None:
            ema.step(G.parameters())
        if not (math.isfinite(d_loss.item()) and math.isfinite(g_loss.item())):
            raise FloatingPointError(f"non-finite GAN loss (D {d_loss.item()}, G {g_loss.item()}) at step {step + 1} of {out_dir}")
        step += 1

        # 4d. log and checkpoint
        sums += torch.tensor([d_loss.item(), g_loss.item(), d_real.mean().item(), d_fake.mean().item()])
        n_sum += 1
        bar.update(1)
        bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
        if step % max(log_every, 1) == 0 or step == total_steps:
            now = time.perf_counter()
            append_csv(log_path, ["step", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s"],
                        [step, *(sums / n_sum).tolist(), batch_size * (step - step_last) / (now - t_last)])
            sums, n_sum, t_last, step_last = torch.zeros(4), 0, now, step
        if (checkpoint_every and step % checkpoint_every == 0) or step == total_steps:
            save_resume_state(state_path, step=step, G=G, D=D, opt_g=opt_g, opt_d=opt_d, ema=ema if ema is not None else {})
    bar.close()

    # 5. The finished generator: EMA weights + config, apart from the resume state
    final = GANGenerator(arch)
    final.load_state_dict(G.state_dict())
    if ema is not None:
        ema.copy_to(final.parameters())
    save_gan(final, model_dir, training={k: v for k, v in options.items() if k != "gan"} | {"steps_done": step})
    return model_dir


# --- finished generators -----------------------------------------------------------------------------
# --- finished generators -----------------------------------------------------------------------------
def save_gan(model: GANGenerator, path: str | os.PathLike, training: dict | None = None) -> Path:
    """``weights.safetensors`` then ``config.json`` (kind ``gan``; written last: marks a finished model)."""
    return save_model_folder(model, path, config_key="gan", kind="gan", training=training)


def load_gan(path: str | os.PathLike, device: str = "cpu") -> GANGenerator:
    """Load a finished GAN folder in eval mode (its weights must hash to the recorded generator id)."""
    return load_model_folder(path, GANGenerator, config_key="gan", kind="gan", what="GAN", device=device)


@torch.no_grad()
def sample_gan(model: GANGenerator, conditions: Condition, seeds: Sequence[int], *, batch_size: int = 64,
               device: str = "cpu") -> torch.Tensor:
    """One image per (condition, seed): float ``[N, 1, S, S]`` in [0, 1] on CPU. The latent of image
    *i* is ``randn(z_dim)`` from a generator seeded with ``seeds[i]``; batches are padded to a multiple
    of :data:`cxrlib.generators.sampling.PAD_BATCH` rows so image *i* is bitwise the same whatever the batch size."""
    model, dev = prepare_model(model, conditions, seeds, device)
    out = []
    for lo in range(0, len(seeds), batch_size):
        hi = min(lo + batch_size, len(seeds))
        z = torch.stack([torch.randn(model.config["z_dim"], generator=torch_generator(s)) for s in seeds[lo:hi]])
        z, cond, b = pad_batch(z, conditions[lo:hi])
        x = model(z.to(dev), cond.to(dev))[:b]
        out.append(((x + 1) / 2).clamp(0, 1).float().cpu())
    size = model.image_size
    return torch.cat(out) if out else torch.zeros(0, 1, size, size)
