"""A notebook's config and parameters, as ``cxr run`` checks and resolves them before executing it.

A notebook names its experiment's frozen config in its metadata::

    nb.metadata["cxrlib"] = {"config": "cxrlib.experiments.<module>:Config", "title": "..."}

Its ``parameters`` cell holds ``profile``, the few parameters that are that chapter's (each a literal,
``None`` = the profile's value) and ``overrides = {}`` (a mapping for any other config field); the
next cell builds the config with ``Config.from_notebook(globals())``. :func:`read_notebook` checks
that every name of the cell is a config field (or ``overrides``) and that its values are literals.

:func:`resolve_config` checks the user's ``-p NAME VALUE`` / ``-f params.yaml`` parameters (any
config field; an unknown or mistyped name is an error listing the valid ones, a value of the wrong
type is an error) and resolves the config exactly as the notebook will: defaults <- profile <- the
cell's non-``None`` values <- the user's parameters, which papermill injects as variables after the
parameters cell. Its hash names the run folder; ``start_run`` checks the notebook built the same.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from .config import OVERRIDES, PROFILE_NAMES, ConfigError, ExperimentConfig, unknown_parameter_message


@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    path: Path
    config_cls: type
    title: str
    parameter_names: tuple[str, ...]  # the names the parameters cell assigns
    # The cell's literal values (``overrides`` included): the notebook's namespace before injection.
    cell: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def config_ref(self) -> str:
        return f"{self.config_cls.__module__}:{self.config_cls.__qualname__}"


def load_config_class(ref: str, where: str = "") -> type:
    """Import ``"package.module:Class"``; it must subclass :class:`ExperimentConfig`."""
    module_name, sep, cls_name = ref.partition(":")
    if not sep or not module_name or not cls_name:
        raise ValueError(f"{where}config reference {ref!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"{where}config module {module_name!r} cannot be imported ({e})") from e
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ValueError(f"{where}config class {cls_name!r} not found in module {module_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, ExperimentConfig)):
        raise ValueError(f"{where}{ref} is not a subclass of cxrlib.config.ExperimentConfig")
    return cls


def _parameter_cell(source: str, path: Path) -> dict[str, Any]:
    """``{name: literal value}`` of the parameters cell's assignments."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"{path}: the parameters cell is not valid Python ({e})") from e
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            raise ValueError(f"{path}: the parameters cell may hold only assignments NAME = literal, "
                             f"found: {ast.get_source_segment(source, node)!r}")
        for t in targets:
            if not isinstance(t, ast.Name):
                raise ValueError(f"{path}: the parameters cell assigns {ast.get_source_segment(source, t)!r}, not a name")
            try:
                values[t.id] = ast.literal_eval(value) if value is not None else None
            except ValueError as e:
                raise ValueError(f"{path}: parameter {t.id!r} of the parameters cell is not a literal "
                                 f"({ast.get_source_segment(source, value)!r})") from e
    return values


def _check_overrides(cell: Mapping[str, Any], cls: type, path: Path) -> None:
    extra = cell.get(OVERRIDES)
    if extra is None:
        return
    if not isinstance(extra, Mapping):
        raise ValueError(f"{path}: {OVERRIDES} in the parameters cell must be a mapping, got {extra!r}")
    for name in extra:
        if name not in cls.field_names():
            raise ValueError(f"{path}: {OVERRIDES} in the parameters cell: "
                             + unknown_parameter_message(str(name), cls.field_names()))


def read_notebook(path: str | os.PathLike) -> NotebookSpec:
    """Read a notebook's config reference and parameters cell, and check they agree: every name the
    cell assigns is a config field or ``overrides`` (it need not list every field)."""
    import nbformat

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such notebook: {path}")
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("cxrlib")
    if not isinstance(meta, Mapping) or "config" not in meta:
        raise ValueError(
            f"{path}: notebook metadata has no cxrlib.config; add "
            '{"cxrlib": {"config": "cxrlib.experiments.<module>:Config", "title": "..."}} to the notebook metadata'
        )
    cls = load_config_class(str(meta["config"]), where=f"{path}: ")
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one code cell tagged 'parameters', found {len(cells)}")
    cell = _parameter_cell(cells[0].source, path)
    valid = cls.field_names()
    unknown = [n for n in cell if n not in valid and n != OVERRIDES]
    if unknown:
        raise ValueError(
            f"{path}: the parameters cell does not match {meta['config']}: not config fields: {unknown}. "
            f"Valid names: {OVERRIDES}, {', '.join(sorted(valid))}"
        )
    _check_overrides(cell, cls, path)
    title = str(meta.get("title") or path.stem)
    return NotebookSpec(path=path, config_cls=cls, title=title, parameter_names=tuple(cell), cell=cell)


