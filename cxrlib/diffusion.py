"""Training the conditional DDPM, and saving/loading finished generators.

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

import csv
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .data.labels import CHEXPERT_LABELS, check_label_names
from .io import atomic_path, atomic_write_json, load_tensors, safe_torch_load, safe_torch_save, save_tensors, sha256_bytes
from .models.unet import Condition, ConditionalUNet, config_json, count_parameters, generator_config
from .utils import derive_seed, progress_disabled, resolve_device, torch_generator, tqdm

# Sizes and recipes per profile: ``train_generator(**GENERATOR_PRESETS["cpu"], train_data=..., out_dir=...)``.
GENERATOR_PRESETS: dict[str, dict] = {
    # Unit tests: a few thousand parameters, 16 px, seconds.
    "tiny": dict(image_size=16, channels=(8, 16), layers_per_block=1, attention=(False, False), norm_groups=4,
                 cond_hidden=16, total_steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9,
                 checkpoint_every=3, sample_every=0, log_every=1),
    # Laptop CPU, 32 px, ~1.6 M parameters. The study design notes found channels (32, 64, 64), lr 1e-3
    # with warm-up, gradient clipping and EMA give plausible lung fields after ~600 steps of batch 64,
    # and labels carried only after ~2 500 steps: budget tens of minutes.
    "cpu": dict(image_size=32, channels=(32, 64, 64), layers_per_block=2, attention=(False, False, True), norm_groups=32,
                cond_hidden=128, total_steps=2500, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                checkpoint_every=250, sample_every=500, log_every=10),
    # ADM-like 256 px (Khosravi 2024: cosine schedule, v-prediction, EMA; DDIM-200 at sampling), one GPU.
    "paper": dict(image_size=256, channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                  attention=(False, False, False, False, True, True), norm_groups=32, dropout=0.1, cond_hidden=512,
                  total_steps=200_000, batch_size=32, lr=1e-4, warmup_steps=1000, ema_decay=0.9999,
                  prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2", mixed_precision="bf16",
                  checkpoint_every=5000, sample_every=10_000, log_every=100),
}

# Options that may differ between a run and its resumption (they do not change the result on CPU).
# With lr_schedule="constant" the learning rate never depends on total_steps, so total_steps may also
# change on resume: a run can be extended, or finished early at its last resume state.
_RESUME_FREE_OPTIONS = ("device", "progress", "resume", "checkpoint_every", "sample_every", "log_every")


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


def data_fingerprint(*tensors: torch.Tensor) -> str:
    return sha256_bytes(b"".join(t.contiguous().cpu().numpy().tobytes() for t in tensors))[:16]


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
    images_u8, y_all, mask_all = train_data.to_tensors(progress=progress)
    col = [list(train_data.label_names).index(n) for n in labels]
    y_all, mask_all = y_all[:, col].float(), mask_all[:, col].bool()
    sex_np, age_np = train_data.demographics()
    sex_all, age_all = torch.from_numpy(sex_np).long(), torch.from_numpy(age_np).float()
    options = dict(
        generator=arch, total_steps=total_steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
        warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay,
        cond_drop_prob=cond_drop_prob, field_drop_prob=field_drop_prob, mixed_precision=mixed_precision, seed=seed,
        init_from=str(init_from) if init_from is not None else None, unconditional=unconditional,
        init_from_id=load_generator(init_from).generator_id if init_from is not None else None,
        data=dict(name=train_data.name, n=len(train_data), size=int(image_size),
                  sha256=data_fingerprint(images_u8, y_all, mask_all, sex_all, age_all)),
        device=device, progress=progress, resume=resume, checkpoint_every=checkpoint_every,
        sample_every=sample_every, log_every=log_every,
    )
    state_path, model_dir, log_path = out_dir / "resume" / "state.pt", out_dir / "model", out_dir / "train_log.csv"
    if resume and (out_dir / "options.json").exists():
        import json

        old = json.loads((out_dir / "options.json").read_text())
        new = json.loads(json.dumps(options, default=str))
        free = _RESUME_FREE_OPTIONS + (("total_steps",) if lr_schedule == "constant" else ())
        diff = sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{out_dir} holds a run with different options {diff}; pass resume=False to start over there, or use another out_dir")
        done = (model_dir / "config.json").exists() and (model_dir / "weights.safetensors").exists()
        if done and old.get("total_steps") == total_steps:
            return model_dir  # finished already
        if done:  # extending a finished run (constant LR): the model folder is rewritten at the new end
            shutil.rmtree(model_dir)
    elif not resume:
        for p in (state_path.parent, model_dir):
            shutil.rmtree(p, ignore_errors=True)
        log_path.unlink(missing_ok=True)

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
    step = 0
    if resume and state_path.exists():
        state = safe_torch_load(state_path)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        step = int(state["step"])
        if step > total_steps:
            raise ValueError(f"{state_path} is at step {step}, beyond total_steps={total_steps}")
        _set_rng_state(state["rng"])
        _truncate_log(log_path, step)
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
        idx = _batch_indices(step, batch_size, len(images_u8), seed)
        g = torch_generator(derive_seed(seed, "step", step))
        t = torch.randint(0, arch["schedule"]["num_train_timesteps"], (batch_size,), generator=g)
        noise = torch.randn((batch_size, 1, image_size, image_size), generator=g)
        drop_all = torch.rand(batch_size, generator=g) < (1.0 if unconditional else cond_drop_prob)
        drop_field = torch.rand(batch_size, len(labels) + 2, generator=g) < field_drop_prob
        sl = slice(rank * local, (rank + 1) * local)
        idx, t, noise, drop_all, drop_field = idx[sl], t[sl], noise[sl], drop_all[sl], drop_field[sl]
        x0 = images_u8[idx].float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
        # unknown labels (label_mask False), sex -1 and age NaN already map to the null state
        cond = Condition(y_all[idx], mask_all[idx], sex_all[idx], age_all[idx])
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
            _append_log(log_path, step, loss_sum / n_loss, lr_sched.get_last_lr()[0], batch_size * (step - step_last) / (now - t_last))
            loss_sum, n_loss, t_last, step_last = 0.0, 0, now, step
        if (checkpoint_every and step % checkpoint_every == 0) or step == total_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_resume_state(state_path, model=raw_model, ema=ema, optimizer=optimizer, lr_scheduler=lr_sched, step=step)
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


# --- pieces of the loop ---------------------------------------------------------------------------
def _batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Rows of the global batch at ``step``: positions [step·B, (step+1)·B) of the concatenation of
    per-epoch permutations (epoch e seeded by derive_seed(seed, "epoch", e))."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = pos // n, pos % n
    out = torch.empty(batch_size, dtype=torch.long)
    for e in torch.unique(epochs).tolist():
        perm = torch.randperm(n, generator=torch_generator(derive_seed(seed, "epoch", e)))
        sel = epochs == e
        out[sel] = perm[offsets[sel]]
    return out


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume_state(path, *, model, ema, optimizer, lr_scheduler, step: int) -> None:
    """Everything needed to continue training bit for bit, as plain tensors/containers (loads with
    ``weights_only=True``). Written atomically: a killed write leaves the previous state in place."""
    safe_torch_save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "step": int(step),
            "rng": _rng_state(),
        },
        path,
    )


def _append_log(path: Path, step: int, loss: float, lr: float, images_per_s: float) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["step", "loss", "lr", "images_per_s"])
        w.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{images_per_s:.2f}"])


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the resume state we continue from)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)


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
def generator_id(model: ConditionalUNet) -> str:
    """Identity of a generator: sha256 over its config and every weight tensor (16 hex digits)."""
    import hashlib

    h = hashlib.sha256(config_json(model.config).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_model_folder(model: torch.nn.Module, path: str | os.PathLike, *, config_key: str, kind: str | None = None,
                      training: dict | None = None) -> Path:
    """Write a finished model folder: ``weights.safetensors``, then ``config.json`` (written last, atomically:
    its presence marks a finished model) holding ``model.config`` under ``config_key``, the generator id
    (hash of config and weights), the training record and, for models other than the pixel DDPM, ``kind``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gid = generator_id(model)
    save_tensors(path / "weights.safetensors", model.state_dict(), metadata={"format": "pt", "generator_id": gid})
    record = {"kind": kind} if kind else {}
    record.update({config_key: model.config, "generator_id": gid, "training": training or {}})
    atomic_write_json(path / "config.json", record)
    return path


