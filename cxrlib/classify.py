"""Train, apply, save and load the downstream CXR classifiers (:mod:`cxrlib.models.classifiers`).

One plain training loop, :func:`train_classifier`, for multi-label (one sigmoid/BCE per label, the
CheXpert setting) and multi-class (softmax/cross-entropy over mutually exclusive classes, e.g.
Kermany's normal/bacterial/viral) training on any mix of real and synthetic sets. Images are held
in memory as uint8 (``CXRDataset.to_tensors()``) and converted per batch, or (``data_workers``)
streamed: decoded per batch by DataLoader workers from the sets an arm is made of
(:class:`StreamedImages`), memory bounded by the batch; both paths give the same bytes in the same
batches, hence the same weights.

Reproducibility: on CPU the same ``seed`` gives bit-identical weights. Weight initialization and
dropout draw from torch's global RNG, which the loop seeds inside ``torch.random.fork_rng`` (the
caller's RNG state is restored afterwards); shuffling / balanced sampling and augmentation draw from
their own ``torch.Generator`` s, derived from ``seed`` with :func:`cxrlib.utils.derive_seed`.

Augmentation (``augment=True``), per image: rotation ±7°, isotropic scale 0.93–1.07, translation
±5 % of the side, brightness ±0.05 and contrast ×0.9–1.1. There is **no horizontal flip**: a chest
radiograph is lateralized (heart on the patient's left), and a flipped image is not a plausible one.

The finished classifier is saved as ``classifier.safetensors`` + ``classifier.json`` (architecture,
task, label names, the sha256 of the weights) by :func:`save_classifier`; :func:`load_classifier`
rebuilds it and refuses weights whose checksum does not match.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import metrics as M
from .data.base import CXRDataset
from .io import atomic_write_json, atomic_write_text, load_tensors, save_tensors, sha256_file
from .models.classifiers import CXRClassifier, build_classifier
from .utils import derive_seed, resolve_device, torch_generator, tqdm

TASKS = ("multilabel", "multiclass")
WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"


# --- data -----------------------------------------------------------------------------------------
def _columns(ds: CXRDataset, labels: Sequence[str]) -> list[int]:
    missing = [l for l in labels if l not in ds.label_names]
    if missing:
        raise ValueError(f"dataset {ds.name!r} has no label(s) {missing}; its labels are {list(ds.label_names)}")
    return [list(ds.label_names).index(l) for l in labels]


def _tensors(ds: CXRDataset, labels: Sequence[str], progress: bool):
    """``(images uint8 [N,1,S,S], y float32 [N,L], mask bool [N,L])`` with the columns of ``labels``."""
    cols = _columns(ds, labels)
    x, y, m = ds.to_tensors(progress=progress)
    return x, y[:, cols], m[:, cols]


def _checked_sets(datasets: CXRDataset | Sequence[CXRDataset]) -> list[CXRDataset]:
    datasets = [datasets] if isinstance(datasets, CXRDataset) else list(datasets)
    if not datasets:
        raise ValueError("train needs at least one dataset")
    sizes = {d.name: d.size for d in datasets}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"training datasets differ in image size: {sizes}")
    return datasets


def load_training_data(datasets: CXRDataset | Sequence[CXRDataset], labels: Sequence[str], progress: bool = False):
    """Concatenate one or several datasets (e.g. real + synthetic) into in-memory tensors; all must
    have the same image size and the requested ``labels``."""
    parts = [_tensors(d, labels, progress) for d in _checked_sets(datasets)]
    return tuple(torch.cat(t) for t in zip(*parts))


def load_targets(datasets: CXRDataset | Sequence[CXRDataset], labels: Sequence[str]):
    """``(y float32 [N, L], mask bool [N, L])`` of the concatenated datasets, reading no image."""
    parts = []
    for d in _checked_sets(datasets):
        cols, (y, m) = _columns(d, labels), d.targets()
        parts.append((torch.from_numpy(np.ascontiguousarray(y[:, cols])), torch.from_numpy(np.ascontiguousarray(m[:, cols]))))
    return torch.cat([y for y, _ in parts]), torch.cat([m for _, m in parts])


class StreamedImages(torch.utils.data.Dataset):
    """The images of one or several datasets as one index space, decoded on demand (in DataLoader
    workers): an arm of real + synthetic + duplicates is an index plan over its sources, never one
    concatenated tensor, so memory is bounded by the batches in flight, not by the set size. Item
    ``i`` is ``(i, uint8 image [1, S, S])``, the same bytes as ``CXRDataset.to_tensors``."""

    def __init__(self, datasets: Sequence[CXRDataset]):
        self.datasets = list(datasets)
        self.starts = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i):
        k = int(np.searchsorted(self.starts, int(i), side="right")) - 1
        return int(i), torch.from_numpy(np.ascontiguousarray(self.datasets[k]._uint8(int(i) - int(self.starts[k]))))[None]


def stream_batches(images: StreamedImages, batches, workers: int = 0):
    """Iterate ``(indices, uint8 images [B, 1, S, S])`` over ``batches`` (an iterable of index
    batches, e.g. a training run's shuffled order), decoded by ``workers`` DataLoader processes."""
    from torch.utils.data import DataLoader

    # its own generator: a DataLoader otherwise draws its workers' seed from torch's global RNG, which
    # drives dropout in the training loop (the streamed run would then differ from the in-memory one)
    return iter(DataLoader(images, batch_sampler=batches, num_workers=workers, generator=torch.Generator().manual_seed(0)))


def _multiclass_targets(y: torch.Tensor, m: torch.Tensor, where: str) -> torch.Tensor:
    ok = (y.sum(1) == 1) & m.all(1)
    if not bool(ok.all()):
        i = int(torch.nonzero(~ok)[0])
        raise ValueError(f"task='multiclass' needs exactly one positive, unmasked class per image; {where} image "
                         f"{i} has labels {y[i].tolist()} (mask {m[i].tolist()}). Use task='multilabel'.")
    return y.argmax(1)


# --- augmentation ---------------------------------------------------------------------------------
def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine (rotation ±7°, scale 0.93–1.07, shift ±5 %) and brightness/contrast jitter of a
    float batch ``[B, C, S, S]`` in ``[0, 1]``; parameters come from ``generator`` (on the CPU) only."""
    b = x.shape[0]
    u = torch.rand(b, 6, generator=generator) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(7)
    scale = 1 + 0.07 * u[:, 1]
    shift = 0.1 * u[:, 2:4]  # affine_grid coordinates span [-1, 1]: 0.1 = 5 % of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (1 + 0.1 * u[:, 4]).view(b, 1, 1, 1).to(x)
    bright = (0.05 * u[:, 5]).view(b, 1, 1, 1).to(x)
    return ((x - mean) * contrast + mean + bright).clamp(0, 1)


# --- imbalance ------------------------------------------------------------------------------------
def class_weights(y: torch.Tensor, m: torch.Tensor, task: str, labels: Sequence[str]) -> torch.Tensor:
    """Multi-label: BCE ``pos_weight_l = negatives_l / positives_l`` (masked entries excluded);
    multi-class: cross-entropy weight ``w_k = N / (K · n_k)``. A class without examples is an error."""
    if task == "multilabel":
        pos = (y * m).sum(0)
        neg = ((1 - y) * m).sum(0)
    else:
        pos = torch.bincount(y.argmax(1), minlength=y.shape[1]).float()
        neg = None
    empty = [labels[j] for j in torch.nonzero(pos == 0).flatten().tolist()]
    if empty:
        raise ValueError(f"class_weighting: label(s) {empty} have no positive training example")
    return neg / pos if task == "multilabel" else len(y) / (y.shape[1] * pos)


def balanced_sample_weights(y: torch.Tensor, m: torch.Tensor, task: str) -> torch.Tensor:
    """Per-image sampling weights that equalize the classes. Multi-class: ``1 / n_k``. Multi-label
    (labels co-occur, so exact balance is impossible): an image weighs ``1 / n_l`` of its rarest
    positive label ``l``, an image without positives ``1 / n_none``, so each label's positives are
    drawn about as often as the all-negative images."""
    yy = (y * m) > 0
    if task == "multiclass":
        counts = yy.sum(0).float()
        return 1.0 / counts[y.argmax(1)]
    counts = yy.sum(0).float()
    inv = torch.where(yy, 1.0 / counts.clamp(min=1), torch.zeros(()))
    w = inv.max(1).values
    none = ~yy.any(1)
    if none.any():
        w[none] = 1.0 / none.sum()
    return w


# --- training -------------------------------------------------------------------------------------
def train_classifier(
    *,
    train: CXRDataset | Sequence[CXRDataset],  # one dataset or a list (real and/or synthetic), concatenated
    val: CXRDataset | None,             # validation set: early stopping and model selection on macro-AUROC
    labels: Sequence[str] | None = None,  # label names to learn (default: those of the first train set)
    arch: str = "small_cnn",            # see cxrlib.models.classifiers.CLASSIFIER_ARCHS
    task: str = "multilabel",           # "multilabel" (BCE per label) | "multiclass" (softmax cross-entropy)
    epochs: int = 10,                   # maximum number of passes over the training images (without steps)
    steps: int | None = None,           # optimizer-step budget: exactly this many steps, whatever the set size
    eval_every: int | None = None,      # validate (and select) every this many steps (default: each epoch; steps // 10)
    batch_size: int = 64,
    lr: float = 1e-3,                   # AdamW peak learning rate (linear warm-up, then cosine decay to 0)
    weight_decay: float = 1e-4,         # AdamW decoupled weight decay
    augment: bool = True,               # random affine + intensity jitter (module docstring); no flips
    class_weighting: bool = False,      # reweight the loss by inverse class frequency (class_weights)
    balanced_sampling: bool = False,    # draw images with balanced_sample_weights instead of shuffling
    early_stopping_patience: int | None = None,  # stop after this many validations without a better val macro-AUROC
    pretrained: bool = False,           # start from torchvision's ImageNet weights (error if unavailable)
    warmup_steps: int = 100,            # linear learning-rate warm-up (capped at 10 % of all steps)
    device: str = "cpu",                # "cpu", "cuda", "cuda:1", "mps"; an absent GPU is an error
    mixed_precision: bool = False,      # autocast: float16 + GradScaler on CUDA, bfloat16 on CPU
    seed: int = 0,                      # seeds init, dropout, shuffling and augmentation
    data_workers: int | None = None,    # None: decode every image once into memory; N >= 0: stream (StreamedImages), N decoding workers
    progress: bool = True,              # tqdm bars
    out_dir: str | Path | None = None,  # if given: writes options.json, history.csv and the classifier
) -> tuple[CXRClassifier, pd.DataFrame]:
    """Train a classifier; return it (on ``device``, in eval mode, with the weights of the validation
    with the best macro-AUROC, or the last weights without ``val``) and the history, one row per
    validation (``step, epoch, train_loss, val_loss, val_macro_auroc, lr, seconds,
    train_images_per_s, best``; ``epoch`` = passes over the training images so far).

    Two budgets. ``epochs`` (the default): ``epochs`` passes over the training set, validated after
    each, so a larger set also gets more optimizer steps. ``steps``: exactly ``steps`` optimizer steps
    (passes follow one another, each a new shuffle, the last one cut short), validated every
    ``eval_every`` steps and at the end: the budget of a fair comparison between training sets of
    different sizes. The selected weights' step is the last ``step`` with ``best``.
    """
    # 1. check the options
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    if balanced_sampling and class_weighting:
        raise ValueError("balanced_sampling and class_weighting both correct the imbalance; choose one")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("steps", steps), ("eval_every", eval_every)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1) or (v is None and name in ("epochs", "batch_size")):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if early_stopping_patience is not None and (early_stopping_patience < 1 or val is None):
        raise ValueError(f"early_stopping_patience={early_stopping_patience!r} needs a val set and a value >= 1")
    dev = resolve_device(device)
    if mixed_precision and dev.type == "mps":
        raise ValueError("mixed_precision=True is supported on CUDA (float16) and CPU (bfloat16), not MPS")
    first = train if isinstance(train, CXRDataset) else list(train)[0]
    labels = tuple(labels if labels is not None else first.label_names)

    # 2. data (in memory as uint8, or streamed: the same bytes, the same batches), targets, imbalance handling
    if data_workers is not None and data_workers < 0:
        raise ValueError(f"data_workers must be None (in memory) or >= 0, got {data_workers!r}")
    train_sets = [train] if isinstance(train, CXRDataset) else list(train)
    if data_workers is None:
        x_tr, y_tr, m_tr = load_training_data(train_sets, labels, progress)
    else:
        (y_tr, m_tr), x_tr = load_targets(train_sets, labels), StreamedImages(train_sets)
    size = int(first.size)
    t_tr = _multiclass_targets(y_tr, m_tr, "training") if task == "multiclass" else None
    if val is not None:
        if data_workers is None:
            x_va, y_va, m_va = load_training_data(val, labels, progress)
        else:
            (y_va, m_va), x_va = load_targets(val, labels), StreamedImages([val])
        if val.size != size:
            raise ValueError(f"val images are {val.size} px but training images are {size} px")
        t_va = _multiclass_targets(y_va, m_va, "validation") if task == "multiclass" else None
        undefined = [l for j, l in enumerate(labels) if len(torch.unique(y_va[m_va[:, j], j])) < 2]
        if undefined:
            warnings.warn(f"validation lacks positives or negatives for {undefined}: they are left out of the "
                          "validation macro-AUROC", M.UndefinedMetricWarning, stacklevel=2)
    weight = class_weights(y_tr, m_tr, task, labels).to(dev) if class_weighting else None
    sample_w = balanced_sample_weights(y_tr, m_tr, task) if balanced_sampling else None
    n = len(y_tr)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps if steps is not None else epochs * steps_per_epoch
    every = eval_every or (max(1, total_steps // 10) if steps is not None else steps_per_epoch)
    warmup = min(warmup_steps, total_steps // 10)

    g_sample = torch_generator(derive_seed(seed, "classifier", "sample"))
    g_aug = torch_generator(derive_seed(seed, "classifier", "augment"))
    history = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "classifier", "init"))
        # 3. model, optimizer, schedule (linear warm-up, cosine decay), mixed precision
        model = build_classifier(arch, len(labels), in_channels=1, image_size=size, pretrained=pretrained)  # CXRs: 1 channel
        model.task, model.label_names = task, labels
        model.to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup)))
        )
        amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=mixed_precision and dev.type == "cuda")

        def loss_fn(logits, y, m, t):
            logits = logits.float()
            if task == "multiclass":
                return F.cross_entropy(logits, t, weight=weight)
            # BCE only over unmasked entries (uncertain / unannotated labels do not count)
            per = F.binary_cross_entropy_with_logits(logits, y, pos_weight=weight, reduction="none")
            return (per * m).sum() / m.sum().clamp(min=1)

        def batches():  # passes over the training images, each a new shuffle (or balanced draw)
            while True:
                if sample_w is not None:
                    order = torch.multinomial(sample_w, n, replacement=True, generator=g_sample)
                else:
                    order = torch.randperm(n, generator=g_sample)
                for k in range(steps_per_epoch):
                    yield order[k * batch_size:(k + 1) * batch_size]

        stream = batches() if data_workers is None else stream_batches(x_tr, batches(), data_workers)
        best_auc, best_state, best_step, bad_rounds, step = -math.inf, None, 0, 0, 0
        bar = tqdm(total=total_steps, desc="classifier", unit="step", **({} if progress else {"disable": True}))
        while step < total_steps:
            # 4. the optimizer steps up to the next validation
            model.train()
            t0 = time.perf_counter()
            loss_sum, seen = 0.0, 0
            for _ in range(min(every, total_steps - step)):
                if data_workers is None:
                    idx = next(stream)
                    xb = x_tr[idx].float().div_(255)
                else:
                    idx, xb = next(stream)
                    xb = xb.float().div_(255)
                if augment:
                    xb = augment_batch(xb, g_aug)
                xb, yb, mb = xb.to(dev), y_tr[idx].to(dev), m_tr[idx].to(dev)
                tb = t_tr[idx].to(dev) if t_tr is not None else None
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=mixed_precision):
                    loss = loss_fn(model(xb), yb, mb, tb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"classifier loss is {loss.item()} at step {step + 1}; lower lr={lr}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                loss_sum += loss.item() * len(idx)
                seen += len(idx)
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            train_seconds = time.perf_counter() - t0
            row = {"step": step, "epoch": step / steps_per_epoch, "train_loss": loss_sum / seen, "val_loss": np.nan,
                   "val_macro_auroc": np.nan, "lr": opt.param_groups[0]["lr"], "seconds": train_seconds,
                   "train_images_per_s": seen / train_seconds, "best": False}
            # 5. validation: loss and macro-AUROC; keep the best weights
            if val is not None:
                logits = _logits(model, x_va, 256, dev, mixed_precision, amp_dtype, workers=data_workers or 0)
                row["val_loss"] = float(loss_fn(logits.to(dev), y_va.to(dev), m_va.to(dev),
                                                t_va.to(dev) if t_va is not None else None))
                scores = _probabilities(logits, task).numpy()
                row["val_macro_auroc"] = M.macro_auroc(y_va.numpy(), scores, m_va.numpy())
                if row["val_macro_auroc"] > best_auc:
                    best_auc, best_step, bad_rounds = row["val_macro_auroc"], step, 0
                    best_state = copy.deepcopy(model.state_dict())
                    row["best"] = True
                else:
                    bad_rounds += 1
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if not bar.disable:
                bar.write(f"step {step}: train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                          f"val macro-AUROC {row['val_macro_auroc']:.4f}  {row['train_images_per_s']:.0f} img/s")
            if early_stopping_patience is not None and bad_rounds >= early_stopping_patience:
                break
        bar.close()
    # 6. the selected weights, and the run folder
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist = pd.DataFrame(history)
    if out_dir is not None:
        out = Path(out_dir)
        options = {"arch": arch, "task": task, "labels": list(labels), "epochs": epochs, "batch_size": batch_size,
                   "lr": lr, "weight_decay": weight_decay, "augment": augment, "class_weighting": class_weighting,
                   "balanced_sampling": balanced_sampling, "early_stopping_patience": early_stopping_patience,
                   "pretrained": pretrained, "warmup_steps": warmup_steps, "mixed_precision": mixed_precision,
                   "seed": seed, "device": str(dev), "n_train": n, "image_size": size, "steps": steps,
                   "eval_every": every, "optimizer_steps": step, "selected_step": best_step if best_state is not None else step,
                   "train_sets": [d.name for d in ([train] if isinstance(train, CXRDataset) else train)]}
        atomic_write_json(out / "options.json", options)
        atomic_write_text(out / "history.csv", hist.to_csv(index=False))
        save_classifier(model, out)
    return model, hist


# --- inference ------------------------------------------------------------------------------------
def _probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    return torch.softmax(logits.float(), 1) if task == "multiclass" else torch.sigmoid(logits.float())


@torch.no_grad()
def _logits(model, x_uint8: torch.Tensor | StreamedImages, batch_size: int, dev, mixed_precision=False,
            amp_dtype=torch.bfloat16, progress: bool = False, workers: int = 0) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = []
    chunks = [list(range(i, min(i + batch_size, len(x_uint8)))) for i in range(0, len(x_uint8), batch_size)]
    if isinstance(x_uint8, StreamedImages):  # the same batches, decoded on demand
        xs = (x for _, x in stream_batches(x_uint8, chunks, workers))
    else:
        xs = (x_uint8[c[0]:c[-1] + 1] for c in chunks)
    if progress:
        xs = tqdm(xs, total=len(chunks), desc="predict", unit="batch")
    for xb in xs:
        xb = xb.to(dev).float().div_(255)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=mixed_precision):
            out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config["num_outputs"])


def predict(model: CXRClassifier, dataset: CXRDataset | torch.Tensor, batch_size: int = 256, device: str = "cpu",
            progress: bool = False, data_workers: int | None = None) -> np.ndarray:
    """Probabilities ``[N, L]`` (float64) for ``model.label_names``: sigmoids (multi-label) or a
    softmax (multi-class). ``dataset`` is a :class:`CXRDataset` (with those labels; ``data_workers``
    as in :func:`train_classifier`) or images ``[N, C, S, S]`` (uint8, or float in ``[0, 1]``)."""
    dev = resolve_device(device)
    if isinstance(dataset, CXRDataset) and data_workers is not None:
        if dataset.size != model.config["image_size"]:
            raise ValueError(f"model expects {model.config['image_size']} px images, {dataset.name} has {dataset.size} px")
        logits = _logits(model.to(dev), StreamedImages([dataset]), batch_size, dev, progress=progress, workers=data_workers)
        return _probabilities(logits, model.task).numpy().astype(np.float64)
    if isinstance(dataset, CXRDataset):
        x = dataset.to_tensors()[0]
    elif isinstance(dataset, torch.Tensor):
        x = dataset if dataset.dtype == torch.uint8 else (dataset.clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        raise TypeError(f"predict needs a CXRDataset or an image tensor, got {type(dataset).__name__}")
    if x.ndim != 4 or x.shape[-1] != model.config["image_size"]:
        raise ValueError(f"model expects [N, {model.config['in_channels']}, {model.config['image_size']}, "
                         f"{model.config['image_size']}] images, got {tuple(x.shape)}")
    model.to(dev)
    logits = _logits(model, x, batch_size, dev, progress=progress)
    return _probabilities(logits, model.task).numpy().astype(np.float64)


def evaluate_classifiers(
    models: CXRClassifier | Mapping[str, CXRClassifier],  # one model, or {arm name: model} sharing label_names
    test: CXRDataset,                    # the test set (patient ids for the cluster bootstrap)
    *,
    reference_arm: str | None = None,    # arm the p-values compare against (default: the first)
    val: CXRDataset | None = None,       # validation set the threshold policy chooses thresholds on
    threshold_policy: str = "fixed",     # fixed | youden | prevalence | sensitivity (cxrlib.metrics)
    policy_kwargs: Mapping | None = None,  # e.g. {"target_sensitivity": 0.9}
    metrics: Sequence[str] = M.METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    ci_method: str = "percentile",
    seed: int | str = 0,                 # the training seed, written in the table's seed column
    bootstrap_seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
) -> pd.DataFrame:
    """Predict ``test`` (and ``val``) with every arm's model and return the standard results table
    of :func:`cxrlib.stats.compare_arms` (estimates, patient-level bootstrap CIs, p-values against
    the reference arm, Holm-adjusted)."""
    from .stats import compare_arms

    if isinstance(models, CXRClassifier):
        models = {"model": models}
    arms = list(models)
    labels = tuple(models[arms[0]].label_names or ())
    for a in arms:
        if tuple(models[a].label_names or ()) != labels:
            raise ValueError(f"arm {a!r} predicts labels {models[a].label_names}, arm {arms[0]!r} predicts {labels}")
    _, y, m = _tensors(test, labels, progress)
    scores = {a: predict(models[a], test, batch_size, device, progress) for a in arms}
    y_val = m_val = val_scores = None
    if val is not None:
        _, y_val, m_val = _tensors(val, labels, progress)
        y_val, m_val = y_val.numpy(), m_val.numpy()
        val_scores = {a: predict(models[a], val, batch_size, device, progress) for a in arms}
    return compare_arms(y.numpy(), scores, test.meta["patient_id"].to_numpy(), label_names=labels,
                        reference_arm=reference_arm or arms[0], mask=m.numpy(), y_val=y_val, val_scores=val_scores,
                        mask_val=m_val, threshold_policy=threshold_policy, policy_kwargs=policy_kwargs, metrics=metrics,
                        n_boot=n_boot, alpha=alpha, ci_method=ci_method, seed=seed, bootstrap_seed=bootstrap_seed,
                        progress=progress)


# --- save / load ----------------------------------------------------------------------------------
def save_classifier(model: CXRClassifier, directory: str | Path) -> Path:
    """Write ``classifier.safetensors`` and ``classifier.json`` (config, task, labels, weights sha256)."""
    d = Path(directory)
    weights = d / WEIGHTS_FILE
    save_tensors(weights, model.state_dict(), metadata={"format": "cxrlib-classifier"})
    cfg = {**model.config, "task": model.task, "label_names": list(model.label_names or []),
           "weights": WEIGHTS_FILE, "weights_sha256": sha256_file(weights), "format_version": 1}
    atomic_write_json(d / CONFIG_FILE, cfg)
    return d


def load_classifier(directory: str | Path, device: str = "cpu") -> CXRClassifier:
    """Rebuild a classifier saved by :func:`save_classifier` (no ImageNet weights needed)."""
    d = Path(directory)
    cfg_path = d / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {d}: not a saved cxrlib classifier")
    cfg = json.loads(cfg_path.read_text())
    weights = d / cfg.get("weights", WEIGHTS_FILE)
    if not weights.exists():
        raise FileNotFoundError(f"classifier weights {weights} are missing")
    digest = sha256_file(weights)
    if digest != cfg.get("weights_sha256"):
        raise ValueError(f"{weights} has sha256 {digest[:12]}..., but {cfg_path} records "
                         f"{str(cfg.get('weights_sha256'))[:12]}...: the weights were changed or corrupted")
    model = build_classifier(cfg["arch"], cfg["num_outputs"], in_channels=cfg["in_channels"], image_size=cfg["image_size"])
    model.config["pretrained"] = cfg.get("pretrained", False)
    model.load_state_dict(load_tensors(weights))
    model.task, model.label_names = cfg["task"], tuple(cfg["label_names"]) or None
    return model.to(resolve_device(device)).eval()