# --- parameters ---------------------------------------------------------------------------------------
def _yaml_loader():
    """PyYAML's SafeLoader, also reading ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def parse_value(text: str) -> Any:
    """A ``-p`` value as a YAML literal: ``1`` -> 1, ``0.5`` -> 0.5, ``true`` -> True, ``[1,2]``,
    ``null`` -> None, anything else -> the string."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError:
        return text


def format_value(value: Any) -> str:
    """The ``-p`` text that :func:`parse_value` reads back as ``value`` (tuples as lists)."""
    import yaml

    plain = list(value) if isinstance(value, tuple) else value
    if isinstance(plain, str) and parse_value(plain) == plain:
        return plain
    text = yaml.safe_dump(_as_lists(plain), default_flow_style=True, width=2**20).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    if parse_value(text) != _as_lists(plain):
        raise ValueError(f"cannot write {value!r} as a -p value")
    return text


def _as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def rerun_command(notebook: str, parameters: Mapping[str, Any], program: str = "cxr") -> str:
    """``cxr run NOTEBOOK --profile P -p NAME VALUE ...``: a shell command that resolves the same
    config from ``parameters`` (the injected parameters of a run, ``profile`` included)."""
    params = dict(parameters)
    args = [program, "run", notebook]
    profile = params.pop("profile", None)
    if profile is not None:
        args += ["--profile", str(profile)]
    for name in sorted(params):
        args += ["-p", name, format_value(params[name])]
    return shlex.join(args)


def collect_params(pairs: list[tuple[str, str]] | None = None, files: list[str] | None = None) -> dict[str, Any]:
    """Parameters from ``-f`` YAML files (in order) then ``-p NAME VALUE`` pairs (later wins)."""
    import yaml

    params: dict[str, Any] = {}
    for f in files or []:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"no such parameter file: {p}")
        data = yaml.load(p.read_text(), Loader=_yaml_loader())
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ValueError(f"parameter file {p}: expected a mapping of NAME: VALUE, got {type(data).__name__}")
        params.update({str(k): v for k, v in data.items()})
    for name, value in pairs or []:
        params[name] = parse_value(value)
    return params


def _wants_text(tp: Any) -> bool:
    """True for ``str``, ``str | None`` and ``Literal["a", "b"]`` fields."""
    import typing

    if tp is str:
        return True
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return all(isinstance(a, str) for a in args)
    return bool(args) and all(_wants_text(a) for a in args)


def _flatten_overrides(params: dict[str, Any], valid: list[str]) -> dict[str, Any]:
    """``-p overrides '{n_seeds: 5}'`` (or ``overrides:`` in a ``-f`` file) = ``-p n_seeds 5``."""
    extra = params.pop(OVERRIDES, None) or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"{OVERRIDES!r} must be a mapping of config field -> value, got {extra!r}")
    for name, value in extra.items():
        if name not in valid:
            raise ConfigError(f"in {OVERRIDES}: " + unknown_parameter_message(str(name), valid))
        if params.get(name) is not None and value is not None:
            raise ConfigError(f"parameter {name!r} is given twice: -p {name} and in {OVERRIDES}")
        if value is not None or name not in params:
            params[name] = value
    return params


def resolve_config(spec: NotebookSpec, params: Mapping[str, Any], profile: str | None = None,
                   raw: Mapping[str, str] | None = None):
    """Validate ``params`` against the notebook's config and resolve it.

    ``raw``: the command-line text of ``-p`` values; a text field keeps the text as typed (``-p
    label yes`` is the string "yes", not YAML's True; ``-p run_id 007`` stays "007").
    Returns ``(cfg, injected)``: the resolved config and the parameters to inject with papermill
    (the user's own, plus ``profile``; the notebook resolves the rest exactly as here).
    """
    import typing

    params = _flatten_overrides(dict(params), spec.config_cls.field_names())
    spec.config_cls.check_names(params)  # unknown / mistyped name: ConfigError listing the valid ones
    hints = typing.get_type_hints(spec.config_cls)
    for name, text in (raw or {}).items():
        if name in params and not isinstance(params[name], str) and params[name] is not None and _wants_text(hints[name]):
            params[name] = text
    if profile is not None and params.get("profile") not in (None, profile):
        raise ConfigError(f"profile given twice: --profile {profile} and -p profile {params['profile']}")
    profile = profile or params.get("profile") or spec.cell.get("profile") or spec.config_cls.profile
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"profile {profile!r} is not one of {list(PROFILE_NAMES)}")
    params["profile"] = profile
    # Exactly as the notebook will: its parameters cell, then papermill's variables after it.
    cfg = spec.config_cls.from_notebook({**spec.cell, **params})
    # papermill writes Python literals; a tuple is written as a list and coerced back by the config.
    injected = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    return cfg, injected
