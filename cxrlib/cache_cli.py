"""``cxr cache ls|verify|gc``: the artifact cache (:mod:`cxrlib.cache`) on the command line."""

from __future__ import annotations

import json
import re
import time

from .cache import Cache, CacheError, default_cache
from .errors import UserError


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _parse_size(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ValueError(f"--max-size {text!r}: expected a size like 500M, 20G")
    return float(m.group(1)) * 1024 ** "bkmgt".index(m.group(2) or "b")


def _cmd_ls(args) -> int:
    cache = Cache(args.cache_dir) if args.cache_dir else default_cache()
    entries = [e for e in cache.entries() if args.kind is None or e.get("kind") == args.kind]
    print(f"cache: {cache.root}  ({len(entries)} entries, {_human(sum(int(e.get('bytes', 0)) for e in entries))})")
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["last_used"]))
        cfg = json.dumps(e.get("config", {}), sort_keys=True, separators=(",", ":"))
        if len(cfg) > 70 and not args.long:
            cfg = cfg[:67] + "..."
        print(f"{e['key']:<48} {_human(int(e.get('bytes', 0))):>10}  {e.get('producer_seconds', 0):>8.1f}s  used {used}  {cfg}")
    return 0


def _cmd_verify(args) -> int:
    cache = Cache(args.cache_dir) if args.cache_dir else default_cache()
    bad = 0
    entries = cache.entries()
    for e in entries:
        try:
            cache.verify(e["key"])
        except CacheError as err:
            bad += 1
            print(f"CORRUPT {err}")
            if args.delete_corrupt:
                cache.remove(e["key"])
                print(f"  deleted {e['key']}")
    print(f"verified {len(entries)} entries in {cache.root}: {len(entries) - bad} ok, {bad} corrupt")
    return 1 if bad and not args.delete_corrupt else 0


def _cmd_gc(args) -> int:
    cache = Cache(args.cache_dir) if args.cache_dir else default_cache()
    max_bytes = _parse_size(args.max_size) if args.max_size else None
    removed = cache.gc(older_than_days=args.older_than, max_bytes=max_bytes, kind=args.kind, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        print(f"{verb} {r}")
    print(f"{verb} {len(removed)} item(s) from {cache.root}")
    return 0


def _one_line_errors(fn):
    """Cache errors on the command line are one line (``cxr: error: ...``), not a traceback."""

    def wrapped(args):
        try:
            return fn(args)
        except CacheError as e:
            raise UserError(str(e)) from e

    return wrapped


def register_cli(subparsers) -> None:
    """``cxr cache ls|verify|gc``."""
    p = subparsers.add_parser("cache", help="inspect, verify and prune the artifact cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ls|verify|gc")
    csub.required = True

    def common(q):
        q.add_argument("--cache-dir", default=None, help="cache root (default: $CXR_CACHE_DIR or <project>/.cache/cxrlib)")
        return q

    q = common(csub.add_parser("ls", help="list entries: key, size, production time, last use, config"))
    q.add_argument("--kind", default=None, help="only entries of this kind (generator, synthetic, ...)")
    q.add_argument("--long", action="store_true", help="print configs in full")
    q.set_defaults(func=_one_line_errors(_cmd_ls))

    q = common(csub.add_parser("verify", help="recompute every entry's sha256; exit 1 if one is corrupt"))
    q.add_argument("--delete-corrupt", action="store_true", help="delete corrupt entries so they are recomputed")
    q.set_defaults(func=_one_line_errors(_cmd_verify))

    q = common(csub.add_parser("gc", help="remove leftovers of killed writes, and old/excess entries"))
    q.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="remove entries unused for DAYS")
    q.add_argument("--max-size", default=None, metavar="SIZE", help="then remove least recently used entries until the cache fits (e.g. 20G)")
    q.add_argument("--kind", default=None, help="only consider entries of this kind")
    q.add_argument("--dry-run", action="store_true", help="print what would be removed")
    q.set_defaults(func=_one_line_errors(_cmd_gc))
