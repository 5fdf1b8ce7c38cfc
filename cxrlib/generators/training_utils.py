"""What the study's generator training loops share, written once (as diffusers' ``training_utils``).

Each loop (:func:`cxrlib.generators.ddpm.train_generator`, :func:`cxrlib.generators.gan.train_gan`,
:func:`cxrlib.generators.latent.train_latent_diffusion`) reads as its own recipe; what they have in
common lives here:

* **data order** — :func:`batch_indices`: the global batch at step *k* from per-epoch permutations
  seeded by ``derive_seed(seed, "epoch", e)``, so a resumed run replays the uninterrupted one;
* **training tensors** — :func:`training_tensors`: uint8 images and the study's :class:`Condition`
  of every image (labels after the dataset's policy, sex, age) with a data fingerprint;
* **the run folder** — :func:`open_run_folder` compares a run's options with the ``options.json`` of
  an earlier run in the same folder (a resumed run must match it) and says whether it is finished;
* **resume state** — :func:`save_resume_state` / :func:`load_resume_state`: every ``state_dict``
  the next step depends on plus the step and the RNG state, as plain tensors (``weights_only`` load);
* **logs** — :func:`append_csv` / :func:`truncate_csv` (rows written after the resume state are dropped);
* **finished models** — :func:`save_model_folder` / :func:`load_model_folder`: ``weights.safetensors``
  then ``config.json`` (written last: its presence marks a finished model), with the generator id,
  a sha256 over config and weights (:func:`generator_id`), checked on load.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_path, atomic_write_json, load_tensors, safe_torch_load, safe_torch_save, save_tensors, sha256_bytes
from ..models.unet import Condition, config_json
from ..utils import derive_seed, resolve_device, torch_generator


# --- data -------------------------------------------------------------------------------------------
def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
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


def data_fingerprint(*tensors: torch.Tensor) -> str:
    return sha256_bytes(b"".join(t.contiguous().cpu().numpy().tobytes() for t in tensors))[:16]


def training_tensors(train_data, labels: Sequence[str], image_size: int, progress: bool = False):
    """``(images uint8 [N,1,S,S], Condition of every image, data fingerprint)`` as the generators train
    on them: labels after the dataset's policy (masked = the label's null state), sex and age."""
    from ..data.labels import check_label_names

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


# --- the run folder and its resume state ------------------------------------------------------------
def open_run_folder(out_dir: Path, options: dict, *, resume: bool, free: Sequence[str], what: str,
                    restart: Sequence[Path] = ()) -> bool:
    """Prepare ``out_dir`` for a run with ``options``; return True when the run there is already finished.

    With ``resume`` and an ``options.json`` of an earlier run: every option outside ``free`` (those that
    do not change the result, e.g. the device or the checkpoint interval) must match, else a ValueError
    names them. The run is finished when ``model/`` is complete and was trained for the same
    ``total_steps``; an unfinished or shorter model folder is removed (a run extended to more steps
    rewrites it at its new end). Without ``resume``: the paths ``restart`` (resume states, logs,
    intermediate models) and ``model/`` are removed so the run starts over."""
    model_dir = out_dir / "model"
    if resume and (out_dir / "options.json").exists():
        old = json.loads((out_dir / "options.json").read_text())
        new = json.loads(json.dumps(options, default=str))
        diff = sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{out_dir} holds a {what} run with different options {diff}; pass resume=False to start "
                             "over there, or use another out_dir")
        done = (model_dir / "config.json").exists() and (model_dir / "weights.safetensors").exists()
        if done and old.get("total_steps") == options.get("total_steps"):
            return True
        shutil.rmtree(model_dir, ignore_errors=True)
    elif not resume:
        for p in (*restart, model_dir):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    return False


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume_state(path, *, step: int, **objects) -> None:
    """Everything needed to continue training bit for bit: each object's ``state_dict()`` (a plain dict
    is stored as is), the step and the RNG state, as plain tensors/containers (loads with
    ``weights_only=True``). Written atomically: a killed write leaves the previous state in place."""
    state = {k: (v if isinstance(v, dict) else v.state_dict()) for k, v in objects.items()}
    safe_torch_save({**state, "step": int(step), "rng": rng_state()}, path)


def load_resume_state(path: Path, *, log: Path | None = None, total_steps: int | None = None, **objects) -> int:
    """Continue a run: restore the objects saved by :func:`save_resume_state` at ``path`` (``None``
    objects are skipped) and the RNG state, drop the rows of the CSV ``log`` written after it, and
    return its step; 0 when there is no resume state. A state beyond ``total_steps`` is an error."""
    if not path.exists():
        return 0
    state = safe_torch_load(path)
    for k, obj in objects.items():
        if obj is not None:
            obj.load_state_dict(state[k])
    step = int(state["step"])
    if total_steps is not None and step > total_steps:
        raise ValueError(f"{path} is at step {step}, beyond total_steps={total_steps}")
    set_rng_state(state["rng"])
    if log is not None:
        truncate_csv(log, step)
    return step


# --- logs -------------------------------------------------------------------------------------------
def append_csv(path: Path, header: Sequence[str], row: Sequence, formats: Sequence[str] | None = None) -> None:
    """Append ``row`` (the step, then values formatted with ``formats``, default ``.6g``) to a CSV log."""
    formats = formats or [".6g"] * (len(row) - 1)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(list(header))
        w.writerow([row[0], *(format(v, fmt) for v, fmt in zip(row[1:], formats))])


def truncate_csv(path: Path, step: int) -> None:
    """Drop log rows written after ``step`` (after the resume state a run continues from)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if int(r[0]) <= step])


# --- finished model folders ---------------------------------------------------------------------------
def generator_id(model: torch.nn.Module) -> str:
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


def read_model_info(path: str | os.PathLike, what: str = "generator") -> dict:
    """The ``config.json`` of a finished model folder (its absence: the folder is not finished)."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path} is not a finished {what} folder: {cfg_path.name} is missing (did training finish?)")
    return json.loads(cfg_path.read_text())


def model_kind(info: dict) -> str | None:
    """``"ddpm"``, ``"gan"``, ``"latent-diffusion"`` from a model folder's config (the pixel DDPM's
    folders predate the ``kind`` key and are recognized by their ``generator`` config)."""
    return info.get("kind", "ddpm" if "generator" in info else None)


def load_model_folder(path: str | os.PathLike, build, *, config_key: str, kind: str = "ddpm", what: str = "generator",
                      device: str = "cpu"):
    """Load a folder written by :func:`save_model_folder` in eval mode: ``build(config)`` makes the model;
    the folder must be finished, of ``kind``, and its weights must fit the config and hash to the
    recorded generator id (a mixed-up or modified folder is an error, never loaded silently)."""
    path = Path(path)
    info = read_model_info(path, what)
    found = model_kind(info)
    if found != kind or config_key not in info:
        raise ValueError(f"{path / 'config.json'} describes a {found!r} generator, not a {what}")
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
