"""Frozen experiment configs: the one home of every experiment's parameters.

Each experiment defines one frozen dataclass that subclasses :class:`ExperimentConfig`. A config is
resolved by ``Config.from_params(...)``, which

1. starts from the field defaults,
2. applies the profile's presets (``PROFILES[profile]``: ``smoke`` / ``cpu`` / ``cpu-full`` / ``paper``;
   ``cpu-full`` extends ``cpu``: the ``cpu`` presets, then its own, :data:`PROFILE_BASES`),
3. applies the explicit, non-``None`` parameters,

and rejects an unknown or mistyped name (naming it, suggesting the closest valid one and listing all
of them) and a value of the wrong type. The config's canonical JSON is written into the run folder
and its hash names the folder and keys the cache.

A notebook builds its config with ``Config.from_notebook(globals())``: its ``parameters`` cell holds
``profile``, the few parameters a reader of that chapter would change (``None`` = the profile's
value) and ``overrides = {}``, a mapping for any other field. Every config field name defined in the
notebook's namespace is a parameter, so a value injected by papermill (``-p NAME VALUE``, ``cxr run``)
counts for any field, even one the parameters cell does not list.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from typing import Any, ClassVar, Mapping

from .errors import ConfigError

__all__ = ["ConfigError", "ExperimentConfig", "PROFILE_NAMES", "OVERRIDES", "stable_hash", "unknown_parameter_message"]

PROFILE_NAMES = ("smoke", "cpu", "cpu-full", "paper")
# A profile that extends another: the base's presets apply first, then its own. ``cpu`` holds the primary
# contrasts of every chapter within a laptop's budget; ``cpu-full`` the complete grids on the same CPU recipes.
PROFILE_BASES = {"cpu-full": "cpu"}
# The name, in a notebook's parameters cell, of the mapping that sets any other config field.
OVERRIDES = "overrides"


def profile_chain(profile: str) -> list[str]:
    """The profiles whose presets make ``profile``, base first (``cpu-full`` -> ``["cpu", "cpu-full"]``)."""
    chain = [profile]
    while chain[0] in PROFILE_BASES:
        chain.insert(0, PROFILE_BASES[chain[0]])
    return chain


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(name: str, value: Any, tp: Any) -> Any:
    """Return ``value`` coerced to ``tp`` where lossless (int -> float, list -> tuple), else raise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(name, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"parameter {name!r}: {value!r} is not of type {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"parameter {name!r}: {value!r} is not one of {list(args)}")
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(
                f"parameter {name!r}: expected a list ({_type_name(tp)}), got {type(value).__name__} {value!r}"
            )
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"parameter {name!r}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_type(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        return tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"parameter {name!r}: expected True/False, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"parameter {name!r}: expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"parameter {name!r}: expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"parameter {name!r}: expected a string, got {type(value).__name__} {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"parameter {name!r}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def unknown_parameter_message(bad: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(bad, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown parameter {bad!r}.{hint} Valid parameters: {', '.join(sorted(valid))}"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Base of every experiment config. Subclasses add fields (each with a comment) and PROFILES."""

    profile: str = "cpu"  # smoke (tests/CI, minutes) | cpu (laptop, default) | cpu-full (complete grids) | paper (real data, GPU)
    seed: int = 0  # master seed: every random stream of the run derives from it
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "mps"; a requested GPU that is absent is an error

    # Per-profile presets; a subclass overrides with {"smoke": {...}, "cpu": {...}, "paper": {...}}.
    PROFILES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # The notebook/experiment name used for run folders and the cache.
    NAME: ClassVar[str] = "experiment"

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_names(cls, params: Mapping[str, Any]) -> None:
        valid = cls.field_names()
        for name in params:
            if name not in valid:
                raise ConfigError(unknown_parameter_message(name, valid))

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, /, **kwargs: Any):
        """Resolve a config: field defaults <- profile presets <- explicit non-None parameters."""
        merged = dict(params or {})
        merged.update(kwargs)
        cls.check_names(merged)
        profile = merged.get("profile") or cls.profile
        if profile not in PROFILE_NAMES:
            raise ConfigError(f"parameter 'profile': {profile!r} is not one of {list(PROFILE_NAMES)}")
        values: dict[str, Any] = {}
        preset = {}
        for p in profile_chain(profile):
            preset.update(cls.PROFILES.get(p, {}))
        cls.check_names(preset)  # a typo in a preset is a bug worth failing loudly on
        values.update(preset)
        values.update({k: v for k, v in merged.items() if v is not None})
        values["profile"] = profile
        return cls._build(values)

    @classmethod
    def from_notebook(cls, namespace: Mapping[str, Any]):
        """Resolve the config of a notebook from its namespace (pass ``globals()``).

        The parameters are every config field name defined in ``namespace`` (the parameters cell's
        names, and whatever papermill injected after it) plus the ``overrides`` mapping (any other
        field). A field given both ways (non-``None`` in each) or an unknown name in ``overrides`` is
        a :class:`ConfigError` naming it and listing the valid ones. Then as :meth:`from_params`.
        """
        valid = cls.field_names()
        given = {name: namespace[name] for name in valid if name in namespace}
        extra = namespace.get(OVERRIDES)
        if extra is None:
            extra = {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"{OVERRIDES!r} must be a mapping of config field -> value, e.g. "
                              f"{{'n_seeds': 5}}; got {type(extra).__name__} {extra!r}")
        for name in extra:
            if name not in valid:
                raise ConfigError(f"in {OVERRIDES}: " + unknown_parameter_message(str(name), valid))
        both = sorted(n for n, v in extra.items() if v is not None and given.get(n) is not None)
        if both:
            raise ConfigError(
                f"parameter {both[0]!r} is given twice: as a variable ({both[0]} = {given[both[0]]!r}) and in "
                f"{OVERRIDES} ({extra[both[0]]!r}); set it one way only"
            )
        given.update({n: v for n, v in extra.items() if v is not None})
        return cls.from_params(given)

    @classmethod
    def _build(cls, values: Mapping[str, Any]):
        hints = typing.get_type_hints(cls)
        checked = {}
        for name, value in values.items():
            checked[name] = _check_type(name, value, hints[name])
        cfg = cls(**checked)
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, text: str):
        return cls._build(json.loads(text))

    def validate(self) -> None:
        """Range checks; subclasses extend (call super) and raise ConfigError naming the field."""
        if self.seed < 0:
            raise ConfigError(f"parameter 'seed': must be >= 0, got {self.seed}")

    def replace(self, **changes: Any):
        self.check_names(changes)
        values = dataclasses.asdict(self)
        values.update(changes)
        return type(self)._build(values)

    # --- identity ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, tuples as lists. Equal configs, equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self, exclude: tuple[str, ...] = ("device",)) -> str:
        """Short sha256 of the canonical JSON; ``device`` does not change results, so it is excluded."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        text = json.dumps({"name": self.NAME, **d}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def table(self):
        """The resolved parameters as a two-column DataFrame (shown at the top of every notebook)."""
        import pandas as pd

        return pd.DataFrame({"parameter": list(self.to_dict()), "value": [repr(v) for v in self.to_dict().values()]})


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (dicts, lists, numbers, strings), first ``n`` hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]
