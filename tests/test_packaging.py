"""One lock file: the Makefile and environment.yml install the same requirements.lock, and every
dependency declared in pyproject.toml is pinned there (so the two cannot drift apart)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        assert m, f"requirements.lock: not an exact pin: {line!r}"
        pins[re.sub(r"[-_.]+", "-", m.group(1).split("[")[0]).lower()] = m.group(2)
    return pins


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0]).lower()


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.lock" in pip, "environment.yml must install requirements.lock"
    assert [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")] == ["python=3.11"]
    other = [p for p in pip if p not in ("-r requirements.lock", "-e .")]
    assert not other, f"environment.yml pins packages outside the lock: {other}"


def test_makefile_installs_the_lock():
    mk = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -r requirements.lock" in mk
    assert "uv " not in mk and "poetry" not in mk


def test_every_declared_dependency_is_pinned():
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [r for rs in project.get("optional-dependencies", {}).values() for r in rs]
    missing = sorted({_name(r) for r in declared} - set(pins))
    assert not missing, f"declared in pyproject.toml but not pinned in requirements.lock: {missing}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["jupyter-book"].startswith("1."), "Jupyter Book 2 cannot build offline"
