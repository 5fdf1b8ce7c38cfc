"""Content-addressed cache of expensive artifacts: trained generators, synthetic sets, trained
classifiers, feature statistics.

An entry is a folder, keyed by what produced it::

    key = cache.key("generator", cfg, fields=("image_size", "channels", "steps", "seed"))
    syn = cache.key("synthetic", {"n": 1000, "sampler": "ddim", "steps": 20}, inputs=[key])
    gen_dir = cache.get_or_create(key, lambda d: train_and_save(d, ...), expected_bytes=50e6)

``key(kind, config, inputs)`` is ``kind/<sha256 of the canonical JSON of (kind, config, input
keys)>``: a changed classifier parameter leaves the generator's key alone (it is not among the
generator's fields), so the generator and the synthetic set are reused; a changed generator field
changes the generator key and, through ``inputs``, every key downstream of it.

Layout under the cache root (env ``CXR_CACHE_DIR``, default ``<project>/.cache/cxrlib``)::

    <kind>/<digest>/                  the entry: the producer's files + .cxr-entry.json
    locks/<kind>-<digest>.lock        one lock per key (filelock: two writers never both produce)
    tmp/<kind>-<digest>-<pid>-<rand>/ where a producer writes before the atomic rename

Guarantees
----------
* **Atomic.** A producer writes into ``tmp/``; the finished folder, with its manifest
  (``.cxr-entry.json``: sha256 of every file and of the whole entry), is renamed onto
  ``<kind>/<digest>`` in one ``os.rename``. A killed producer leaves only a ``tmp/`` folder, which
  is never served and is removed by the next producer of that key or by ``cxr cache gc``.
* **One writer.** Production happens under a per-key file lock; a second process asking for the
  same key waits, then finds the entry and uses it (test: ``tests/test_cache.py``).
* **Verified reads.** ``get``/``get_or_create`` recompute the sha256 of every file and compare with
  the manifest; a mismatch raises :class:`CacheIntegrityError` naming the entry and the file. It is
  never silently recomputed over: delete the entry (``cxr cache verify --delete-corrupt``) to do so.
* **Space first.** Before producing, free space at the cache root is checked against the caller's
  ``expected_bytes``; an unwritable root or too little space is an error naming the path, before
  any training starts.

The lock is a POSIX ``flock``: safe across processes on one machine and on most cluster file
systems that support it (Lustre/GPFS/NFSv4 with locking); on a file system without locks, give
each node its own ``CXR_CACHE_DIR``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

ENTRY_FILE = ".cxr-entry.json"
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_DIGEST_LEN = 32  # hex digits of sha256 kept in a key: 128 bits, collision-free in practice
# Free space kept in reserve beyond the expected size of an entry (logs, the manifest, other writers).
_SPACE_MARGIN = 64 * 2**20


class CacheError(RuntimeError):
    """The cache cannot be used as asked (unwritable root, no space, unknown entry)."""


class CacheIntegrityError(CacheError):
    """An entry's content no longer matches the sha256 recorded when it was written."""


# --- keys ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CacheKey:
    """``kind/digest`` plus the spec it was hashed from (kept for ``cxr cache ls``)."""

    kind: str
    digest: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    inputs: tuple[str, ...] = dataclasses.field(default=(), compare=False, hash=False)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.digest}"

    def __str__(self) -> str:
        return self.id


