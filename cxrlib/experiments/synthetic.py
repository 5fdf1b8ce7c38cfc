"""The study's generators and synthetic sets, trained and sampled through the cache (experiments 2-8).

Every generator is a cache entry keyed by its recipe (:func:`generator_options`: the config's
``gen_*`` fields) and by the *content* of its training set, so chapters that share a recipe share the
model: the conditional DDPM trained on R for chapter 2 (:func:`main_generator`) is the one chapters 3,
5, 6 and 7 sample from, and the unconditional DDPM pretrained on the pool (:func:`pretrained_generator`)
is fine-tuned in chapters 4 and 7. Synthetic sets (:func:`synthetic_set`) are cache entries keyed by
the generator's id, the conditions and the sampler, with a seed per image.

The natural-prevalence stream (:func:`natural_synthetic`, chapters 3 and 5): synthetic images come in
chunks of ``ceil(|R| / CHUNKS_PER_R)`` images; chunk ``k`` draws its conditions from R (rows of R with
replacement: label prevalence, co-occurrence and demographics are R's) with the seed
``derive_seed(seed, "natural", k)``. The first ``m`` images are the same whatever the largest size
asked for, so a 100 % arm uses the first images of the 1000 % set. :func:`duplicates` is the
count-matched control: copies of the real images.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.base import ArrayDataset, CXRDataset
from ..utils import derive_seed
from .common import RealSets, StudyConfig, fingerprint


# ------------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------------
def generator_options(cfg: StudyConfig) -> dict:
    """Keyword arguments of :func:`cxrlib.generators.ddpm.train_generator` for the study's recipe: every
    value comes from the config's ``gen_*`` fields (and ``image_size``, ``labels``, ``seed``)."""
    ch = tuple(cfg.gen_channels)
    groups = min(32, min(ch))  # GroupNorm groups must divide every width
    while any(c % groups for c in ch):
        groups //= 2
    return dict(image_size=cfg.image_size, labels=tuple(cfg.labels), channels=ch, layers_per_block=cfg.gen_layers,
                attention=tuple([False] * (len(ch) - 1) + [True]), norm_groups=groups, cond_hidden=cfg.gen_cond_hidden,
                dropout=cfg.gen_dropout, time_scale_shift="scale_shift" if cfg.gen_adagn else "default",
                label_channels=cfg.gen_label_channels, batch_size=cfg.gen_batch_size, lr=cfg.gen_lr,
                lr_schedule="constant", warmup_steps=min(100, max(1, cfg.gen_steps // 10)), ema_decay=cfg.gen_ema_decay,
                cond_drop_prob=cfg.gen_cond_drop, prediction_type=cfg.gen_prediction, beta_schedule=cfg.gen_schedule,
                mixed_precision=cfg.gen_mixed_precision, seed=cfg.seed)


def train_cached_generator(cfg: StudyConfig, train: CXRDataset, *, name: str, steps: int | None = None,
                           checkpoints: Sequence[int] = (), unconditional: bool = False, init_from: str | Path | None = None,
                           progress: bool = True, **overrides) -> dict[int, Path]:
    """Train (or fetch) a generator and its EMA snapshots at ``checkpoints``: ``{step: model folder}``.

    The run trains in a work folder under the cache (``work/<key>``), extending the same run from one
    checkpoint to the next (constant LR after warm-up, so an extended run equals an uninterrupted
    one), and an interrupted run resumes there. Each snapshot becomes its own cache entry
    ``generator/<key of recipe + step>``; the work folder is removed once the last one exists."""
    from .. import cache as C
    from ..generators.ddpm import train_generator
    from ..utils import cache_root

    steps = int(steps if steps is not None else cfg.gen_steps)
    opts = generator_options(cfg)
    opts.update(overrides)
    opts.update(unconditional=unconditional)
    init_key = None
    if init_from is not None:
        from ..generators.ddpm import load_generator
        init_key = load_generator(init_from).generator_id
    recipe = {"name": name, "options": {k: v for k, v in opts.items() if k not in ("device", "progress")},
              "init": init_key}
    inputs = [fingerprint(train)]
    snaps = sorted({int(c) for c in checkpoints if 0 < int(c) < steps} | {steps})
    keys = {s: C.key("generator", {**recipe, "steps": s}, inputs=inputs) for s in snaps}
    cache = C.default_cache()
    if all(cache.exists(k) for k in keys.values()):
        return {s: C.get(k) for s, k in keys.items()}
    work = cache_root() / "work" / C.key("generator-run", recipe, inputs=inputs).digest
    _discard_overshot_work(work, min(s for s, k in keys.items() if not cache.exists(k)))
    out: dict[int, Path] = {}
    for s in snaps:
        def produce(d, s=s):
            model_dir = train_generator(train_data=train, out_dir=work, total_steps=s, device=cfg.device, progress=progress,
                                        init_from=init_from, checkpoint_every=max(50, s // 8), sample_every=0,
                                        log_every=10, **opts)
            shutil.copytree(model_dir, d / "model")
            if (work / "train_log.csv").exists():
                shutil.copy(work / "train_log.csv", d / "train_log.csv")

        out[s] = C.get_or_create(keys[s], produce, expected_bytes=5e7, description=f"generator {name} @ {s} steps")
    shutil.rmtree(work, ignore_errors=True)
    return out


def _discard_overshot_work(work: Path, next_snapshot: int) -> None:
    """An interrupted run of the same recipe left ``work`` past the first snapshot still missing (e.g. it
    ran with other checkpoints): that snapshot cannot be taken from it, so the run restarts from step 0."""
    from ..io import safe_torch_load

    state = work / "resume" / "state.pt"
    if not state.exists():
        return
    try:
        step = int(safe_torch_load(state)["step"])
    except Exception as e:  # unreadable resume state: start over rather than fail later
        step, why = None, f"its resume state is unreadable ({e})"
    else:
        why = f"it is at step {step}, past the snapshot at step {next_snapshot} that is still missing"
    if step is None or step > next_snapshot:
        warnings.warn(f"generator work folder {work}: {why}; restarting this generator's training from step 0", stacklevel=3)
        shutil.rmtree(work)


def main_generator_snapshots(cfg: StudyConfig, sets: RealSets, progress: bool = True) -> dict[int, Path]:
    """The study's conditional pixel DDPM trained from scratch on R: ``{step: model folder}`` for its EMA
    snapshots at ``gen_checkpoints`` and the final one at ``gen_steps``."""
    snaps = train_cached_generator(cfg, sets.train, name="ddpm-conditional", checkpoints=cfg.gen_checkpoints, progress=progress)
    return {s: p / "model" for s, p in snaps.items()}


def main_generator(cfg: StudyConfig, sets: RealSets, progress: bool = True) -> Path:
    """The model folder of the study's conditional pixel DDPM (the final snapshot of
    :func:`main_generator_snapshots`), shared by chapters 2-8 through the cache."""
    return main_generator_snapshots(cfg, sets, progress=progress)[cfg.gen_steps]


def pretrained_generator(cfg: StudyConfig, sets: RealSets, progress: bool = True) -> Path:
    """The unconditional DDPM pretrained on the whole pool with every label hidden (Huijben 2024's
    first stage), same architecture and step count as the main generator. Chapters 4 (labeled
    fraction) and 7 (few-shot fine-tuning) fine-tune it; the cache shares it between them."""
    snaps = train_cached_generator(cfg, sets.pool, name="ddpm-unconditional-pretrain", unconditional=True, progress=progress)
    return snaps[cfg.gen_steps] / "model"


def finetune_options(cfg: StudyConfig, ft_steps: int, ft_lr: float | None = None) -> dict:
    """The overrides of a conditional fine-tuning run of the pretrained DDPM: learning rate (``ft_lr``,
    None = ``gen_lr``) and a short warm-up (``ft_steps // 10``, at most 100)."""
    return dict(lr=float(ft_lr if ft_lr is not None else cfg.gen_lr), warmup_steps=max(1, min(100, ft_steps // 10)))


def pool_finetuned_generator(cfg: StudyConfig, sets: RealSets, train: CXRDataset | None = None, *, ft_steps: int,
                             ft_lr: float | None = None, progress: bool = True) -> Path:
    """Huijben 2024's two-stage generator: :func:`pretrained_generator` (unconditional, the whole pool)
    fine-tuned conditionally on ``train`` (default R) for ``ft_steps`` steps. The same cache entry as
    chapter 4's ``pretrained+FT`` generator of the same labeled set and steps."""
    pre = pretrained_generator(cfg, sets, progress=progress)
    snaps = train_cached_generator(cfg, sets.train if train is None else train, name="ddpm-finetune", steps=ft_steps,
                                   init_from=pre, progress=progress, **finetune_options(cfg, ft_steps, ft_lr))
    return snaps[ft_steps] / "model"


def r_only_generator(cfg: StudyConfig, sets: RealSets, replicate: int = 0, progress: bool = True) -> Path:
    """The ``replicate``-th independently trained copy of the study's conditional DDPM on R: the same
    recipe with the generator seed ``seed + replicate`` (replicate 0 *is* :func:`main_generator`).
    Independent replicates put the generator's own training variance into a comparison."""
    if replicate < 0:
        raise ValueError(f"r_only_generator: replicate must be >= 0, got {replicate}")
    if replicate == 0:
        return main_generator(cfg, sets, progress=progress)
    snaps = train_cached_generator(cfg.replace(seed=cfg.seed + replicate), sets.train, name="ddpm-conditional",
                                   progress=progress)
    return snaps[cfg.gen_steps] / "model"


# ------------------------------------------------------------------------------------------------
# Synthetic sets
# ------------------------------------------------------------------------------------------------
def synthetic_set(cfg: StudyConfig, generator_dir: str | Path, conditions: pd.DataFrame, *, name: str, seed: int | None = None,
                  sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                  progress: bool = True) -> ArrayDataset:
    """Sample one image per condition row with per-image seeds (cached), as a labelled dataset whose
    labels are the conditions. Prefixes of a set equal smaller sets with the same seed."""
    from .. import cache as C
    from ..generators.ddpm import load_generator
    from ..io import sha256_bytes
    from ..generators.synthetic_sets import load_synthetic_set, write_synthetic_set
    sampler = sampler or cfg.sampler
    steps = int(steps if steps is not None else cfg.sampler_steps)
    guidance = float(cfg.guidance if guidance is None else guidance)
    seed = derive_seed(cfg.seed, "synthetic", name) % (2**31) if seed is None else seed
    gid = load_generator(generator_dir).generator_id
    cond_hash = sha256_bytes(conditions.to_csv(index=False).encode())[:16]
    k = C.key("synthetic", {"sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed, "n": len(conditions)},
              inputs=[f"generator:{gid}", f"conditions:{cond_hash}"])

    def produce(d):
        write_synthetic_set(generator_dir, conditions, d / "set", seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                            batch_size=64, device=cfg.device, progress=progress)

    entry = C.get_or_create(k, produce, expected_bytes=len(conditions) * (cfg.image_size**2 + 400) + 1e5,
                            description=f"synthetic {name}: {len(conditions)} images")
    ds = load_synthetic_set(entry / "set", verify=False)  # the cache verified every file already
    ds.name = f"synthetic:{name}"
    return ds


# ------------------------------------------------------------------------------------------------
# The natural-prevalence synthetic stream (chapters 3 and 5) and the duplicate-real control
# ------------------------------------------------------------------------------------------------
# The natural-prevalence stream is sampled and cached in chunks of ceil(|R| / CHUNKS_PER_R) images: small
# enough that a set of 50 % of R (chapter 3 at cpu) samples no more than it uses, large enough to batch well.
CHUNKS_PER_R = 4


def n_images(percent: float, n_real: int) -> int:
    """Images for ``percent`` % of a real set of ``n_real`` images (rounded to the nearest)."""
    return int(round(percent * n_real / 100))


def chunk_size(n_real: int) -> int:
    """Images per chunk of the natural-prevalence stream: ``ceil(n_real / CHUNKS_PER_R)``."""
    return -(-n_real // CHUNKS_PER_R)


def chunk_conditions(cfg: StudyConfig, source: CXRDataset, k: int) -> pd.DataFrame:
    """Conditions of chunk ``k`` of the natural-prevalence stream: :func:`chunk_size` rows of
    ``source`` drawn with replacement (labels and demographics jointly)."""
    from ..generators.conditions import prevalence_conditions

    return prevalence_conditions(source, chunk_size(len(source)), label_names=cfg.labels,
                                 seed=derive_seed(cfg.seed, "natural", k) % 2**31)


def natural_synthetic(cfg: StudyConfig, generator_dir: str | Path, source: CXRDataset, n: int,
                      progress: bool = True) -> ArrayDataset:
    """The first ``n`` images of the natural-prevalence synthetic stream conditioned on ``source``
    (= R), as one dataset; whole chunks of ``ceil(|source| / CHUNKS_PER_R)`` images are sampled and
    cached (module docstring). Patient ids are ``natural-<k>-<i>`` (unique across chunks)."""
    from ..data.base import concat

    if n < 0:
        raise ValueError(f"natural_synthetic: n must be >= 0, got {n}")
    if len(source) == 0:
        raise ValueError(f"natural_synthetic: the source set {source.name} is empty")
    chunk = chunk_size(len(source))
    parts = []
    for k in range(-(-n // chunk)):
        ds = synthetic_set(cfg, generator_dir, chunk_conditions(cfg, source, k), name=f"natural-{k}", progress=progress)
        ds.meta["patient_id"] = [f"natural-{k}-{i}" for i in range(len(ds))]
        parts.append(ds)
    if not parts:  # n = 0
        return source.subset([])
    out = concat(parts, name=f"synthetic:natural[:{n}]").subset(np.arange(n))
    out.name = f"synthetic:natural[:{n}]"
    return out


def duplicates(real: CXRDataset, n: int) -> ArrayDataset:
    """``n`` copies of ``real``'s images: the whole set repeated, then a prefix (image ``i`` is real
    image ``i mod |real|``)."""
    if len(real) == 0:
        raise ValueError(f"duplicates: the real set {real.name} is empty")
    out = real.subset(np.arange(n) % len(real))
    out.name = f"{real.name} duplicated x{n / len(real):.2g}"
    return out