def load_model_folder(path: str | os.PathLike, build, *, config_key: str, kind: str = "ddpm", what: str = "generator",
                      device: str = "cpu"):
    """Load a folder written by :func:`save_model_folder` in eval mode: ``build(config)`` makes the model;
    the folder must be finished, of ``kind``, and its weights must fit the config and hash to the
    recorded generator id (a mixed-up or modified folder is an error, never loaded silently)."""
    import json

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path} is not a finished {what} folder: {cfg_path.name} is missing (did training finish?)")
    info = json.loads(cfg_path.read_text())
    found = info.get("kind", "ddpm")
    if found != kind or config_key not in info:
        raise ValueError(f"{cfg_path} describes a {found!r} generator, not a {what}")
    model = build(info[config_key])
    missing, unexpected = model.load_state_dict(load_tensors(path / "weights.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}/weights.safetensors does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.generator_id = generator_id(model)
    if info.get("generator_id") not in (None, model.generator_id):
        raise ValueError(f"{path}: weights hash to generator id {model.generator_id} but config.json records "
                         f"{info['generator_id']} (files mixed up or modified)")
    model.path = str(path)
    return model.to(resolve_device(device)).eval()


def save_generator(model: ConditionalUNet, path: str | os.PathLike, training: dict | None = None) -> Path:
    """Write a finished pixel-DDPM folder (``weights.safetensors`` then ``config.json``)."""
    return save_model_folder(model, path, config_key="generator", training=training)


def load_generator(path: str | os.PathLike, device: str = "cpu") -> ConditionalUNet:
    """Load a finished generator folder (``config.json`` + ``weights.safetensors``) in eval mode."""
    return load_model_folder(path, ConditionalUNet, config_key="generator", what="pixel DDPM generator", device=device)
