"""Issue 7, safe files: weights are safetensors, resume states load with weights_only, and a
pickle that would run code is refused without running it."""

import os
import pickle

import pytest
import torch

from cxrlib.io import UnsafeCheckpointError, _umask, load_tensors, safe_torch_load, save_tensors


class _Exploit:
    """Unpickling this runs ``open(marker, 'w')``: the classic malicious-checkpoint payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def exploit(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(2)}, "payload": _Exploit(marker)}, f)
    torch.save({"payload": _Exploit(marker)}, tmp_path / "torch_saved.pt")
    return path, tmp_path / "torch_saved.pt", marker


def test_safe_torch_load_refuses_code_without_running_it(exploit):
    raw, saved, marker = exploit
    for path in (raw, saved):
        with pytest.raises(UnsafeCheckpointError, match="arbitrary code"):
            safe_torch_load(path)
    assert not marker.exists(), "the payload ran"


def test_weights_must_be_safetensors(exploit, tmp_path):
    raw, saved, marker = exploit
    for path in (raw, saved):
        with pytest.raises(UnsafeCheckpointError, match="not a safetensors file.*convert it once"):
            load_tensors(path)
    assert not marker.exists()
    ok = tmp_path / "w.safetensors"
    save_tensors(ok, {"w": torch.arange(3.0)})
    assert torch.equal(load_tensors(ok)["w"], torch.arange(3.0))
    assert os.stat(ok).st_mode & 0o777 == 0o666 & ~_umask()  # usual permissions, not mkstemp's 0600


def test_loaders_of_models_refuse_pickles(exploit, tmp_path):
    """A generator or classifier folder whose weights file is a pickle is refused, not executed."""
    from cxrlib.classify import load_classifier, save_classifier
    from cxrlib.generators.ddpm import load_generator, save_generator
    from cxrlib.models.classifiers import build_classifier
    from cxrlib.models.unet import ConditionalUNet, generator_config

    raw, _, marker = exploit
    gen = ConditionalUNet(generator_config(image_size=16, labels=("Cardiomegaly",), channels=(8, 16), norm_groups=4,
                                           layers_per_block=1, attention=(False, False), cond_hidden=8))
    gdir = save_generator(gen, tmp_path / "gen")
    (gdir / "weights.safetensors").write_bytes(raw.read_bytes())
    with pytest.raises(UnsafeCheckpointError):
        load_generator(gdir)
    clf = build_classifier("small_cnn", 1, image_size=16)
    cdir = save_classifier(clf, tmp_path / "clf")
    weights = next(p for p in cdir.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(raw.read_bytes())
    with pytest.raises((UnsafeCheckpointError, ValueError), match=weights.name):  # refused by its checksum first
        load_classifier(cdir)
    assert not marker.exists()
