"""The conditional pixel DDPM: training it, and saving/loading finished generators.

``train_generator`` is one plain function (NVlabs/edm's ``training_loop`` style): its keyword
arguments are the whole recipe. It covers the three regimes of the study with the same code:

* conditional training from scratch (default);
* unconditional pretraining: ``unconditional=True`` nulls every condition (labels hidden);
* conditional fine-tuning of a pretrained generator: ``init_from=<finished model folder>``.

Run folder (``out_dir``)::

    options.json          every option + a fingerprint of the training data (a resumed run must match)
    train_log.csv         step, loss, lr, images_per_s
    samples_step*.png     sample grids from the EMA weights (rows: labels[:8] one-hot, last row null)
    resume/state.pt       model, EMA, optimizer, LR schedule, step, RNG states (torch.save, weights only)
    model/                the finished generator: weights.safetensors (EMA) + config.json

The objective (Ho et al. 2020; Salimans & Ho 2022 for v):

    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε,   t ~ U{0..T−1},  ε ~ N(0, I),
    L = ‖f_θ(x_t, t, c) − y‖²,  y = ε (epsilon) or y = √ᾱ_t ε − √(1−ᾱ_t) x_0 (v_prediction).

Randomness: every step draws its timesteps, noise and condition dropout from its own generator
seeded by ``derive_seed(seed, "step", step)`` and the data order comes from per-epoch permutations
seeded by ``derive_seed(seed, "epoch", e)``, so a resumed run replays exactly what the uninterrupted
run would have done (bit for bit on CPU), and the random draws do not depend on the process count.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.labels import CHEXPERT_LABELS, check_label_names
from ..io import atomic_path, atomic_write_json
from ..models.unet import Condition, ConditionalUNet, config_json, count_parameters, generator_config
from ..utils import derive_seed, progress_disabled, resolve_device, torch_generator, tqdm
from .training_utils import (append_csv, batch_indices, load_model_folder, load_resume_state,
                             open_run_folder, save_model_folder, save_resume_state, training_tensors)

# The recipe per profile is the study config's (cxrlib.experiments.common.STUDY_PROFILES, turned into
# this module's keyword arguments by cxrlib.experiments.synthetic.generator_options): one home.


# Options that may differ between a run and its resumption (they do not change the result on CPU).
# With lr_schedule="constant" the learning rate never depends on total_steps, so total_steps may also
# change on resume: a run can be extended, or finished early at its last resume state.
_RESUME_FREE_OPTIONS = ("device", "progress", "resume", "checkpoint_every", "sample_every", "log_every")

# train_log.csv: one row every log_every steps (mean loss over them, learning rate, throughput)
LOG_COLUMNS = ("step", "loss", "lr", "images_per_s")
LOG_FORMATS = (".6g", ".6g", ".2f")


def noise_scheduler(schedule: dict):
    """The training ``DDPMScheduler`` for a generator config's ``schedule``."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=schedule["num_train_timesteps"],
        beta_schedule=schedule["beta_schedule"],
        prediction_type=schedule["prediction_type"],
    )


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in fp32 (kept as a module function so tests can inject a NaN)."""
    return F.mse_loss(pred.float(), target.float())


def train_generator(
    *,
    train_data,                                  # CXRDataset/ArrayDataset: images in [0, 1] at image_size; labels after its policy
    out_dir: str | os.PathLike,                  # run folder (created); see the module docstring
    labels: Sequence[str] = CHEXPERT_LABELS,     # findings conditioned on: a subset of train_data.label_names
    image_size: int = 32,                        # must equal train_data.size (no silent resizing)
    channels: Sequence[int] = (32, 64, 64),      # UNet width per resolution level
    layers_per_block: int = 2,                   # ResNet blocks per level
    attention: Sequence[bool] | None = None,     # self-attention per level (default: lowest resolution only)
    dropout: float = 0.0,                        # dropout in the ResNet blocks
    norm_groups: int = 32,                       # GroupNorm groups (must divide every width)
    cond_hidden: int = 128,                      # width of the condition encoder
    time_scale_shift: str = "default",           # "scale_shift": ADM AdaGN conditioning of every ResNet block
    label_channels: bool = False,                # also feed label states as constant input channels
    total_steps: int = 2500,                     # optimizer steps
    batch_size: int = 64,                        # global batch (split evenly across processes)
    lr: float = 1e-3,                            # peak AdamW learning rate
    lr_schedule: str = "constant",               # diffusers get_scheduler name after warm-up: constant | cosine | linear
    warmup_steps: int = 100,                     # linear LR warm-up from 0
    weight_decay: float = 0.0,                   # AdamW weight decay
    grad_clip: float = 1.0,                      # max global gradient norm (0 = off)
    ema_decay: float = 0.999,                    # EMA decay (diffusers EMAModel; ramps up as (1+n)/(10+n))
    cond_drop_prob: float = 0.1,                 # P(whole condition nulled): classifier-free guidance
    field_drop_prob: float = 0.1,                # P(each field nulled independently): partial conditions
    prediction_type: str = "epsilon",            # "epsilon" | "v_prediction"
    beta_schedule: str = "linear",               # "linear" | "squaredcos_cap_v2" (cosine)
    num_train_timesteps: int = 1000,             # T
    mixed_precision: str = "no",                 # "no" | "fp16" | "bf16" (accelerate autocast)
    device: str = "cpu",                         # "cpu", "cuda", ...; a requested GPU that is absent is an error
    seed: int = 0,                               # every random stream derives from it
    resume: bool = True,                         # continue from out_dir/resume/state.pt if present
    checkpoint_every: int = 250,                 # steps between resume states (0 = only at the end)
    sample_every: int = 500,                     # steps between sample grids (0 = never)
    log_every: int = 10,                         # steps between rows of train_log.csv
    init_from: str | os.PathLike | None = None,  # a finished generator folder to start from (fine-tuning)
    unconditional: bool = False,                 # null every condition (unconditional pretraining)
    progress: bool = True,                       # tqdm bar
) -> Path:
    """Train (or resume, or fine-tune) a conditional DDPM; return the finished model folder ``out_dir/model``."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    # 1. Check the options and the data, and write options.json (a resumed run must match it).
    out_dir = Path(out_dir)
    labels = list(check_label_names(labels, allowed=tuple(train_data.label_names), where="labels"))
    if int(train_data.size) != int(image_size):
        raise ValueError(f"image_size={image_size} but train_data ({train_data.name}) has images of {train_data.size} px; load the data at {image_size} px")
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    for name, p in (("cond_drop_prob", cond_drop_prob), ("field_drop_prob", field_drop_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p}: expected a probability in [0, 1]")
    if lr_schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"lr_schedule={lr_schedule!r}: expected 'constant', 'cosine' or 'linear' (each after a linear warm-up)")
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision={mixed_precision!r}: expected 'no', 'fp16' or 'bf16'")
    if total_steps < 1 or batch_size < 1:
        raise ValueError(f"total_steps={total_steps} and batch_size={batch_size} must be >= 1")
    arch = generator_config(
        image_size=image_size, labels=labels, channels=channels, layers_per_block=layers_per_block, attention=attention,
        dropout=dropout, norm_groups=norm_groups, cond_hidden=cond_hidden, prediction_type=prediction_type,
        beta_schedule=beta_schedule, num_train_timesteps=num_train_timesteps, time_scale_shift=time_scale_shift,
        label_channels=label_channels,
    )
    images_u8, cond_all, fingerprint = training_tensors(train_data, labels, image_size, progress=progress)
    options = dict(
        generator=arch, total_steps=total_steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
        warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay,
        cond_drop_prob=cond_drop_prob, field_drop_prob=field_drop_prob, mixed_precision=mixed_precision, seed=seed,
        init_from=str(init_from) if init_from is not None else None, unconditional=unconditional,
        init_from_id=load_generator(init_from).generator_id if init_from is not None else None,
        data=dict(name=train_data.name, n=len(train_data), size=int(image_size),
                  sha256=fingerprint),
        device=device, progress=progress, resume=resume, checkpoint_every=checkpoint_every,
        sample_every=sample_every, log_every=log_every,
    )
    state_path, model_dir, log_path = out_dir / "resume" / "state.pt", out_dir / "model", out_dir / "train_log.csv"
    # With lr_schedule="constant" the learning rate never depends on total_steps, so a finished run
    # can be extended (its model folder is rewritten at the new end).
    free = _RESUME_FREE_OPTIONS + (("total_steps",) if lr_schedule == "constant" else ())
    if open_run_folder(out_dir, options, resume=resume, free=free, what="pixel DDPM", restart=(state_path.parent, log_path)):
        return model_dir  # finished already

    # 2. Devices: accelerate runs the same loop on one CPU/GPU or under `accelerate launch`.
    dev = resolve_device(device)
    accelerator = Accelerator(cpu=dev.type == "cpu", mixed_precision=mixed_precision)
    if accelerator.num_processes == 1 and dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev.index)
    if accelerator.device.type != dev.type:
        raise RuntimeError(f"device={device!r} but accelerate chose {accelerator.device}; check your accelerate config")
    world, rank = accelerator.num_processes, accelerator.process_index
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
    if accelerator.is_main_process:
        atomic_write_json(out_dir / "options.json", options)

    # 3. Model, EMA, optimizer, LR schedule, noise schedule.
    torch.manual_seed(derive_seed(seed, "init"))  # diffusers initializes weights from the global RNG
    model = ConditionalUNet(arch)
    torch.manual_seed(derive_seed(seed, "dropout", rank))  # the global RNG only drives dropout (saved in the resume state)
    if init_from is not None:
        pre = load_generator(init_from)
        if config_json(pre.config) != config_json(arch):
            diff = sorted(k for k in set(arch) | set(pre.config) if arch.get(k) != pre.config.get(k))
            raise ValueError(f"init_from={str(init_from)!r} has a different generator config in {diff} "
                             f"(its labels: {pre.config['labels']}); train with the same architecture, labels and schedule")
        model.load_state_dict(pre.state_dict())
    ema = EMAModel(model.parameters(), decay=ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    lr_sched = get_scheduler(f"{lr_schedule}_with_warmup" if lr_schedule == "constant" else lr_schedule, optimizer,
                             num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    scheduler = noise_scheduler(arch["schedule"])

    # 4. Resume: restore everything the next step depends on.
    step = load_resume_state(state_path, log=log_path, total_steps=total_steps, model=model, ema=ema, optimizer=optimizer,
                             lr_scheduler=lr_sched) if resume else 0
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    raw_model = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        accelerator.print(f"generator: {count_parameters(raw_model):,} parameters; starting at step {step}/{total_steps}")

    # 5. The loop.
    local = batch_size // world
    last_good = step if state_path.exists() else None
    bar = tqdm(total=total_steps, initial=step, desc="train generator", unit="step",
               disable=not progress or not accelerator.is_main_process or progress_disabled())
    loss_sum, n_loss, t_last, step_last = 0.0, 0, time.perf_counter(), step
    while step < total_steps:
        # 5a. the global batch at this step (same on every process), then this process's shard
        idx = batch_indices(step, batch_size, len(images_u8), seed)
        g = torch_generator(derive_seed(seed, "step", step))
        t = torch.randint(0, arch["schedule"]["num_train_timesteps"], (batch_size,), generator=g)
        noise = torch.randn((batch_size, 1, image_size, image_size), generator=g)
        drop_all = torch.rand(batch_size, generator=g) < (1.0 if unconditional else cond_drop_prob)
        drop_field = torch.rand(batch_size, len(labels) + 2, generator=g) < field_drop_prob
        sl = slice(rank * local, (rank + 1) * local)
        idx, t, noise, drop_all, drop_field = idx[sl], t[sl], noise[sl], drop_all[sl], drop_field[sl]
        x0 = images_u8[idx].float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
        # unknown labels (label_mask False), sex -1 and age NaN already map to the null state
        cond = cond_all[idx]
        drop = drop_field | drop_all[:, None]
        cond = cond.drop(labels=drop[:, : len(labels)], sex=drop[:, -2], age=drop[:, -1]).to(accelerator.device)
        x0, t, noise = x0.to(accelerator.device), t.to(accelerator.device), noise.to(accelerator.device)

        # 5b. forward diffusion and the target
        x_t = scheduler.add_noise(x0, noise, t)
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)

        # 5c. loss; a non-finite loss stops the run before it can touch the weights
        with accelerator.autocast():
            pred = model(x_t, t, cond)
        loss = diffusion_loss(pred, target)
        mean_loss = accelerator.reduce(loss.detach(), "mean").item()  # every process sees the same value
        if not math.isfinite(mean_loss):
            where = f"the last good resume state is {state_path} (step {last_good})" if last_good is not None else "no resume state was written yet"
            raise FloatingPointError(f"non-finite loss ({mean_loss}) at step {step + 1} of {out_dir}; stopped; {where}")

        # 5d. backward, clip, step, EMA
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        lr_sched.step()
        ema.step(raw_model.parameters())
        step += 1

        # 5e. log, checkpoint, sample grid
        loss_sum += mean_loss
        n_loss += 1
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        if accelerator.is_main_process and (step % max(log_every, 1) == 0 or step == total_steps):
            now = time.perf_counter()
            append_csv(log_path, LOG_COLUMNS, [step, loss_sum / n_loss, lr_sched.get_last_lr()[0],
                                               batch_size * (step - step_last) / (now - t_last)], LOG_FORMATS)
            loss_sum, n_loss, t_last, step_last = 0.0, 0, now, step
        if (checkpoint_every and step % checkpoint_every == 0) or step == total_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_resume_state(state_path, step=step, model=raw_model, ema=ema, optimizer=optimizer, lr_scheduler=lr_sched)
            last_good = step
        if accelerator.is_main_process and sample_every and (step % sample_every == 0 or step == total_steps):
            _save_grid(raw_model, ema, out_dir / f"samples_step{step:06d}.png", seed=seed)
            t_last = time.perf_counter()  # don't count sampling time as training time
    bar.close()
    if accelerator.is_main_process and sample_every and not (out_dir / f"samples_step{step:06d}.png").exists():
        _save_grid(raw_model, ema, out_dir / f"samples_step{step:06d}.png", seed=seed)  # a run finished early on resume

    # 6. The finished generator: the EMA weights and the config, apart from the resume state.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = ConditionalUNet(arch)
        ema.copy_to(final.parameters())
        save_generator(final, model_dir, training={k: v for k, v in options.items() if k != "generator"} | {"steps_done": step})
    accelerator.wait_for_everyone()
    return model_dir


# --- sample grids ------------------------------------------------------------------------------------
def grid_conditions(label_names: Sequence[str], per_row: int = 6) -> Condition:
    """Rows of a sample grid: each of the first 8 labels alone (others absent, demographics unknown),
    then a row of null conditions."""
    rows = list(label_names)[:8]
    n_l = len(label_names)
    conds = []
    for j, _ in enumerate(rows):
        y = torch.zeros(per_row, n_l)
        y[:, j] = 1.0
        conds.append(Condition(y, torch.ones(per_row, n_l, dtype=torch.bool), torch.full((per_row,), -1), torch.full((per_row,), float("nan"))))
    conds.append(Condition.null(per_row, n_l))
    return Condition.cat(conds)


def _save_grid(model: ConditionalUNet, ema, path: Path, *, seed: int, per_row: int = 6) -> None:
    """Sample a grid with the EMA weights (DDIM, 20 steps) and write it as a PNG."""
    from PIL import Image
    from torchvision.utils import make_grid

    from .sampling import sample_images

    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    was_training = model.training
    try:
        cond = grid_conditions(model.label_names, per_row)
        seeds = [derive_seed(seed, "grid", i % per_row) for i in range(len(cond))]  # same noise down each column
        x = sample_images(model, cond, seeds, sampler="ddim", steps=20, device=next(model.parameters()).device, progress=False)
    finally:
        ema.restore(model.parameters())
        model.train(was_training)
    grid = make_grid(x, nrow=per_row, padding=1, pad_value=1.0)[0]
    with atomic_path(path) as tmp:
        Image.fromarray((grid.clamp(0, 1) * 255).round().byte().cpu().numpy(), mode="L").save(tmp, format="PNG")


# --- finished generators ----------------------------------------------------------------------------
def save_generator(model: ConditionalUNet, path: str | os.PathLike, training: dict | None = None) -> Path:
    """Write a finished pixel-DDPM folder (``weights.safetensors`` then ``config.json``)."""
    return save_model_folder(model, path, config_key="generator", training=training)


def load_generator(path: str | os.PathLike, device: str = "cpu") -> ConditionalUNet:
    """Load a finished generator folder (``config.json`` + ``weights.safetensors``) in eval mode."""
    return load_model_folder(path, ConditionalUNet, config_key="generator", what="pixel DDPM generator", device=device)
