"""Samplers, per-image seeds, condition specs and synthetic sets (cxrlib.generators.sampling, .conditions, .synthetic_sets), tiny UNet, CPU."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import LabelPolicy
from cxrlib.generators.training_utils import generator_id
from cxrlib.generators.ddpm import save_generator
from cxrlib.io import sha256_file
from cxrlib.models.unet import Condition, ConditionalUNet, generator_config
from cxrlib.generators.sampling import SAMPLERS, image_seeds, sample_images
from cxrlib.generators.conditions import balanced_conditions, explicit_conditions, flipped_conditions, minority_conditions, prevalence_conditions
from cxrlib.generators.synthetic_sets import load_synthetic_set, regenerate_image, write_synthetic_set
LABELS = ["Cardiomegaly", "Edema", "Pleural Effusion"]
# diffusers DPM-Solver under numpy 2 (not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread; on a shared machine an oversubscribed pool is slow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ConditionalUNet(generator_config(image_size=16, labels=LABELS, channels=(8, 16), layers_per_block=1,
                                         attention=(False, True), norm_groups=4, cond_hidden=16))
    return m.eval()


def source(n=40, seed=0):
    """A small dataset whose label columns co-occur (Edema implies Pleural Effusion) to test joint sampling."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i // 2}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M", None], n), "age": rng.uniform(20, 90, n).round()})
    for lab in ("No Finding", "Cardiomegaly", "Edema", "Pleural Effusion"):
        meta[lab] = rng.choice([1.0, 0.0, np.nan], n, p=[0.2, 0.7, 0.1])
    meta.loc[meta["Edema"] == 1.0, "Pleural Effusion"] = 1.0
    meta.loc[:4, "Cardiomegaly"] = [1.0, 1.0, 0.0, 0.0, 0.0]
    return ArrayDataset(np.zeros((n, 16, 16), np.uint8), meta, label_names=("No Finding", *LABELS), policy=LabelPolicy(missing="ignore"))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_image_is_independent_of_batch_size(model, sampler):
    cond = Condition.from_table(explicit_conditions([[1, 0, 0], [0, 1, np.nan], [0, 0, 1], [1, 1, 1], [0, 0, 0]],
                                                    label_names=LABELS, sex=["F", "M", None, "F", "M"], age=[30, 50, np.nan, 70, 90]), LABELS)
    seeds = image_seeds(7, 5)
    kw = dict(sampler=sampler, steps=4, guidance=1.5, progress=False)
    full = sample_images(model, cond, seeds, batch_size=5, **kw)
    assert full.shape == (5, 1, 16, 16) and full.min() >= 0 and full.max() <= 1
    for bs in (1, 2, 3):
        assert torch.equal(sample_images(model, cond, seeds, batch_size=bs, **kw), full), f"batch_size={bs}"
    assert torch.equal(sample_images(model, cond[3:4], seeds[3:4], batch_size=1, **kw)[0], full[3])  # image 3 alone
    assert not torch.equal(sample_images(model, cond, image_seeds(8, 5), batch_size=5, **kw), full)  # the seed matters
    assert not torch.equal(sample_images(model, cond, seeds, batch_size=5, **{**kw, "guidance": 0.0}), full)


def test_sampler_errors(model):
    cond = Condition.null(1, 3)
    with pytest.raises(ValueError, match="sampler='heun'"):
        sample_images(model, cond, [0], sampler="heun", progress=False)
    with pytest.raises(ValueError, match="steps=0"):
        sample_images(model, cond, [0], steps=0, progress=False)
    with pytest.raises(ValueError, match="2 seeds for 1 conditions"):
        sample_images(model, cond, [0, 1], progress=False)


