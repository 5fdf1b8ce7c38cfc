"""The label-conditional GAN (cxrlib.generators.gan) on tiny configs, CPU, seconds."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.generators import gan as G
from cxrlib.generators.synthetic_sets import write_gan_set
from cxrlib.models.unet import Condition
from cxrlib.generators.conditions import explicit_conditions
from cxrlib.generators.synthetic_sets import load_synthetic_set
LABELS = ["Cardiomegaly", "Edema", "Pleural Effusion"]
TINY = dict(G.GAN_PRESETS["tiny"])
ARCH = {k: TINY[k] for k in ("image_size", "z_dim", "g_channels", "d_channels", "cond_hidden")}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_dataset(n=16, size=16, seed=0):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M", None], n), "age": rng.uniform(20, 90, n)})
    for lab in CHEXPERT_LABELS:
        meta[lab] = rng.choice([1.0, 0.0, np.nan], n)
    return ArrayDataset(rng.integers(0, 256, (n, size, size), dtype=np.uint8), meta)


def cond(y, sex=-1, age=float("nan")):
    y = torch.tensor(y, dtype=torch.float32)
    n = len(y)
    return Condition(y, torch.ones_like(y, dtype=torch.bool), torch.full((n,), sex), torch.full((n,), age))


def models(seed=0):
    torch.manual_seed(seed)
    cfg = G.gan_config(labels=LABELS, **ARCH)
    return G.GANGenerator(cfg).eval(), G.GANDiscriminator(cfg)


def test_config_checks_sizes():
    with pytest.raises(ValueError, match="power of two"):
        G.gan_config(image_size=24, labels=LABELS)
    with pytest.raises(ValueError, match="g_channels"):
        G.gan_config(image_size=32, labels=LABELS, g_channels=(8, 8))
    with pytest.raises(ValueError, match="d_channels"):
        G.gan_config(image_size=32, labels=LABELS, d_channels=(8,))


def test_shapes_and_conditioning():
    g, d = models()
    z = torch.randn(3, ARCH["z_dim"])
    with torch.no_grad():
        x = g(z, cond([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
        # conditional norms start at identity (zero-initialized projections): give them weights first
        for m in g.norms:
            torch.nn.init.normal_(m.proj.weight, std=0.5)
        a = g(z, cond([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
        b = g(z, cond([[0, 0, 0], [0, 1, 0], [0, 0, 1]]))
        out = d(x, cond([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert x.shape == (3, 1, 16, 16) and x.abs().max() <= 1
    assert out.shape == (3,)
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1:], b[1:])  # a label changes its own image only


def test_translate_and_minibatch_std():
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    y = G.translate(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # a shift of 0 everywhere is the identity
    same = G.translate(x.detach(), torch.Generator().manual_seed(0), ratio=0.0)
    assert torch.equal(same, x.detach())
    s = G.minibatch_std(torch.randn(8, 5, 4, 4))
    assert s.shape == (8, 1, 4, 4) and (s > 0).all()
    assert torch.allclose(G.minibatch_std(torch.ones(8, 5, 4, 4)), torch.full((8, 1, 4, 4), 1e-4), atol=1e-5)


def test_discriminator_step_reduces_hinge_loss():
    g, d = models()
    ds = random_dataset()
    real = ds.to_tensors()[0].float() / 127.5 - 1
    c = cond(np.eye(3)[np.arange(16) % 3])
    fake = g(torch.randn(16, ARCH["z_dim"], generator=torch.Generator().manual_seed(1)), c).detach()
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9))
    losses = []
    for _ in range(8):
        loss = G.hinge_d_loss(d(real, c), d(fake, c))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_train_resume_equals_uninterrupted(tmp_path):
    ds = random_dataset()
    kw = dict(TINY, labels=LABELS, train_data=ds, progress=False, seed=3, log_every=1)
    full = G.train_gan(out_dir=tmp_path / "full", **kw)
    G.train_gan(out_dir=tmp_path / "part", **{**kw, "total_steps": 2})
    part = G.train_gan(out_dir=tmp_path / "part", **kw)  # extended from its step-2 resume state
    a, b = G.load_gan(full), G.load_gan(part)
    assert a.generator_id == b.generator_id
    log = pd.read_csv(tmp_path / "part" / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="different options"):
        G.train_gan(out_dir=tmp_path / "full", **{**kw, "lr_g": 1e-3})


def test_sampling_is_per_image(tmp_path):
    g, _ = models()
    c = cond(np.eye(3)[np.arange(5) % 3])
    seeds = [11, 12, 13, 14, 15]
    a = G.sample_gan(g, c, seeds, batch_size=5)
    b = G.sample_gan(g, c, seeds, batch_size=2)
    assert torch.equal(a, b)  # image i does not depend on the batch size
    assert torch.equal(G.sample_gan(g, c[3:4], seeds[3:4]), a[3:4])  # ... nor on the other images
    assert a.min() >= 0 and a.max() <= 1


def test_synthetic_set_round_trip(tmp_path):
    g, _ = models()
    G.save_gan(g, tmp_path / "gan")
    conds = explicit_conditions(np.eye(3)[[0, 1, 2, 0]], label_names=LABELS, sex=["F", "M", None, "F"], age=[50, 60, None, 70])
    out = write_gan_set(tmp_path / "gan", conds, tmp_path / "set", seed=7, batch_size=3, progress=False)
    ds = load_synthetic_set(out)  # verifies every sha256
    m = pd.read_csv(out / "manifest.csv")
    assert len(ds) == 4 and list(ds.label_names) == LABELS
    assert (m["sampler"] == "gan").all() and m["generator_id"].nunique() == 1 and m["seed"].nunique() == 4
    assert json.loads((out / "synthetic_set.json").read_text())["generator_kind"] == "gan"
    y, mask = ds.targets()
    assert np.array_equal(y, np.eye(3)[[0, 1, 2, 0]])
    # any-kind dispatch and the loader's checks
    from cxrlib.generators.synthetic_sets import generator_kind, load_any_generator
    assert generator_kind(tmp_path / "gan") == "gan"
    assert load_any_generator(tmp_path / "gan").generator_id == ds.meta["patient_id"].iloc[0].split("-")[1]
    from cxrlib.generators.ddpm import load_generator
    with pytest.raises(ValueError, match=r"describes a 'gan' generator, not a pixel DDPM"):
        load_generator(tmp_path / "gan")  # a folder of another kind is named, not a KeyError
    cfgj = json.loads((tmp_path / "gan" / "config.json").read_text())
    cfgj["generator_id"] = "0" * 16
    (tmp_path / "gan" / "config.json").write_text(json.dumps(cfgj))
    with pytest.raises(ValueError, match="hash"):
        G.load_gan(tmp_path / "gan")
