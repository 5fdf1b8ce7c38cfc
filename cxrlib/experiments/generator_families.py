"""The generator families beside the study's pixel DDPM, as the experiments train and sample them.

* :class:`LatentRecipe` (fields ``ldm_*``) and :data:`LDM_PROFILES`: the latent diffusion model's
  recipe, shared by chapters 7 and 8 (both configs extend it, so both train the same model and share
  it through the cache);
* cached training (:func:`train_cached`) of the label-conditional GAN (:func:`gan_generator`), the
  latent diffusion model (:func:`latent_generator`) and the few-shot fine-tuned DDPM
  (:func:`fewshot_generator`, the DreamBooth analogue);
* :func:`generated_set`: a cached synthetic set from any of them, image-to-image included.

The pixel DDPM itself (the main and the pool-pretrained generator) is :mod:`.synthetic`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..data.base import ArrayDataset, CXRDataset
from ..utils import derive_seed
from . import synthetic
from .common import RealSets, StudyConfig, fingerprint

# The latent-diffusion recipe per profile (chapters 7 and 8 merge these into their own presets).
LDM_PROFILES: dict[str, dict] = {
    "smoke": dict(ldm_vae_channels=(8, 16, 16), ldm_vae_steps=12, ldm_channels=(16, 32), ldm_steps=20, ldm_batch_size=16),
    "cpu": dict(),
    "paper": dict(ldm_vae_channels=(64, 128, 256, 256), ldm_vae_steps=50_000, ldm_vae_batch_size=16, ldm_vae_lr=1e-4,
                  ldm_channels=(128, 256, 512), ldm_steps=100_000, ldm_batch_size=64, ldm_lr=1e-4, ldm_ema_decay=0.9999),
}


@dataclasses.dataclass(frozen=True)
class LatentRecipe(StudyConfig):
    """The study config plus the latent diffusion model's recipe (shared by chapters 7 and 8)."""

    ldm_vae_channels: tuple[int, ...] = (16, 32, 64)  # AutoencoderKL widths; 3 levels: 32 px -> 8x8 latents
    ldm_latent_channels: int = 4  # latent channels
    ldm_vae_steps: int = 300  # autoencoder steps
    ldm_vae_batch_size: int = 32
    ldm_vae_lr: float = 1e-3
    ldm_kl_weight: float = 1e-2  # β of the autoencoder's KL term (larger: smoother latent space; see cxrlib.generators.latent)
    ldm_channels: tuple[int, ...] = (32, 64)  # latent UNet widths (attention at the lowest resolution)
    ldm_steps: int = 800  # latent UNet steps
    ldm_batch_size: int = 64
    ldm_lr: float = 1e-3  # AdamW, constant after warm-up (as the pixel DDPM at cpu)
    ldm_ema_decay: float = 0.995

    def validate(self) -> None:
        super().validate()
        if self.image_size % 2 ** (len(self.ldm_vae_channels) - 1):
            raise ConfigError(f"parameter 'ldm_vae_channels': {len(self.ldm_vae_channels)} levels need image_size divisible by "
                              f"{2 ** (len(self.ldm_vae_channels) - 1)}, got image_size={self.image_size}")


# ------------------------------------------------------------------------------------------------
# Cached training of the GAN and the latent diffusion model
# ------------------------------------------------------------------------------------------------
def train_cached(kind: str, name: str, options: Mapping, train: CXRDataset, train_fn: Callable, *, version: int, device: str,
                 progress: bool = True) -> Path:
    """Train (or fetch) a generator with ``train_fn(train_data=, out_dir=, device=, progress=, **options)``;
    return its finished model folder. As :func:`synthetic.train_cached_generator`: the run trains in
    ``<cache>/work/<key>`` (an interrupted run resumes there) and the finished model and its logs become
    the cache entry ``generator/<key of kind + name + options + training data>``. ``version`` is the
    model code's ``FORMAT_VERSION``: a change of the code that changes what is trained changes the key."""
    from .. import cache as C
    from ..utils import cache_root

    recipe = {"name": name, "kind": kind, "version": int(version), "options": dict(options)}
    inputs = [fingerprint(train)]
    k = C.key("generator", recipe, inputs=inputs)
    work = cache_root() / "work" / C.key("generator-run", recipe, inputs=inputs).digest

    def produce(d: Path):
        model_dir = train_fn(train_data=train, out_dir=work, device=device, progress=progress, **options)
        shutil.copytree(model_dir, d / "model")
        for log in sorted(work.glob("*log.csv")):
            shutil.copy(log, d / log.name)

    entry = C.get_or_create(k, produce, expected_bytes=5e7, description=f"{kind} {name}")
    shutil.rmtree(work, ignore_errors=True)
    return entry / "model"


