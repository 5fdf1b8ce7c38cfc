"""Classifiers (cxrlib.models.classifiers) and their training loop (cxrlib.classify) on tiny toy data."""

import json
import urllib.error

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib import metrics as M
from cxrlib.classify import (
    balanced_sample_weights,
    class_weights,
    evaluate_classifiers,
    load_classifier,
    predict,
    train_classifier,
)
from cxrlib.data.base import ArrayDataset
from cxrlib.models.classifiers import (
    CLASSIFIER_ARCHS,
    PretrainedWeightsUnavailable,
    build_classifier,
)

LABELS = ("a", "b", "c")


def toy(n, seed, size=32, multiclass=False):
    """Images whose labels are drawn in: a bright square (a), a dark bar (b), a bright disk (c), on noise."""
    rng = np.random.default_rng(seed)
    if multiclass:
        y = np.eye(3)[rng.integers(0, 3, n)]
    else:
        y = (rng.random((n, 3)) < [0.4, 0.3, 0.2]).astype(float)
    img = rng.normal(0.45, 0.06, (n, size, size))
    img[:, 4:12, 4:12] += 0.25 * y[:, :1, None]
    img[:, 20:28, 18:30] -= 0.2 * y[:, 1:2, None]
    yy, xx = np.mgrid[:size, :size]
    img[:, ((yy - 22) ** 2 + (xx - 8) ** 2) < 16] += 0.25 * y[:, 2:3]
    meta = pd.DataFrame({"patient_id": [f"s{seed}p{i // 2}" for i in range(n)], **{l: y[:, j] for j, l in enumerate(LABELS)}})
    return ArrayDataset((np.clip(img, 0, 1) * 255).round().astype(np.uint8), meta, label_names=LABELS, name=f"toy{seed}")


FAST = dict(epochs=1, batch_size=32, lr=3e-3, progress=False)


# --- architectures --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", CLASSIFIER_ARCHS)
def test_every_arch_takes_one_channel_small_images(arch):
    torch.manual_seed(0)
    m = build_classifier(arch, 5, image_size=32).eval()
    first = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        out = m(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    with torch.no_grad():
        torch.testing.assert_close(m.head()(m.penultimate(torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)))),
                                   m(torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))))
    assert m.config == {"arch": arch, "num_outputs": 5, "in_channels": 1, "image_size": 32, "pretrained": False}


def test_small_image_stem_keeps_resolution():
    # at 64 px the adapted ResNet ends at 8x8 (total stride 8); at 128 px torchvision's stem is kept (4x4)
    for size, expected in ((64, 8), (128, 4)):
        m = build_classifier("resnet18", 2, image_size=size).eval()
        feats = {}
        m.backbone.layer4.register_forward_hook(lambda mod, i, o: feats.update(x=o))
        with torch.no_grad():
            m(torch.rand(1, 1, size, size))
        assert feats["x"].shape[-1] == expected


def test_build_errors():
    with pytest.raises(ValueError, match="unknown classifier arch 'resnet19'"):
        build_classifier("resnet19", 3, image_size=32)
    with pytest.raises(ValueError, match="image_size"):
        build_classifier("resnet18", 3, image_size=16)
    with pytest.raises(ValueError, match="small_cnn' has no pretrained"):
        build_classifier("small_cnn", 3, image_size=32, pretrained=True)
    with pytest.raises(ValueError, match=r"expects images \[B, 1, S, S\]"):
        build_classifier("small_cnn", 3, image_size=32)(torch.rand(1, 3, 32, 32))


