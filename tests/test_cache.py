"""The content-addressed cache: keys, hits, verified reads, atomic and concurrent writes, space checks."""

import dataclasses
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from cxrlib import cache
from cxrlib.cli import main as cxr_main

# fork: the children only use cxrlib.cache (no torch threads); fork keeps the test fast.
_MP = mp.get_context("fork")


@dataclasses.dataclass(frozen=True)
class _Cfg:
    image_size: int = 32
    gen_lr: float = 1e-3
    clf_lr: float = 1e-4
    device: str = "cpu"


def _write(payload: bytes):
    def produce(d: Path):
        (d / "weights.bin").write_bytes(payload)
        (d / "sub").mkdir()
        (d / "sub" / "meta.json").write_text('{"ok": true}')
        return {"n": len(payload)}

    return produce


def test_key_depends_only_on_the_selected_fields_and_inputs():
    gen = ("image_size", "gen_lr")
    k1 = cache.key("generator", _Cfg(), fields=gen)
    # a classifier parameter or the device does not change the generator's key ...
    assert cache.key("generator", _Cfg(clf_lr=0.5, device="cuda"), fields=gen) == k1
    # ... a generator parameter does, and so does every key downstream of it through `inputs`.
    k2 = cache.key("generator", _Cfg(gen_lr=2e-3), fields=gen)
    assert k2 != k1
    syn1 = cache.key("synthetic", {"n": 100}, inputs=[k1])
    assert cache.key("synthetic", {"n": 100}, inputs=[k1]) == syn1
    assert cache.key("synthetic", {"n": 100}, inputs=[k2]) != syn1
    assert str(k1).startswith("generator/") and len(k1.digest) == 32
    # a JSON-able input (e.g. the training image ids) is hashed by value
    assert cache.key("classifier", {}, inputs=[["a", "b"]]) == cache.key("classifier", {}, inputs=[("a", "b")])
    assert cache.key("classifier", {}, inputs=[["a", "b"]]) != cache.key("classifier", {}, inputs=[["a", "c"]])
    with pytest.raises(TypeError, match="JSON-able"):
        cache.key("classifier", {}, inputs=[object()])
    with pytest.raises(KeyError, match="nope"):
        cache.key("generator", _Cfg(), fields=["nope"])
    with pytest.raises(ValueError, match="Bad Kind"):
        cache.key("Bad Kind", {})


def test_second_call_is_a_hit_and_does_not_produce(cache_dir):
    k = cache.key("generator", _Cfg(), fields=("image_size",))
    calls = []

    def produce(d):
        calls.append(1)
        _write(b"abc")(d)

    p1 = cache.get_or_create(k, produce)
    p2 = cache.get_or_create(k, produce)
    assert p1 == p2 == cache_dir / "generator" / k.digest
    assert calls == [1]
    assert (p1 / "weights.bin").read_bytes() == b"abc"
    manifest = json.loads((p1 / cache.ENTRY_FILE).read_text())
    assert set(manifest["files"]) == {"weights.bin", "sub/meta.json"}
    assert [e["event"] for e in cache.events() if e["key"] == k.id] == ["miss", "hit"]


@pytest.mark.parametrize("tamper", ["change", "delete", "add"])
def test_tampered_entry_is_an_error_naming_it_never_recomputed(cache_dir, tamper):
    k = cache.key("synthetic", {"n": 3, "tamper": tamper})
    path = cache.get_or_create(k, _write(b"x" * 100))
    if tamper == "change":
        (path / "weights.bin").write_bytes(b"y" * 100)
    elif tamper == "delete":
        (path / "sub" / "meta.json").unlink()
    else:
        (path / "evil.py").write_text("import os")
    produced = []
    with pytest.raises(cache.CacheIntegrityError) as err:
        cache.get_or_create(k, lambda d: produced.append(1))
    assert k.id in str(err.value)
    assert {"change": "weights.bin", "delete": "meta.json", "add": "evil.py"}[tamper] in str(err.value)
    assert produced == []
    # `cxr cache verify` reports it (exit 1) and can delete it; then the entry is produced anew.
    assert cxr_main(["cache", "verify"]) == 1
    assert cxr_main(["cache", "verify", "--delete-corrupt"]) == 0
    assert (cache.get_or_create(k, _write(b"z")) / "weights.bin").read_bytes() == b"z"