def test_condition_specs():
    src = source()
    y, mask = src.targets()
    # prevalence: whole rows (labels + demographics), so co-occurrence is preserved
    prev = prevalence_conditions(src, 200, label_names=LABELS, seed=0)
    rows = prev["source_row"].to_numpy()
    np.testing.assert_array_equal(prev["age"].to_numpy(), src.meta["age"].to_numpy()[rows])
    assert ((prev["Edema"] == 1) <= (prev["Pleural Effusion"] == 1)).all()
    assert prev[LABELS].isna().any().any()  # a label the policy masks stays unknown (NaN): the null state
    # balanced: image k positive for LABELS[k % 3]
    bal = balanced_conditions(src, 30, label_names=LABELS, seed=0)
    for k, lab in enumerate(LABELS):
        assert (bal[lab].to_numpy()[k::3] == 1).all()
    # minority: every image positive for the label; "absent" zeroes the others
    mino = minority_conditions(src, "Cardiomegaly", 10, label_names=LABELS, seed=0, others="absent")
    assert (mino["Cardiomegaly"] == 1).all() and (mino[["Edema", "Pleural Effusion"]] == 0).all().all()
    assert set(mino["source_row"]) <= {0, 1} | set(np.flatnonzero(src.meta["Cardiomegaly"] == 1))
    # flipped twins: the same rows, only the label switched off
    on, off = flipped_conditions(src, "Cardiomegaly", 12, label_names=LABELS, seed=3)
    pd.testing.assert_frame_equal(on, minority_conditions(src, "Cardiomegaly", 12, label_names=LABELS, seed=3))
    assert (on["Cardiomegaly"] == 1).all() and (off["Cardiomegaly"] == 0).all()
    pd.testing.assert_frame_equal(on.drop(columns="Cardiomegaly"), off.drop(columns="Cardiomegaly"))
    # same seed, same table; an impossible request names the label
    pd.testing.assert_frame_equal(prevalence_conditions(src, 200, label_names=LABELS, seed=0), prev)
    src.meta["Edema"] = 0.0
    with pytest.raises(ValueError, match="'Edema' has no positive"):
        balanced_conditions(src, 6, label_names=LABELS, seed=0)
    with pytest.raises(ValueError, match="Did you mean 'Edema'"):
        prevalence_conditions(src, 5, label_names=["Edemma"], seed=0)


def test_synthetic_set_roundtrip(model, tmp_path):
    gen_dir = save_generator(model, tmp_path / "gen")
    conds = explicit_conditions([[1, 0, 0], [0, 1, np.nan], [0, 0, 1]], label_names=LABELS, sex=["F", "M", None], age=[40, 60, np.nan])
    out = write_synthetic_set(gen_dir, conds, tmp_path / "syn", seed=3, sampler="ddpm", steps=5, guidance=1.0, batch_size=2, progress=False)
    man = pd.read_csv(out / "manifest.csv", dtype={"seed": str})
    assert list(man.columns[:4]) == ["file", "sha256", "index", "seed"]
    assert {"generator_id", "sampler", "steps", "guidance", "sex", "age", *LABELS} <= set(man.columns)
    assert (man["generator_id"] == generator_id(model)).all() and (man["sampler"] == "ddpm").all()
    assert [int(s) for s in man["seed"]] == image_seeds(3, 3)
    assert all(sha256_file(out / f) == h for f, h in zip(man["file"], man["sha256"]))
    info = json.loads((out / "synthetic_set.json").read_text())
    assert info["generator_kind"] == "ddpm" and info["generator_path"] == str(gen_dir) and info["n"] == 3
    # any image regenerates alone, bit for bit
    ds = load_synthetic_set(out)
    for i in (2, 0):
        np.testing.assert_array_equal(regenerate_image(out, i), ds.images[i])
    # the loader: labels and demographics from the conditions; unknown -> masked
    assert isinstance(ds, ArrayDataset) and len(ds) == 3 and ds.label_names == tuple(LABELS)
    s1 = ds[1]
    assert s1["labels"].tolist() == [0.0, 1.0, 0.0] and s1["label_mask"].tolist() == [True, True, False]
    assert s1["sex"] == 1 and s1["age"] == 60.0 and ds[2]["sex"] == -1 and np.isnan(ds[2]["age"])
    assert ds.meta["patient_id"].nunique() == 3
    # a tampered file is caught
    (out / man["file"][0]).write_bytes(b"not a png")
    with pytest.raises(ValueError, match="sha256"):
        load_synthetic_set(out)
    with pytest.raises(ValueError, match="not labels of this generator"):
        write_synthetic_set(model, conds.assign(Fracture=0.0), tmp_path / "bad", seed=0, progress=False)