def _canonical(obj: Any) -> Any:
    """JSON-able canonical form: dataclasses -> dicts, tuples -> lists, Paths -> str."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cache key: cannot hash a value of type {type(obj).__name__}: {obj!r}")


def _input_id(item: Any) -> str:
    """An input of a key: another CacheKey, a file (hashed by content), a string id/digest, or any
    JSON-able value such as a list of image ids (hashed by its canonical JSON)."""
    from .io import sha256_file

    if isinstance(item, CacheKey):
        return item.id
    if isinstance(item, Path):
        if not item.is_file():
            raise FileNotFoundError(f"cache key input {item} is not a file")
        return f"file:{sha256_file(item)}"
    if isinstance(item, str):
        return item
    try:
        text = json.dumps(_canonical(item), sort_keys=True, separators=(",", ":"))
    except TypeError as e:
        raise TypeError(
            f"cache key input must be a CacheKey, a Path, a str or a JSON-able value, got {type(item).__name__} ({e})"
        ) from e
    return f"json:{hashlib.sha256(text.encode()).hexdigest()}"


def key(kind: str, config: Any = None, inputs: Iterable[Any] = (), fields: Iterable[str] | None = None) -> CacheKey:
    """The key of an artifact of ``kind`` produced by ``config`` from ``inputs``.

    ``config``: a dict or a (config) dataclass; ``fields`` keeps only those names (so a generator's
    key ignores the classifier's parameters). ``device`` is always dropped: it does not change what
    is produced. ``inputs``: upstream :class:`CacheKey` objects, data files (``Path``, hashed by
    content) or strings. ``digest = sha256(canonical JSON of {kind, config, inputs})``.
    """
    if not _KIND_RE.match(kind) or kind in ("tmp", "locks"):
        raise ValueError(f"cache kind {kind!r}: use lower-case letters, digits, '-' and '_' (not 'tmp' or 'locks')")
    cfg = _canonical(config) if config is not None else {}
    if not isinstance(cfg, dict):
        raise TypeError(f"cache key config must be a mapping or a dataclass, got {type(config).__name__}")
    if fields is not None:
        fields = list(fields)
        missing = [f for f in fields if f not in cfg]
        if missing:
            raise KeyError(f"cache key {kind!r}: fields {missing} are not in the config (has: {sorted(cfg)})")
        cfg = {f: cfg[f] for f in fields}
    cfg.pop("device", None)
    input_ids = tuple(_input_id(i) for i in inputs)
    text = json.dumps({"kind": kind, "config": cfg, "inputs": list(input_ids)}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_LEN]
    return CacheKey(kind, digest, cfg, input_ids)


def _parse_key(k: CacheKey | str) -> CacheKey:
    if isinstance(k, CacheKey):
        return k
    kind, sep, digest = str(k).partition("/")
    if not sep or not _KIND_RE.match(kind) or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"not a cache key: {k!r} (expected 'kind/hexdigest', as printed by `cxr cache ls`)")
    return CacheKey(kind, digest)


# --- the cache -------------------------------------------------------------------------------------
def default_root() -> Path:
    """``$CXR_CACHE_DIR`` or ``<project>/.cache/cxrlib`` (:func:`cxrlib.utils.cache_root`)."""
    from .utils import cache_root

    return Path(cache_root()).resolve()


def _tree_manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file of an entry except its own manifest file."""
    from .io import sha256_file

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ENTRY_FILE:
            out[p.relative_to(folder).as_posix()] = sha256_file(p)
        elif p.is_symlink():
            raise CacheError(f"cache entry {folder}: {p} is a symlink; entries must hold real files")
    return out


def _tree_digest(files: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


# Events of this process (hits, misses, production times): the runner records them in provenance.
_EVENTS: list[dict[str, Any]] = []


def events() -> list[dict[str, Any]]:
    """Cache hits and misses of this process, in order (``{"key", "event", "seconds"}``)."""
    return list(_EVENTS)


def record_events(worker_events: list[dict[str, Any]], wall_share: float = 1.0) -> None:
    """Add the cache events of a worker process (a grid cell run by :mod:`cxrlib.executor`) to this
    process's, so the run record counts the artifacts its workers produced. Workers run side by side:
    ``seconds`` becomes the event's share of this process's wall time (its own seconds x
    ``wall_share``, the grid's wall time over the sum of its cells' times); ``worker_seconds`` keeps
    the worker's own."""
    _EVENTS.extend(dict(e, worker=True, worker_seconds=e.get("seconds"), seconds=round(float(e.get("seconds") or 0.0) * wall_share, 3))
                   for e in worker_events)


class Cache:
    """A cache rooted at ``root`` (default :func:`default_root`). See the module docstring."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser().resolve() if root is not None else default_root()

    # paths
    def path(self, k: CacheKey | str) -> Path:
        k = _parse_key(k)
        return self.root / k.kind / k.digest

    def _lock_path(self, k: CacheKey) -> Path:
        return self.root / "locks" / f"{k.kind}-{k.digest}.lock"

    def _ensure_writable(self) -> None:
        for d in (self.root, self.root / "tmp", self.root / "locks"):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(
                    f"cache directory {d} cannot be created ({e.strerror}). Set CXR_CACHE_DIR to a writable folder."
                ) from e
        probe = self.root / "tmp" / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise CacheError(
                f"cache directory {self.root} is not writable ({e.strerror}). Set CXR_CACHE_DIR to a writable folder."
            ) from e

    def check_space(self, expected_bytes: float) -> None:
        """Raise :class:`CacheError` naming the cache path if it has less free space than needed."""
        need = int(expected_bytes) + _SPACE_MARGIN
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise CacheError(
                f"not enough free space in cache directory {self.root}: {free / 2**20:.0f} MiB free, "
                f"{need / 2**20:.0f} MiB needed (expected size {int(expected_bytes) / 2**20:.0f} MiB + margin). "
                "Free space, run `cxr cache gc`, or point CXR_CACHE_DIR elsewhere."
            )

    # reading
    def read_manifest(self, k: CacheKey | str) -> dict[str, Any]:
        path = self.path(k)
        try:
            return json.loads((path / ENTRY_FILE).read_text())
        except FileNotFoundError:
            raise CacheError(f"cache entry {_parse_key(k).id} has no manifest at {path / ENTRY_FILE}") from None
        except json.JSONDecodeError as e:
            raise CacheIntegrityError(f"cache entry {_parse_key(k).id}: manifest {path / ENTRY_FILE} is corrupt ({e})") from e

    def verify(self, k: CacheKey | str) -> dict[str, Any]:
        """Recompute every file's sha256; raise :class:`CacheIntegrityError` naming the entry and the
        first file that differs (changed, missing or extra). Returns the manifest."""
        k = _parse_key(k)
        path = self.path(k)
        manifest = self.read_manifest(k)
        actual = _tree_manifest(path)
        recorded = manifest.get("files", {})
        if actual != recorded:
            changed = sorted(f for f in recorded if f in actual and actual[f] != recorded[f])
            missing = sorted(set(recorded) - set(actual))
            extra = sorted(set(actual) - set(recorded))
            what = "; ".join(
                s for s in (
                    f"changed: {changed}" if changed else "",
                    f"missing: {missing}" if missing else "",
                    f"unexpected: {extra}" if extra else "",
                ) if s
            )
            raise CacheIntegrityError(
                f"cache entry {k.id} at {path} does not match the sha256 recorded when it was written ({what}). "
                f"It was modified after writing; delete it (`cxr cache verify --delete-corrupt`) to recompute it."
            )
        if _tree_digest(actual) != manifest.get("sha256"):
            raise CacheIntegrityError(f"cache entry {k.id} at {path}: manifest sha256 does not match its file list")
        return manifest

    def exists(self, k: CacheKey | str) -> bool:
        return (self.path(k) / ENTRY_FILE).is_file()

    def get(self, k: CacheKey | str, verify: bool = True) -> Path:
        """The folder of an existing entry (verified); :class:`KeyError` if absent."""
        k = _parse_key(k)
        path = self.path(k)
        if not self.exists(k):
            raise KeyError(f"no cache entry {k.id} in {self.root}")
        if verify:
            self.verify(k)
        try:
            os.utime(path)  # last use, for `cxr cache gc --older-than`
        except OSError:
            pass  # a read-only shared cache is fine to read from
        return path

    # writing
    def get_or_create(
        self,
        k: CacheKey,
        producer: Callable[[Path], Any],
        *,
        expected_bytes: float = 0,
        verify: bool = True,
        description: str = "",
        kind: str | None = None,
    ) -> Path:
        """Return the folder of entry ``k``, producing it with ``producer(tmp_dir)`` if absent.

        ``producer`` writes the entry's files into the folder it is given (it may return a small
        JSON-able dict, stored in the manifest as ``info``). It runs at most once per key even when
        several processes ask at the same time; it must be deterministic in ``k``. ``kind``, if
        given, must equal the key's kind (a guard against passing the wrong key).
        """
        if not isinstance(k, CacheKey):
            k = _parse_key(k)
        if kind is not None and kind != k.kind:
            raise ValueError(f"cache key {k.id} is of kind {k.kind!r}, not {kind!r}")
        if self.exists(k):
            t0 = time.perf_counter()
            path = self.get(k, verify=verify)
            # a hit's "seconds" is the cost of verifying it
            _EVENTS.append({"key": k.id, "event": "hit", "seconds": round(time.perf_counter() - t0, 3)})
            return path

        from filelock import FileLock

        self._ensure_writable()
        with FileLock(str(self._lock_path(k))):
            # 1. Another process may have produced it while we waited for the lock.
            if self.exists(k):
                path = self.get(k, verify=verify)
                _EVENTS.append({"key": k.id, "event": "hit-after-wait", "seconds": 0.0})
                return path
            # 2. We hold the lock: leftovers of killed producers of this key are garbage.
            for stale in (self.root / "tmp").glob(f"{k.kind}-{k.digest}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            final = self.path(k)
            if final.exists():  # a folder without manifest cannot come from us; refuse to guess
                raise CacheIntegrityError(
                    f"cache entry {k.id}: {final} exists without its manifest {ENTRY_FILE}; it was not written by "
                    "cxrlib or was modified. Delete it to recompute it."
                )
            self.check_space(expected_bytes)
            # 3. Produce into a private temporary folder on the same file system.
            tmp = self.root / "tmp" / f"{k.kind}-{k.digest}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            t0 = time.perf_counter()
            try:
                info = producer(tmp)
                seconds = time.perf_counter() - t0
                files = _tree_manifest(tmp)
                manifest = {
                    "key": k.id,
                    "kind": k.kind,
                    "config": k.config,
                    "inputs": list(k.inputs),
                    "description": description,
                    "files": files,
                    "sha256": _tree_digest(files),
                    "bytes": sum((tmp / f).stat().st_size for f in files),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "producer_seconds": round(seconds, 3),
                    "info": info if isinstance(info, (dict, type(None))) else str(info),
                }
                from .io import atomic_write_json

                atomic_write_json(tmp / ENTRY_FILE, manifest)
                # 4. Commit: one rename makes the complete entry visible.
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        _EVENTS.append({"key": k.id, "event": "miss", "seconds": round(seconds, 3)})
        return final

    # inspection and pruning
    def entries(self) -> list[dict[str, Any]]:
        """Manifests of all complete entries, each with ``path`` and ``last_used`` (mtime) added."""
        out = []
        if not self.root.is_dir():
            return out
        for kind_dir in sorted(self.root.iterdir()):
            if kind_dir.name in ("tmp", "locks") or not kind_dir.is_dir():
                continue
            for entry in sorted(kind_dir.iterdir()):
                mf = entry / ENTRY_FILE
                if not mf.is_file():
                    continue
                try:
                    m = json.loads(mf.read_text())
                except json.JSONDecodeError:
                    m = {"key": f"{kind_dir.name}/{entry.name}", "kind": kind_dir.name, "corrupt_manifest": True}
                m["path"] = str(entry)
                m["last_used"] = entry.stat().st_mtime
                out.append(m)
        return out

    def remove(self, k: CacheKey | str) -> None:
        """Delete an entry (under its lock, via a rename so a reader never sees half a folder)."""
        from filelock import FileLock

        k = _parse_key(k)
        path = self.path(k)
        with FileLock(str(self._lock_path(k))):
            if path.exists():
                trash = self.root / "tmp" / f"deleted-{k.kind}-{k.digest}-{uuid.uuid4().hex[:8]}"
                os.rename(path, trash)
                shutil.rmtree(trash, ignore_errors=True)

    def gc(self, *, older_than_days: float | None = None, max_bytes: float | None = None,
           kind: str | None = None, dry_run: bool = False) -> list[str]:
        """Remove leftovers of killed producers, then entries unused for ``older_than_days`` and, if
        the cache is larger than ``max_bytes``, least recently used entries until it fits.
        Returns what was (or, with ``dry_run``, would be) removed."""
        from filelock import FileLock, Timeout

        removed: list[str] = []
        tmp_root = self.root / "tmp"
        if tmp_root.is_dir():
            for t in sorted(tmp_root.iterdir()):
                m = re.match(r"^([a-z0-9][a-z0-9_\-]*?)-([0-9a-f]{%d})-" % _DIGEST_LEN, t.name)
                if m:  # a producer's folder: remove only if nobody holds that key's lock
                    lock = FileLock(str(self._lock_path(CacheKey(m.group(1), m.group(2)))))
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        continue
                    try:
                        if not dry_run:
                            shutil.rmtree(t, ignore_errors=True)
                    finally:
                        lock.release()
                elif t.name.startswith("deleted-") and not dry_run:
                    shutil.rmtree(t, ignore_errors=True)
                else:
                    continue
                removed.append(f"tmp/{t.name}")
        entries = [e for e in self.entries() if kind is None or e.get("kind") == kind]
        now = time.time()
        doomed = []
        if older_than_days is not None:
            doomed += [e for e in entries if now - e["last_used"] > older_than_days * 86400]
        if max_bytes is not None:
            keep = sorted((e for e in entries if e not in doomed), key=lambda e: e["last_used"], reverse=True)
            total = 0
            for e in keep:
                total += int(e.get("bytes", 0))
                if total > max_bytes:
                    doomed.append(e)
        for e in doomed:
            if not dry_run:
                self.remove(e["key"])
            removed.append(e["key"])
        return removed


_DEFAULT: dict[Path, Cache] = {}


def default_cache() -> Cache:
    """The cache at :func:`default_root` (re-read from ``CXR_CACHE_DIR`` on every call)."""
    root = default_root()
    if root not in _DEFAULT:
        _DEFAULT[root] = Cache(root)
    return _DEFAULT[root]


def get_or_create(k: CacheKey, producer: Callable[[Path], Any], **kwargs: Any) -> Path:
    """:meth:`Cache.get_or_create` on the default cache."""
    return default_cache().get_or_create(k, producer, **kwargs)


def get(k: CacheKey | str, verify: bool = True) -> Path:
    """:meth:`Cache.get` on the default cache."""
    return default_cache().get(k, verify=verify)