def test_pretrained_unavailable_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # no network, whatever the machine has
    with pytest.raises(PretrainedWeightsUnavailable) as e:
        build_classifier("resnet18", 3, image_size=32, pretrained=True)
    msg = str(e.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in msg and str(tmp_path / "hub" / "checkpoints" / "resnet18-") in msg
    assert "TORCH_HOME" in msg and "pretrained=False" in msg


def test_pretrained_from_hub_cache_folds_rgb_kernel(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.EfficientNet_B0_Weights.DEFAULT
    fake = torchvision.models.efficientnet_b0().state_dict()  # stands in for the ImageNet file
    path = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(fake, path)
    m = build_classifier("efficientnet_b0", 4, image_size=32, pretrained=True)
    stem = m.backbone.features[0][0]
    assert stem.stride == (1, 1)  # small-image stem
    torch.testing.assert_close(stem.weight, fake["features.0.0.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(m.backbone.features[1][0].block[0][0].weight, fake["features.1.0.block.0.0.weight"])
    assert m.config["pretrained"] is True


# --- training -------------------------------------------------------------------------------------
def test_small_cnn_learns_the_drawn_findings(tmp_path):
    tr, va, te = toy(192, 0), toy(64, 1), toy(96, 2)
    model, hist = train_classifier(train=tr, val=va, epochs=3, batch_size=32, lr=3e-3, seed=0, progress=False,
                                   out_dir=tmp_path)
    s = predict(model, te)
    y, m = te.targets()
    tab = M.label_metrics(y, s, m, 0.5, LABELS).set_index(["label", "metric"])["estimate"]
    for l in LABELS:
        assert tab[(l, "auroc")] > 0.9, (l, tab[(l, "auroc")])
    assert list(hist.columns) == ["step", "epoch", "train_loss", "val_loss", "val_macro_auroc", "lr", "seconds",
                                  "train_images_per_s", "best"]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert {"options.json", "history.csv", "classifier.json", "classifier.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    # the results table of two arms on the same test set (the second arm: the model before training)
    untrained = build_classifier("small_cnn", 3, image_size=32)
    untrained.label_names = LABELS
    table = evaluate_classifiers({"trained": model, "untrained": untrained}, te, reference_arm="untrained", val=va,
                                 threshold_policy="youden", n_boot=30, metrics=["auroc", "sensitivity"])
    row = table.set_index(["arm", "label", "metric"]).loc[("trained", "a", "auroc")]
    assert row.estimate == pytest.approx(tab[("a", "auroc")]) and row.ci_low <= row.estimate <= row.ci_high
    assert row.p_value < 0.05 and row.test == "delong"
    # the saved classifier predicts the same; a tampered file is refused
    loaded = load_classifier(tmp_path)
    np.testing.assert_array_equal(predict(loaded, te), s)
    assert loaded.label_names == LABELS and loaded.task == "multilabel"
    w = tmp_path / "classifier.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="changed or corrupted"):
        load_classifier(tmp_path)


def test_training_is_deterministic_given_seed():
    tr, va = toy(64, 0), toy(32, 1)
    kw = dict(train=tr, val=va, augment=True, balanced_sampling=True, **FAST)
    m1, h1 = train_classifier(seed=3, **kw)
    m2, h2 = train_classifier(seed=3, **kw)
    m3, _ = train_classifier(seed=4, **kw)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert not torch.equal(m1.backbone.fc.weight, m3.backbone.fc.weight)
    assert h1["train_loss"].equals(h2["train_loss"])


def test_masked_labels_do_not_affect_training():
    va = toy(32, 1)
    y, _ = toy(64, 0).targets()
    mask = np.random.default_rng(0).random(y.shape) > 0.3
    flipped = np.where(mask, y, 1 - y).astype(np.float32)  # differs from y only where masked

    def run(targets, m):
        ds = toy(64, 0)
        ds.targets = lambda: (targets, m)  # what to_tensors() reads
        return train_classifier(train=ds, val=va, seed=1, **FAST)[0].state_dict()

    a, b = run(y, mask), run(flipped, mask)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = run(flipped, np.ones_like(mask))  # control: unmasked, the flipped labels do change training
    assert not torch.equal(a["backbone.fc.weight"], c["backbone.fc.weight"])


def test_multiclass_and_imbalance_options():
    tr, va = toy(64, 0, multiclass=True), toy(32, 1, multiclass=True)
    model, _ = train_classifier(train=tr, val=va, task="multiclass", class_weighting=True, seed=0, **FAST)
    p = predict(model, va)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="exactly one positive"):
        train_classifier(train=toy(64, 0), val=None, task="multiclass", **FAST)
    # weights: multi-label pos_weight = neg/pos; multi-class N/(K n_k); balanced sampling equalizes classes
    y = torch.tensor([[1.0, 0], [0, 0], [0, 1], [0, 0]])
    m = torch.ones_like(y, dtype=torch.bool)
    torch.testing.assert_close(class_weights(y, m, "multilabel", "ab"), torch.tensor([3.0, 3.0]))
    yc = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])
    torch.testing.assert_close(class_weights(yc, m, "multiclass", "ab"), torch.tensor([4 / 6, 2.0]))
    w = balanced_sample_weights(yc, m, "multiclass")
    assert w[:3].sum() == pytest.approx(w[3].item())
    with pytest.raises(ValueError, match=r"\['b'\] have no positive"):
        class_weights(torch.tensor([[1.0, 0], [0, 0]]), torch.ones(2, 2, dtype=torch.bool), "multilabel", "ab")


def test_mixed_sets_and_errors():
    model, hist = train_classifier(train=[toy(64, 0), toy(32, 5)], val=toy(32, 1), **FAST)
    assert hist["train_images_per_s"].iloc[0] > 0
    _, hist = train_classifier(train=toy(32, 0), val=toy(32, 1), mixed_precision=True, **FAST)  # bfloat16 on CPU
    assert np.isfinite(hist["train_loss"]).all() and np.isfinite(hist["val_loss"]).all()
    with pytest.raises(ValueError, match="differ in image size"):
        train_classifier(train=[toy(32, 0), toy(32, 1, size=48)], val=None, **FAST)
    with pytest.raises(ValueError, match=r"has no label\(s\) \['Edema'\]"):
        train_classifier(train=toy(32, 0), val=None, labels=["Edema"], **FAST)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train_classifier(train=toy(32, 0), val=None, device="cuda", **FAST)
    with pytest.raises(ValueError, match="model expects"):
        predict(model, torch.zeros(2, 1, 48, 48, dtype=torch.uint8))


def test_early_stopping_and_best_epoch(monkeypatch):
    import cxrlib.classify as C

    aucs = iter([0.7, 0.6, 0.65, 0.9, 0.9])
    monkeypatch.setattr(C.M, "macro_auroc", lambda *a, **k: next(aucs))
    _, hist = train_classifier(train=toy(32, 0), val=toy(32, 1), early_stopping_patience=2, **{**FAST, "epochs": 5})
    assert hist["epoch"].tolist() == [1, 2, 3] and hist["best"].tolist() == [True, False, False]


@pytest.mark.parametrize("sizes", [(32,), (32, 96)])
def test_step_budget_is_the_same_whatever_the_set_size(sizes, tmp_path):
    """With ``steps``, a set three times larger gets the same number of optimizer steps (the budget of a
    fair comparison), validated every ``eval_every`` steps and at the end; the selected step is one of
    the validated ones and is recorded."""
    train = [toy(n, i) for i, n in enumerate(sizes)]
    n = sum(sizes)
    _, hist = train_classifier(train=train, val=toy(32, 9), steps=7, eval_every=3, out_dir=tmp_path,
                               **{**FAST, "epochs": 1})
    assert hist["step"].tolist() == [3, 6, 7]
    assert hist["epoch"].iloc[-1] == pytest.approx(7 / -(-n // FAST["batch_size"]))
    opts = json.loads((tmp_path / "options.json").read_text())
    assert opts["optimizer_steps"] == 7 and opts["selected_step"] in (3, 6, 7)
    assert opts["selected_step"] == hist.loc[hist.best, "step"].iloc[-1]


def test_epoch_budget_grows_with_the_set():
    _, small = train_classifier(train=toy(32, 0), val=None, **{**FAST, "epochs": 2})
    _, large = train_classifier(train=toy(96, 0), val=None, **{**FAST, "epochs": 2})
    assert large["step"].iloc[-1] == 3 * small["step"].iloc[-1]
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_classifier(train=toy(32, 0), val=None, steps=0, **FAST)
