"""Benchmarks (``make bench`` / ``cxr bench``; the performance chapter calls the same functions).

Each benchmark returns tidy rows ``benchmark, setting, value, unit`` measured in one process; on a
shared or noisy machine compare ratios from one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch


def _row(benchmark: str, setting: str, value: float, unit: str, **extra) -> dict:
    return {"benchmark": benchmark, "setting": setting, "value": float(value), "unit": unit, **extra}


def bench_phantom(n: int = 10000, size: int = 64, workers: int | None = None) -> list[dict]:
    """Render ``n`` phantom images (no cache) with ``workers`` processes and with one, on a slice."""
    from .data.phantom import phantom_meta, render_images
    from .data.phantom_sources import lung_mask_bank

    lung_mask_bank()
    meta = phantom_meta("internal", n, 0)
    t0 = time.perf_counter()
    render_images(meta, size, 0, progress=False, workers=workers)
    all_s = time.perf_counter() - t0
    k = min(n, 1000)
    t0 = time.perf_counter()
    render_images(meta.iloc[:k], size, 0, progress=False, workers=1)
    one_s = time.perf_counter() - t0
    w = workers or min(8, os.cpu_count() or 1)
    return [
        _row("phantom", f"{n} images at {size}px, {w} workers", all_s, "s"),
        _row("phantom", f"{size}px, {w} workers", n / all_s, "images/s"),
        _row("phantom", f"{size}px, 1 worker", k / one_s, "images/s"),
    ]


def _random_set(n: int, size: int):
    """``n`` random uint8 images with random CheXpert labels (throughput needs no real content)."""
    from .data.base import ArrayDataset
    from .data.labels import CHEXPERT_LABELS

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, size, size), generator=g, dtype=torch.uint8).numpy()
    labels = (torch.rand(n, len(CHEXPERT_LABELS), generator=g) < 0.3).float().numpy()
    meta = pd.DataFrame(labels, columns=list(CHEXPERT_LABELS)).assign(patient_id=[f"p{i}" for i in range(n)], sex="F", age=60.0)
    return ArrayDataset(imgs, meta)


def bench_classifier(size: int = 32, arch: str = "small_cnn", n: int = 512, batch_size: int = 64, device: str = "cpu") -> list[dict]:
    """Training throughput of a classifier (one epoch over ``n`` random images after a warm-up)."""
    from .classify import train_classifier

    ds = _random_set(n, size)
    train_classifier(train=ds.subset(range(batch_size)), val=None, arch=arch, epochs=1, batch_size=batch_size, device=device,
                     progress=False)
    t0 = time.perf_counter()
    train_classifier(train=ds, val=None, arch=arch, epochs=1, batch_size=batch_size, device=device, progress=False)
    sec = time.perf_counter() - t0
    return [_row("classifier training", f"{arch} {size}px batch {batch_size}", n / sec, "images/s")]


def _train_one(size: int, n: int, steps: int, seed: int) -> None:
    from .classify import train_classifier

    train_classifier(train=_random_set(n, size), val=None, steps=steps, seed=seed, progress=False)


def bench_workers(size: int = 32, steps: int = 100, workers: int | None = None) -> list[dict]:
    """An arms x seeds grid (``2 x workers`` independent small_cnn trainings of ``steps`` steps) in this
    process with every core's threads (executor ``serial``) and on ``workers`` processes with
    cores/workers threads each (``local:N``, worker start-up included): the speed-up of ``executor``."""
    from .executor import run_grid, usable_cores

    w = workers or usable_cores()
    if w < 2:
        return []
    cells = [dict(size=size, n=512, steps=steps, seed=s) for s in range(2 * w)]
    t0 = time.perf_counter()
    run_grid(_train_one, cells, executor="serial", progress=False)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_grid(_train_one, cells, executor=f"local:{w}", progress=False)
    parallel = time.perf_counter() - t0
    grid = f"{len(cells)} x small_cnn {size}px {steps} steps"
    return [_row("classifier grid", f"{grid}, serial ({torch.get_num_threads()} threads)", serial, "s"),
            _row("classifier grid", f"{grid}, local:{w} ({usable_cores() // w} thread each)", parallel, "s"),
            _row("classifier grid", f"local:{w} speed-up over serial", serial / parallel, "x")]


def bench_generator(profile: str = "cpu", steps: int = 20, n_sample: int = 32, tmp_dir: str | None = None,
                    sampler_steps: dict | None = None, device: str = "cpu") -> list[dict]:
    """Generator training throughput (``steps`` optimizer steps of the study's generator recipe at
    ``profile``: :func:`cxrlib.experiments.synthetic.generator_options`) and sampler speed
    (``sampler_steps``: sampler -> step count; default DDPM-250, DDIM-50, DPM-Solver++-20)."""
    import tempfile

    from .experiments.common import StudyConfig
    from .experiments.synthetic import generator_options
    from .generators.ddpm import load_generator, train_generator
    from .generators.sampling import time_samplers
    p = generator_options(StudyConfig.from_params(profile=profile))
    size, bs = p["image_size"], p["batch_size"]
    n = bs * 4
    ds = _random_set(n, size)
    p.update(total_steps=steps, checkpoint_every=0, sample_every=0, warmup_steps=1, progress=False, device=device)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        t0 = time.perf_counter()
        model_dir = train_generator(train_data=ds, out_dir=Path(d) / "run", **p)
        sec = time.perf_counter() - t0
        model = load_generator(model_dir)
    rows = [_row("generator training", f"{profile} recipe {size}px batch {bs}", steps * bs / sec, "images/s")]
    t = time_samplers(model, n_images=n_sample, batch_size=n_sample, steps=sampler_steps or {"ddpm": 250, "ddim": 50, "dpm++": 20},
                      device=device)
    for r in t.itertuples():
        rows.append(_row("sampling", f"{r.sampler}-{r.steps} {size}px", r.images_per_s, "images/s"))
        rows.append(_row("sampling", f"{r.sampler}-{r.steps} {size}px", r.image_steps_per_s, "image-steps/s"))
    return rows


def bench_peer(profile: str = "cpu", steps: int = 20, device: str = "cpu") -> list[dict]:
    """The study's generator loop against the peer and the machine's limit, in one process:

    * the GEMM rate (a 2048 x 2048 float32 matmul), the machine's practical FLOP/s ceiling;
    * a plain diffusers training loop (diffusers' ``train_unconditional`` recipe: the same ``UNet2DModel``
      as the recipe's, ``DDPMScheduler.add_noise``, AdamW, MSE; no EMA, no condition encoder, no
      dropout of conditions) on the same batch size and image size;
    * the study's loop (:func:`cxrlib.generators.ddpm.train_generator`), per step from the difference of
      a ``steps`` and a 2-step run (so set-up and saving cancel);
    * the achieved FLOP/s of both as a fraction of the GEMM rate (a training step = 3 forwards of the
      UNet, counted by ``torch.utils.flop_counter``; the condition encoder's few FLOPs left out).
    """
    import tempfile

    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from .experiments.common import StudyConfig
    from .experiments.synthetic import generator_options
    from .generators.ddpm import train_generator
    from .models.unet import generator_config_of

    dev = torch.device(device)
    a = torch.randn(2048, 2048, device=dev)
    a @ a
    t0, reps = time.perf_counter(), 5
    for _ in range(reps):
        a @ a
    if dev.type == "cuda":
        torch.cuda.synchronize()
    gemm = reps * 2 * 2048 ** 3 / (time.perf_counter() - t0)

    p = generator_options(StudyConfig.from_params(profile=profile))
    conf = generator_config_of(p)
    size, bs, u = p["image_size"], p["batch_size"], conf["unet"]
    torch.manual_seed(0)
    unet = UNet2DModel(**u).to(dev)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=p["beta_schedule"])
    opt = torch.optim.AdamW(unet.parameters(), lr=p["lr"])
    x0 = torch.randn(bs, u["in_channels"], size, size, device=dev)
    emb = torch.zeros(bs, 4 * u["block_out_channels"][0], device=dev)  # class_embed_type "identity": the time width
    with FlopCounterMode(display=False) as fc:
        unet(x0[:1], torch.zeros(1, dtype=torch.long, device=dev), class_labels=emb[:1])
    step_flops = 3 * float(fc.get_total_flops()) * bs

    def plain_step():
        noise = torch.randn(bs, 1, size, size, device=dev)
        t = torch.randint(0, 1000, (bs,), device=dev)
        noisy = torch.cat([sched.add_noise(x0[:, :1], noise, t), x0[:, 1:]], dim=1)
        loss = F.mse_loss(unet(noisy, t, class_labels=emb).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        plain_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        plain_step()
    plain = (time.perf_counter() - t0) / steps

    ds = _random_set(bs * 4, size)
    p.update(checkpoint_every=0, sample_every=0, warmup_steps=1, progress=False, device=device)
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for n in (2, steps + 2):
            t0 = time.perf_counter()
            train_generator(train_data=ds, out_dir=Path(d) / f"run{n}", **{**p, "total_steps": n})
            runs[n] = time.perf_counter() - t0
    ours = (runs[steps + 2] - runs[2]) / steps
    setting = f"{profile} recipe {size}px batch {bs}"
    return [_row("peer", "GEMM 2048x2048 float32", gemm / 1e12, "TFLOP/s"),
            _row("peer", f"plain diffusers loop, {setting}", bs / plain, "images/s"),
            _row("peer", f"cxrlib loop, {setting}", bs / ours, "images/s"),
            _row("peer", "cxrlib loop speed over the plain diffusers loop", plain / ours, "x"),
            _row("peer", "plain diffusers loop achieved FLOP/s of GEMM", 100 * step_flops / plain / gemm, "%"),
            _row("peer", "cxrlib loop achieved FLOP/s of GEMM", 100 * step_flops / ours / gemm, "%")]


def results_dir() -> Path:
    """Where ``cxr bench`` writes and ``cxr run --plan`` reads results: ``$CXR_BENCH_DIR`` or ``bench/results``."""
    from .utils import project_root

    return Path(os.environ.get("CXR_BENCH_DIR") or project_root() / "bench" / "results")


def machine(device: str = "cpu") -> dict:
    return {"device": device, "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor()}


def run_all(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """Every benchmark; on a GPU (``device``) the training and sampling ones, which the cost plan reads."""
    rows = []
    if device == "cpu":
        rows += bench_phantom(n=2000 if quick else 10000, size=64)
    rows += bench_classifier(size=32, n=256 if quick else 1024, device=device)
    rows += bench_classifier(size=64, n=256 if quick else 512, device=device)
    for arch in () if quick else ("resnet18", "densenet121"):  # the study's larger backbones: the plan reads their rates
        rows += bench_classifier(size=32, arch=arch, n=256, device=device)
    if device == "cpu":
        rows += bench_workers(steps=10 if quick else 100)
    rows += bench_generator(steps=5 if quick else 20, n_sample=8 if quick else 32, device=device)
    rows += bench_peer(steps=3 if quick else 20, device=device)
    return pd.DataFrame(rows)


def _cmd_bench(args) -> int:
    from .io import atomic_write_json

    df = run_all(quick=args.quick, device=args.device)
    out = Path(args.out) if args.out else results_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    df.to_csv(out / f"bench-{stamp}.csv", index=False)
    atomic_write_json(out / f"bench-{stamp}.json", {"machine": machine(args.device), "rows": df.to_dict("records")})
    with pd.option_context("display.max_colwidth", 60, "display.width", 140):
        print(df.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    print(f"\nwritten to {out}/bench-{stamp}.csv ({json.dumps(machine(args.device))})")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks: phantom rendering, classifier/generator training, samplers")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke check of the benchmark itself)")
    p.add_argument("--out", default=None, help="folder for the results (default: $CXR_BENCH_DIR or bench/results/)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 | mps: the device the training and sampling "
                                                   "benchmarks run on (cxr run --plan reads the results of its run's device)")
    p.set_defaults(func=_cmd_bench)
