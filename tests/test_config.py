import dataclasses
from typing import ClassVar

import pytest

from cxrlib.config import ConfigError, ExperimentConfig


@dataclasses.dataclass(frozen=True)
class Demo(ExperimentConfig):
    NAME: ClassVar[str] = "demo"
    image_size: int = 64  # pixels
    lr: float = 1e-3
    labels: tuple[str, ...] = ("Cardiomegaly",)
    arch: str = "small_cnn"
    fraction: float | None = None
    PROFILES: ClassVar = {"smoke": {"image_size": 32}, "cpu": {}, "paper": {"image_size": 256}}


def test_profile_then_explicit_override():
    assert Demo.from_params(profile="smoke").image_size == 32
    assert Demo.from_params(profile="smoke", image_size=48).image_size == 48
    assert Demo.from_params(profile="paper", image_size=None).image_size == 256  # None = profile value


def test_unknown_parameter_names_it_and_suggests():
    with pytest.raises(ConfigError) as e:
        Demo.from_params(image_sise=32)
    msg = str(e.value)
    assert "'image_sise'" in msg and "Did you mean 'image_size'" in msg and "lr" in msg


@pytest.mark.parametrize("name,value", [("image_size", "64"), ("image_size", 6.5), ("lr", "fast"), ("labels", "Cardiomegaly"), ("seed", True)])
def test_wrong_type_is_an_error(name, value):
    with pytest.raises(ConfigError, match=name):
        Demo.from_params(**{name: value})


def test_coercions_and_canonical_json_hash():
    a = Demo.from_params(lr=1, labels=["Cardiomegaly", "Edema"])
    assert a.lr == 1.0 and a.labels == ("Cardiomegaly", "Edema")
    b = Demo.from_json(a.to_json())
    assert a == b and a.hash() == b.hash()
    assert a.replace(lr=0.5).hash() != a.hash()
    assert a.replace(device="cuda:0").hash() == a.hash()  # device does not change results


def test_bad_profile_and_seed():
    with pytest.raises(ConfigError, match="profile"):
        Demo.from_params(profile="laptop")
    with pytest.raises(ConfigError, match="seed"):
        Demo.from_params(seed=-1)


def test_cpu_full_extends_cpu():
    """``cpu-full`` = the ``cpu`` presets, then its own: a chapter that defines nothing for it runs as at
    ``cpu``; one that does changes only those fields."""
    from cxrlib.config import PROFILE_NAMES, profile_chain
    from cxrlib.experiments import common, data, supplementation as S

    assert "cpu-full" in PROFILE_NAMES and profile_chain("cpu-full") == ["cpu", "cpu-full"] and profile_chain("cpu") == ["cpu"]
    # cpu-full changes only what it names: chapter 1's learning curve
    d_cpu, d_full = data.Config.from_params(profile="cpu").to_dict(), data.Config.from_params(profile="cpu-full").to_dict()
    assert {k for k in d_full if d_full[k] != d_cpu[k]} == {"profile", "difficulty_epochs", "difficulty_n_max", "n_test", "n_boot"}
    # cpu is the hour book; cpu-full the longer recipes and the complete grids (the paper's 1000 % point, both sources)
    cpu, full = S.Config.from_params(profile="cpu"), S.Config.from_params(profile="cpu-full")
    assert (cpu.clf_steps, full.clf_steps) == (150, 400) and full.n_seeds == cpu.n_seeds >= 5
    assert (cpu.gen_batch_size, full.gen_batch_size) == (32, 64)
    assert max(cpu.supplement_percents) == 100 and max(full.supplement_percents) == 1000 and cpu.n_generators == full.n_generators == 2
    assert full.pool_pretrained and full.mixing_site and not cpu.pool_pretrained and not cpu.mixing_site
    assert len(full.supplement_percents) > len(cpu.supplement_percents) and full.regime_fractions and not cpu.regime_fractions
    assert full.hash() != cpu.hash()
    with pytest.raises(ValueError, match="unknown profile"):
        common.merge_profiles({"cpu_full": {}})