def test_failed_producer_leaves_nothing(cache_dir):
    k = cache.key("classifier", {"x": 1})

    def boom(d):
        (d / "partial.bin").write_bytes(b"half")
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        cache.get_or_create(k, boom)
    assert not cache.default_cache().exists(k)
    assert list((cache_dir / "tmp").iterdir()) == []
    assert (cache.get_or_create(k, _write(b"ok")) / "weights.bin").read_bytes() == b"ok"


def _slow_producer_proc(root, key_id, log, payload, delay):
    c = cache.Cache(root)
    k = cache._parse_key(key_id)

    def produce(d):
        with open(log, "a") as f:  # O_APPEND: one line per producer run
            f.write(f"{os.getpid()}\n")
        with open(d / "weights.bin", "wb") as f:
            for i in range(10):  # a slow write widens the window in which writers could collide
                f.write(payload[i * len(payload) // 10:(i + 1) * len(payload) // 10])
                f.flush()
                time.sleep(delay)

    path = c.get_or_create(k, produce)
    assert (path / "weights.bin").read_bytes() == payload


def test_concurrent_writers_produce_once_and_never_corrupt(tmp_path):
    root = tmp_path / "cache"
    log = tmp_path / "producers.log"
    k = cache.key("generator", {"concurrent": True})
    payload = os.urandom(200_000)
    procs = [_MP.Process(target=_slow_producer_proc, args=(root, k.id, log, payload, 0.02)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(log.read_text().split()) == 1  # exactly one process produced; three waited and reused it
    c = cache.Cache(root)
    c.verify(k)
    assert (c.path(k) / "weights.bin").read_bytes() == payload
    assert list((root / "tmp").iterdir()) == []


def test_killed_writer_is_never_served_and_gc_cleans_up(tmp_path):
    root = tmp_path / "cache"
    log = tmp_path / "producers.log"
    k = cache.key("generator", {"killed": True})
    p = _MP.Process(target=_slow_producer_proc, args=(root, k.id, log, b"a" * 1000, 5.0))
    p.start()
    deadline = time.time() + 30
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)  # mid-write: a partial file sits in tmp/
    p.join()
    c = cache.Cache(root)
    assert not c.exists(k)
    assert len(list((root / "tmp").iterdir())) == 1
    removed = c.gc()
    assert len(removed) == 1 and removed[0].startswith("tmp/generator-")
    assert list((root / "tmp").iterdir()) == []
    path = c.get_or_create(k, _write(b"fresh"))
    assert (path / "weights.bin").read_bytes() == b"fresh"


def test_unwritable_cache_dir_is_an_error_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CXR_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(cache.CacheError, match="a-file"):
        cache.get_or_create(cache.key("generator", {"a": 1}), _write(b""))


def test_too_little_space_is_an_error_before_producing(cache_dir):
    produced = []
    with pytest.raises(cache.CacheError, match=str(cache_dir)) as err:
        cache.get_or_create(cache.key("generator", {"big": 1}), lambda d: produced.append(1), expected_bytes=1e18)
    assert "free" in str(err.value) and produced == []


def test_cli_ls_and_gc(cache_dir, capsys):
    k_old = cache.key("generator", {"old": 1})
    k_new = cache.key("synthetic", {"new": 1}, inputs=[k_old])
    p_old = cache.get_or_create(k_old, _write(b"o"))
    cache.get_or_create(k_new, _write(b"n"))
    os.utime(p_old, (time.time() - 40 * 86400,) * 2)
    assert cxr_main(["cache", "ls"]) == 0
    out = capsys.readouterr().out
    assert k_old.id in out and k_new.id in out and "2 entries" in out
    assert cxr_main(["cache", "gc", "--older-than", "30", "--dry-run"]) == 0
    assert cache.default_cache().exists(k_old)
    assert cxr_main(["cache", "gc", "--older-than", "30"]) == 0
    assert not cache.default_cache().exists(k_old) and cache.default_cache().exists(k_new)
