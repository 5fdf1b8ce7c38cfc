import os

os.environ.setdefault("CXR_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An isolated cxrlib cache for one test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("CXR_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def paper_world(tmp_path_factory):
    """A tiny CheXpert-v1.0-small folder, a tiny NIH ChestX-ray14 folder and their manifests (the first
    patients of the committed ones): tests/paper_fixture.py. Point CXR_MANIFEST_DIR at ``["manifests"]``."""
    from paper_fixture import build_paper_world

    return build_paper_world(tmp_path_factory.mktemp("paper_world"), chexpert_need={"train": 200, "val": 60, "test": 60},
                             nih_need={"test": 60})