def gan_options(cfg) -> dict:
    """Keyword arguments of :func:`cxrlib.generators.gan.train_gan` for the config."""
    return dict(labels=tuple(cfg.labels), image_size=cfg.image_size, g_channels=tuple(cfg.gan_g_channels),
                d_channels=tuple(cfg.gan_d_channels), total_steps=cfg.gan_steps, batch_size=cfg.gan_batch_size,
                lr_g=cfg.gan_lr_g, lr_d=cfg.gan_lr_d, ema_decay=cfg.gan_ema_decay, seed=cfg.seed)


def gan_generator(cfg, sets: RealSets, progress: bool = True) -> Path:
    """The label-conditional GAN trained on R (cached)."""
    from ..generators.gan import FORMAT_VERSION, train_gan
    return train_cached("gan", "gan-conditional", gan_options(cfg), sets.train, train_gan, version=FORMAT_VERSION,
                        device=cfg.device, progress=progress)


def latent_options(cfg: LatentRecipe) -> dict:
    """Keyword arguments of :func:`cxrlib.generators.latent.train_latent_diffusion` for the config (the
    denoiser's blocks per level, conditioning (AdaGN, label channels), schedule, prediction type and
    condition dropout are the pixel DDPM's)."""
    return dict(labels=tuple(cfg.labels), image_size=cfg.image_size, vae_channels=tuple(cfg.ldm_vae_channels),
                latent_channels=cfg.ldm_latent_channels, vae_steps=cfg.ldm_vae_steps, vae_batch_size=cfg.ldm_vae_batch_size,
                vae_lr=cfg.ldm_vae_lr, kl_weight=cfg.ldm_kl_weight, unet_channels=tuple(cfg.ldm_channels),
                layers_per_block=cfg.gen_layers, time_scale_shift="scale_shift" if cfg.gen_adagn else "default",
                label_channels=cfg.gen_label_channels, total_steps=cfg.ldm_steps,
                batch_size=cfg.ldm_batch_size, lr=cfg.ldm_lr, warmup_steps=min(100, max(1, cfg.ldm_steps // 10)),
                ema_decay=cfg.ldm_ema_decay, cond_drop_prob=cfg.gen_cond_drop, prediction_type=cfg.gen_prediction,
                beta_schedule=cfg.gen_schedule, seed=cfg.seed)


def latent_generator(cfg: LatentRecipe, sets: RealSets, progress: bool = True) -> Path:
    """The label-conditional latent diffusion model trained on R (cached; shared by chapters 7 and 8)."""
    from ..generators.latent import FORMAT_VERSION, train_latent_diffusion
    return train_cached("latent-diffusion", "ldm-conditional", latent_options(cfg), sets.train, train_latent_diffusion,
                        version=FORMAT_VERSION, device=cfg.device, progress=progress)


def few_shot_subset(train: CXRDataset, labels, k: int, seed: int) -> ArrayDataset:
    """The few-shot training set: for each label, ``k`` images of ``train`` positive for it (drawn
    without replacement, seeded; an image already drawn for an earlier label is not drawn again), plus
    ``k`` images negative for every label. Fewer are taken where fewer exist."""
    from ..utils import torch_generator
    import torch

    y, m = train.targets()
    cols = [list(train.label_names).index(l) for l in labels]
    y, m = y[:, cols], m[:, cols]
    taken: list[int] = []
    pools = [np.flatnonzero((y[:, j] == 1) & m[:, j]) for j in range(len(cols))]
    pools.append(np.flatnonzero(((y == 0) & m).all(axis=1)))  # no study finding
    for j, pool in enumerate(pools):
        pool = np.array([i for i in pool if i not in set(taken)], dtype=np.int64)
        order = torch.randperm(len(pool), generator=torch_generator(derive_seed(seed, "fewshot", j))).numpy()
        taken += pool[order[:k]].tolist()
    out = train.subset(np.array(sorted(taken), dtype=np.int64))
    out.name = f"{train.name}[few-shot k={k}]"
    return out


def fewshot_generator(cfg, sets: RealSets, progress: bool = True) -> Path:
    """The shared unconditional pretrained DDPM fine-tuned conditionally on :func:`few_shot_subset` (cached)."""
    pre = synthetic.pretrained_generator(cfg, sets, progress=progress)
    few = few_shot_subset(sets.train, cfg.labels, cfg.fewshot_k, cfg.seed)
    snaps = synthetic.train_cached_generator(cfg, few, name=f"ddpm-fewshot-k{cfg.fewshot_k}", steps=cfg.fewshot_steps,
                                          init_from=pre, progress=progress, lr=cfg.fewshot_lr,
                                          batch_size=cfg.fewshot_batch_size,
                                          warmup_steps=min(20, max(1, cfg.fewshot_steps // 10)))
    return snaps[cfg.fewshot_steps] / "model"


# ------------------------------------------------------------------------------------------------
# Synthetic sets
# ------------------------------------------------------------------------------------------------
def generated_set(cfg: StudyConfig, generator_dir: str | Path, conditions: pd.DataFrame, *, name: str, seed: int | None = None,
                  sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                  source: CXRDataset | None = None, strength: float = 1.0, progress: bool = True) -> ArrayDataset:
    """As :func:`synthetic.synthetic_set` for any generator kind (DDPM sets are delegated to it), and for
    the latent model's image-to-image sets (``source``, ``strength``): cached, per-image seeds."""
    from .. import cache as C
    from ..io import sha256_bytes
    from ..generators.synthetic_sets import generator_kind, load_any_generator, write_set
    from ..generators.synthetic_sets import load_synthetic_set
    kind = generator_kind(generator_dir)
    if kind == "ddpm" and source is None:
        return synthetic.synthetic_set(cfg, generator_dir, conditions, name=name, seed=seed, sampler=sampler, steps=steps,
                                    guidance=guidance, progress=progress)
    sampler = sampler or cfg.sampler
    steps = int(steps if steps is not None else cfg.sampler_steps)
    guidance = float(cfg.guidance if guidance is None else guidance)
    if kind == "gan":
        sampler, steps, guidance = "gan", 1, 0.0  # one forward pass: the diffusion sampler settings do not apply
    seed = derive_seed(cfg.seed, "synthetic", name) % (2**31) if seed is None else seed
    gid = load_any_generator(generator_dir).generator_id
    cond_hash = sha256_bytes(conditions.to_csv(index=False).encode())[:16]
    spec = {"kind": kind, "sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed, "n": len(conditions)}
    if kind == "latent-diffusion":
        from ..generators.latent_sampling import LATENT_CLIP
        spec["clip"] = LATENT_CLIP
    inputs = [f"generator:{gid}", f"conditions:{cond_hash}"]
    if source is not None:
        if kind != "latent-diffusion":
            raise ValueError(f"image-to-image needs the latent diffusion model; {generator_dir} is a {kind!r} generator")
        spec["strength"] = float(strength)
        inputs.append(f"source:{fingerprint(source)}")
    k = C.key("synthetic", spec, inputs=inputs)

    def produce(d: Path):
        if source is not None:
            from ..generators.synthetic_sets import write_latent_set
            write_latent_set(generator_dir, conditions, d / "set", seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                             source=source, strength=strength, device=cfg.device, progress=progress)
        else:
            write_set(generator_dir, conditions, d / "set", seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                      device=cfg.device, progress=progress)

    entry = C.get_or_create(k, produce, expected_bytes=len(conditions) * (cfg.image_size**2 + 400) + 1e5,
                            description=f"synthetic {name}: {len(conditions)} images")
    ds = load_synthetic_set(entry / "set", verify=False)  # the cache verified every file already
    ds.name = f"synthetic:{name}"
    return ds


# ------------------------------------------------------------------------------------------------
# The cost plan's view of them (chapters 7 and 8, cxrlib.plan)
# ------------------------------------------------------------------------------------------------
def network_evaluations(cfg: StudyConfig, kind: str, strength: float = 1.0) -> int:
    """Network evaluations per image of a :func:`generated_set` of a ``kind`` generator at the config's
    sampler: the GAN's one forward pass; a diffusion model's ``sampler_steps`` (x2 under classifier-free
    guidance), of which image-to-image at ``strength`` runs the last ``⌊strength · sampler_steps⌋``
    (:func:`cxrlib.generators.latent_sampling.img2img_timesteps`)."""
    from ..plan import evaluations

    if kind == "gan":
        return 1
    steps = min(int(cfg.sampler_steps * strength), cfg.sampler_steps)
    return evaluations(steps, cfg.guidance)


def latent_jobs(cfg: LatentRecipe, n_train: int) -> list:
    """The plan's jobs of :func:`latent_generator` on R (``n_train`` images): the autoencoder, then the
    latent denoiser. Both chapters 7 and 8 train this very cache entry (same function, options from the
    shared :class:`LatentRecipe`), so both are marked shared; a book plan counts them once."""
    from ..plan import Job

    return [Job("generator", "ldm: autoencoder of the latent diffusion model, on R", cfg.ldm_vae_steps,
                cfg.ldm_vae_batch_size, cfg.image_size, "generator", n_train, shared="latent generator: autoencoder",
                step_flops=family_flops(cfg, "autoencoder")[0]),
            Job("generator", "ldm: latent denoiser, on R's latents", cfg.ldm_steps, cfg.ldm_batch_size, cfg.image_size,
                "generator", n_train, shared="latent generator", step_flops=family_flops(cfg, "latent-denoiser")[0])]


def sampling_flops(cfg: LatentRecipe, kind: str, evaluations: int) -> float:
    """FLOPs per image and network evaluation of sampling a ``kind`` generator ("gan", "latent-diffusion";
    0.0 for the pixel DDPM: the plan's default), a latent sample's one decode spread over its evaluations."""
    if kind == "gan":
        return family_flops(cfg, "gan")[1]
    if kind == "latent-diffusion":
        return family_flops(cfg, "latent-denoiser")[1] + family_flops(cfg, "autoencoder")[1] / max(1, evaluations)
    return 0.0


def family_flops(cfg: LatentRecipe, kind: str) -> tuple[float, float]:
    """``(FLOPs per image of one training step, FLOPs per image of one network evaluation when sampling)``
    of a ``kind`` model of the config ("gan", "autoencoder", "latent-denoiser"), counted on the meta
    device (nothing computed; a backward pass counts as two forwards), for the plan's estimate. The GAN's
    step is D on real and fake images and G through D (4 G + 9 D forwards); a latent sample adds one
    decode per image, which the caller spreads over its network evaluations."""
    import json

    options = gan_options(cfg) if kind == "gan" else latent_options(cfg)
    return _family_flops(kind, json.dumps(options, sort_keys=True, default=list))


@functools.lru_cache(maxsize=None)
def _family_flops(kind: str, options_json: str) -> tuple[float, float]:
    import inspect
    import json

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.unet import Condition

    def count(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    o = json.loads(options_json)
    n, size = len(o["labels"]), o["image_size"]
    with torch.device("meta"):
        cond = Condition(torch.zeros(1, n), torch.ones(1, n, dtype=torch.bool), torch.zeros(1, dtype=torch.long), torch.zeros(1))
        x = torch.zeros(1, 1, size, size)
        if kind == "gan":
            from ..generators.gan import GANDiscriminator, GANGenerator, gan_config

            arch = gan_config(image_size=size, labels=o["labels"], g_channels=o["g_channels"], d_channels=o["d_channels"])
            g_net, d_net, z = GANGenerator(arch), GANDiscriminator(arch), torch.zeros(1, arch["z_dim"])
            g, d = count(lambda: g_net(z, cond)), count(lambda: d_net(x, cond))
            return 4 * g + 9 * d, g
        from diffusers import AutoencoderKL

        from ..generators.latent import autoencoder_config, denoiser_config, latent_size, train_latent_diffusion
        from ..models.unet import ConditionalUNet

        ae = autoencoder_config(image_size=size, vae_channels=o["vae_channels"], latent_channels=o["latent_channels"])
        vae, latent = AutoencoderKL(**ae), torch.zeros(1, o["latent_channels"], latent_size(ae), latent_size(ae))
        enc, dec = count(lambda: vae.encode(x)), count(lambda: vae.decode(latent))
        if kind == "autoencoder":
            return 3 * (enc + dec), dec
        defaults = {k: p.default for k, p in inspect.signature(train_latent_diffusion).parameters.items()}
        den = denoiser_config(ae, labels=o["labels"], channels=o["unet_channels"], layers_per_block=o["layers_per_block"],
                              attention=defaults["attention"], norm_groups=min(defaults["norm_groups"], *o["unet_channels"]),
                              cond_hidden=defaults["cond_hidden"], prediction_type=o["prediction_type"],
                              beta_schedule=o["beta_schedule"], num_train_timesteps=defaults["num_train_timesteps"],
                              time_scale_shift=o["time_scale_shift"], label_channels=o["label_channels"])
        unet = ConditionalUNet(den)
        u = count(lambda: unet(latent, torch.zeros(1, dtype=torch.long), cond))
        return 3 * u, u
