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
