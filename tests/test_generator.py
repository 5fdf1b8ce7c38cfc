"""The conditional DDPM (cxrlib.models.unet, cxrlib.generators.ddpm) on a tiny UNet, CPU, seconds."""

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.generators.ddpm import load_generator, train_generator
from cxrlib.generators.training_utils import save_resume_state
from cxrlib.io import load_tensors, safe_torch_load
from cxrlib.models.unet import Condition, ConditionalUNet, generator_config

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine an oversubscribed
    OpenMP pool is ~100x slower (measured: 1 ms vs 107 ms per conv backward)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


LABELS = ["Cardiomegaly", "Edema", "Pleural Effusion"]
# A few thousand parameters, 16 px: seconds.
TINY = dict(image_size=16, channels=(8, 16), layers_per_block=1, attention=(False, False), norm_groups=4,
            cond_hidden=16, total_steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9,
            checkpoint_every=3, sample_every=0, log_every=1)
ARCH = {k: TINY[k] for k in ("image_size", "channels", "layers_per_block", "attention", "norm_groups", "cond_hidden")}


def random_dataset(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M", None], n), "age": rng.uniform(20, 90, n)})
    for lab in CHEXPERT_LABELS:
        meta[lab] = rng.choice([1.0, 0.0, -1.0, np.nan], n)
    return ArrayDataset(rng.integers(0, 256, (n, size, size), dtype=np.uint8), meta)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return ConditionalUNet(generator_config(labels=LABELS, **{**ARCH, **kw})).eval()


def cond(labels, known=None, sex=(-1,), age=(float("nan"),)):
    y = torch.tensor(labels, dtype=torch.float32)
    k = torch.ones_like(y, dtype=torch.bool) if known is None else torch.tensor(known)
    n = len(y)
    return Condition(y, k, torch.tensor(list(sex) * (n // len(sex))), torch.tensor(list(age) * (n // len(age)), dtype=torch.float32))


def test_forward_shapes_and_conditioning():
    m = tiny_model()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        a = m(x, t, cond([[1, 0, 0], [0, 1, 1]], sex=(0,), age=(60.0,)))
        b = m(x, t, cond([[0, 0, 0], [0, 1, 1]], sex=(0,), age=(60.0,)))
        c = m(x, t, cond([[1, 0, 0], [0, 1, 1]], sex=(1,), age=(60.0,)))
        d = m(x, t, cond([[1, 0, 0], [0, 1, 1]], sex=(0,), age=(30.0,)))
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert not torch.allclose(a[0], b[0])  # a label changes the prediction ...
    assert torch.equal(a[1], b[1])  # ... of its own image only
    assert not torch.allclose(a, c) and not torch.allclose(a, d)  # so do sex and age
    with pytest.raises(ValueError, match="expects 3"):
        m(x, t, cond([[1, 0], [0, 1]]))


def test_null_condition_per_field():
    m = tiny_model()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([100, 100])
    with torch.no_grad():
        # an unknown label uses the null state whatever its value
        u1 = m(x, t, cond([[1, 1, 0], [0, 0, 0]], known=[[False, True, True], [False, True, True]]))
        u0 = m(x, t, cond([[0, 1, 0], [1, 1, 0]], known=[[False, True, True], [False, True, True]]))
        assert torch.equal(u1[0], u0[0]) and not torch.equal(u1[1], u0[1])
        # the null state differs from both "absent" and "present"
        absent = m(x, t, cond([[0, 1, 0], [0, 1, 0]]))
        assert not torch.allclose(u0[0], absent[0])
        # Condition.null == every field unknown
        null = m(x, t, Condition.null(2, 3))
        every = m(x, t, cond([[1, 0, 1], [0, 1, 0]], known=[[False] * 3] * 2, sex=(-1,), age=(float("nan"),)))
        assert torch.equal(null, every)


def test_classifier_free_guidance():
    m = tiny_model()
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([5, 400, 999])
    c = cond([[1, 0, 0], [0, 1, 0], [0, 0, 1]], sex=(1,), age=(50.0,))
    with torch.no_grad():
        conditional = m(x, t, c)
        null = m(x, t, Condition.null(3, 3))
        assert torch.equal(m(x, t, c, guidance=0.0), conditional)  # w = 0: the unguided conditional prediction
        w = 2.5
        guided = m(x, t, c, guidance=w)  # one batched pass over [cond; null]
        torch.testing.assert_close(guided, (1 + w) * conditional - w * null, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(guided, conditional, atol=1e-4)
    with pytest.raises(ValueError, match="guidance"):
        m(x, t, c, guidance=-1.0)


def _train(tmp_path, name, **kw):
    opts = {**TINY, **kw}
    return train_generator(train_data=random_dataset(), out_dir=tmp_path / name, labels=LABELS, progress=False, **opts)


def _weights(model_dir):
    return load_tensors(model_dir / "weights.safetensors")


class Interrupt(Exception):
    pass


def _loss_hook(monkeypatch, at_call, action):
    """Patch cxrlib.generators.ddpm.diffusion_loss so its ``at_call``-th call (1-based step) raises or returns NaN."""
    import cxrlib.generators.ddpm as diffusion

    real, calls = diffusion.diffusion_loss, [0]

    def hooked(pred, target):
        calls[0] += 1
        if calls[0] == at_call:
            if action == "nan":
                return real(pred, target) * float("nan")
            raise Interrupt(f"killed at step {at_call}")
        return real(pred, target)

    monkeypatch.setattr(diffusion, "diffusion_loss", hooked)


def test_resume_is_bitwise_identical(tmp_path, monkeypatch):
    full = _weights(_train(tmp_path, "full"))
    # the same run killed during step 5 (last resume state: step 3), then resumed
    _loss_hook(monkeypatch, 5, "raise")
    with pytest.raises(Interrupt):
        _train(tmp_path, "resumed")
    assert safe_torch_load(tmp_path / "resumed" / "resume" / "state.pt")["step"] == 3
    assert not (tmp_path / "resumed" / "model").exists()
    monkeypatch.undo()
    resumed = _weights(_train(tmp_path, "resumed"))
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    # the log has each step once, and the finished model folder records its id
    log = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    assert log["step"].tolist() == list(range(1, TINY["total_steps"] + 1))
    assert load_generator(tmp_path / "full" / "model").generator_id == load_generator(tmp_path / "resumed" / "model").generator_id
    # a different seed gives different weights (the comparison above can fail)
    other = _weights(_train(tmp_path, "seed1", seed=1))
    assert not all(torch.equal(full[k], other[k]) for k in full)


def test_constant_lr_run_can_be_extended(tmp_path):
    full = _weights(_train(tmp_path, "full"))
    _train(tmp_path, "ext", total_steps=3)  # finished at step 3 ...
    extended = _weights(_train(tmp_path, "ext"))  # ... then extended to 6 from its resume state
    assert all(torch.equal(full[k], extended[k]) for k in full)
    with pytest.raises(ValueError, match="total_steps"):  # the cosine schedule depends on total_steps
        _train(tmp_path, "cos", total_steps=3, lr_schedule="cosine")
        _train(tmp_path, "cos", total_steps=6, lr_schedule="cosine")


def test_resume_refuses_changed_options(tmp_path):
    _train(tmp_path, "run")
    with pytest.raises(ValueError, match="lr"):
        _train(tmp_path, "run", lr=5e-4)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    _train(tmp_path, "run")
    path = tmp_path / "run" / "resume" / "state.pt"
    before = path.read_bytes()
    m = tiny_model()

    def crash(obj, f, *a, **k):  # write half a file, then die
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    opt = torch.optim.AdamW(m.parameters())
    from diffusers.training_utils import EMAModel

    with pytest.raises(OSError, match="disk full"):
        save_resume_state(path, model=m, ema=EMAModel(m.parameters()), optimizer=opt,
                          lr_scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), step=99)
    monkeypatch.undo()
    assert path.read_bytes() == before and safe_torch_load(path)["step"] == TINY["total_steps"]
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temp file left behind


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    _loss_hook(monkeypatch, 5, "nan")
    with pytest.raises(FloatingPointError, match="at step 5"):
        _train(tmp_path, "run")
    assert safe_torch_load(tmp_path / "run" / "resume" / "state.pt")["step"] == 3
    assert not (tmp_path / "run" / "model").exists()


def test_pretrain_then_finetune(tmp_path):
    pre = _train(tmp_path, "pre", unconditional=True, total_steps=2)
    fine = _train(tmp_path, "fine", init_from=pre, total_steps=2)
    scratch = _train(tmp_path, "scratch", total_steps=2)
    f, s = _weights(fine), _weights(scratch)
    assert not all(torch.equal(f[k], s[k]) for k in f)  # fine-tuning started elsewhere than scratch
    with pytest.raises(ValueError, match="labels"):
        train_generator(train_data=random_dataset(), out_dir=tmp_path / "bad", labels=["Edema"], init_from=pre,
                        progress=False, **{**TINY, "total_steps": 1})


def test_bad_arguments(tmp_path):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise RuntimeError("CUDA is not available (skipped: a GPU is present)")
        _train(tmp_path, "gpu", device="cuda")
    with pytest.raises(ValueError, match="image_size=32"):
        _train(tmp_path, "size", image_size=32)
    with pytest.raises(ValueError, match="prediction_type"):
        _train(tmp_path, "pred", prediction_type="x0")
    with pytest.raises(ValueError, match="Did you mean 'Edema'"):
        train_generator(train_data=random_dataset(), out_dir=tmp_path / "lab", labels=["Edemma"], progress=False, **TINY)


def test_v_prediction_cosine_trains(tmp_path):
    m = load_generator(_train(tmp_path, "v", prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2", total_steps=2))
    assert m.config["schedule"] == {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000}
