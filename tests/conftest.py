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
