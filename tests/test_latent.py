"""The latent diffusion model and its image-to-image mode (cxrlib.generators.latent), tiny configs, CPU."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.generators import latent as LD
from cxrlib.generators import latent_sampling as LS
from cxrlib.generators.synthetic_sets import write_latent_set
from cxrlib.models.unet import Condition
from cxrlib.generators.conditions import explicit_conditions
from cxrlib.generators.synthetic_sets import load_synthetic_set
LABELS = ["Cardiomegaly", "Edema", "Pleural Effusion"]
TINY = dict(LD.LATENT_PRESETS["tiny"])


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_dataset(n=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 90, n)})
    for lab in CHEXPERT_LABELS:
        meta[lab] = rng.choice([1.0, 0.0], n)
    # smooth blobs: something an autoencoder can learn in a few steps
    yy, xx = np.mgrid[:size, :size]
    imgs = np.stack([255 * np.exp(-((yy - rng.uniform(4, 12)) ** 2 + (xx - rng.uniform(4, 12)) ** 2) / 18) for _ in range(n)])
    return ArrayDataset(imgs.astype(np.uint8), meta)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ldm")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model_dir = LD.train_latent_diffusion(train_data=random_dataset(), out_dir=d / "run", labels=LABELS, progress=False,
                                          seed=1, log_every=1, **TINY)
    torch.set_num_threads(n)
    return d, model_dir


def cond(y):
    y = torch.tensor(y, dtype=torch.float32)
    n = len(y)
    return Condition(y, torch.ones_like(y, dtype=torch.bool), torch.full((n,), -1), torch.full((n,), float("nan")))


def test_config_and_shapes(trained):
    ae = LD.autoencoder_config(image_size=32, vae_channels=(16, 32, 64), latent_channels=4)
    assert LD.latent_size(ae) == 8
    with pytest.raises(ValueError, match="divisible"):
        LD.autoencoder_config(image_size=30, vae_channels=(16, 32, 64), latent_channels=4)
    _, model_dir = trained
    m = LD.load_latent_diffusion(model_dir)
    assert m.latent_shape == (2, 8, 8) and m.image_size == 16 and m.label_names == tuple(LABELS)
    assert m.denoiser.unet.config.in_channels == 2 + 2 * len(LABELS)  # latents + label channels
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        z = m.encode(x)
        assert z.shape == (3, 2, 8, 8)
        assert m.decode(z).shape == x.shape
    info = json.loads((model_dir / "config.json").read_text())
    assert info["kind"] == "latent-diffusion" and len(info["latent"]["latent_std"]) == 2
    assert min(info["latent"]["latent_std"]) > 0


def test_autoencoder_loss_decreases(tmp_path):
    LD.train_latent_diffusion(train_data=random_dataset(), out_dir=tmp_path, labels=LABELS, progress=False, seed=0,
                              log_every=1, **{**TINY, "vae_steps": 15, "vae_lr": 3e-3, "total_steps": 1})
    log = pd.read_csv(tmp_path / "autoencoder_log.csv")
    assert log["l1_per_pixel"].iloc[-3:].mean() < log["l1_per_pixel"].iloc[:3].mean()


def test_resume_equals_uninterrupted(trained, tmp_path):
    _, full = trained
    kw = dict(TINY, train_data=random_dataset(), labels=LABELS, progress=False, seed=1, log_every=1)
    LD.train_latent_diffusion(out_dir=tmp_path, **{**kw, "total_steps": 2})
    part = LD.train_latent_diffusion(out_dir=tmp_path, **kw)
    assert LD.load_latent_diffusion(part).generator_id == LD.load_latent_diffusion(full).generator_id
    assert pd.read_csv(tmp_path / "train_log.csv")["step"].tolist() == [1, 2, 3, 4]


def test_sampling_per_image_and_img2img(trained):
    _, model_dir = trained
    m = LD.load_latent_diffusion(model_dir)
    c = cond(np.eye(3)[np.arange(5) % 3])
    seeds = [1, 2, 3, 4, 5]
    a = LS.sample_latent(m, c, seeds, sampler="ddim", steps=4, guidance=1.0, batch_size=5)
    b = LS.sample_latent(m, c, seeds, sampler="ddim", steps=4, guidance=1.0, batch_size=2)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b)
    src = torch.rand(5, 1, 16, 16)
    # strength 0 runs no denoising step: the autoencoder's reconstruction of the source
    with torch.no_grad():
        rec = m.decode(m.encode(src))
    r0 = LS.sample_latent(m, c, seeds, sampler="dpm++", steps=4, init_images=src, strength=0.0)
    assert torch.allclose(r0, rec, atol=1e-5)
    r5 = LS.sample_latent(m, c, seeds, sampler="dpm++", steps=4, init_images=src, strength=0.5)
    r5b = LS.sample_latent(m, c, seeds, sampler="dpm++", steps=4, init_images=src, strength=0.5, batch_size=3)
    assert torch.equal(r5, r5b) and not torch.allclose(r5, rec)
    with pytest.raises(ValueError, match="strength"):
        LS.sample_latent(m, c, seeds, init_images=src, strength=1.5)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "ddpm"])
def test_img2img_timesteps_follow_diffusers(sampler):
    sched = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
    for steps, strength in ((10, 0.5), (10, 0.75), (20, 1.0), (7, 0.3)):
        s = LS.latent_scheduler(sampler, sched)
        s.set_timesteps(steps)
        ts = LS.img2img_timesteps(s, steps, strength)
        assert len(ts) == int(steps * strength)  # the last ⌊strength·steps⌋ timesteps ...
        assert torch.equal(ts, s.timesteps[len(s.timesteps) - len(ts):])  # ... of the full schedule
    assert "clip_sample" not in s.config or s.config.clip_sample is False  # latents are not clipped to [-1, 1]


def test_img2img_set_round_trip(trained, tmp_path):
    _, model_dir = trained
    src = random_dataset(n=4, seed=5)
    conds = explicit_conditions(np.eye(3)[[0, 0, 1, 2]], label_names=LABELS)
    conds["source_row"] = [3, 2, 1, 0]
    out = write_latent_set(model_dir, conds, tmp_path / "set", seed=3, sampler="ddim", steps=4, source=src, strength=0.6,
                              progress=False)
    ds = load_synthetic_set(out)
    man = pd.read_csv(out / "manifest.csv")
    assert len(ds) == 4 and man["source_row"].tolist() == [3, 2, 1, 0]
    assert (man["sampler"] == "sdedit-0.6:ddim").all()
    assert json.loads((out / "synthetic_set.json").read_text())["extra"]["strength"] == 0.6
    bad = conds.drop(columns="source_row")
    with pytest.raises(ValueError, match="source_row"):
        write_latent_set(model_dir, bad, tmp_path / "bad", seed=3, source=src, progress=False)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_clip_prediction_clamps_the_implied_clean_latent(ptype):
    from diffusers import DDPMScheduler

    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    t = torch.tensor(900)
    a, s = ac[t].sqrt(), (1 - ac[t]).sqrt()
    x0 = torch.tensor([[0.5, -3.0, 10.0, -20.0]])
    eps = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    z = a * x0 + s * eps
    pred = eps if ptype == "epsilon" else a * eps - s * x0
    out = LS.clip_prediction(pred, z, t, ac, ptype, clip=4.0)
    x0_out = (z - s * out) / a if ptype == "epsilon" else a * z - s * out
    assert torch.allclose(x0_out, x0.clamp(-4, 4), atol=1e-3)
    assert torch.allclose(out[:, :2], pred[:, :2], atol=1e-4)  # inside the range: unchanged
