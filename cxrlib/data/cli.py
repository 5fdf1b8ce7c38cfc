"""``cxr data ...``: dataset summaries, checking a folder against a manifest, rebuilding the manifests.

    cxr data summary --dataset phantom
    cxr data summary --dataset chexpert [--root /data/CheXpert-v1.0-small] [--split train]
    cxr data verify --manifest data_manifests/nih.csv.gz --root /data/nih
    cxr data manifests [--dataset chexpert nih] [--out data_manifests] [--check]
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SPLIT_ORDER = ("train", "val", "test")


def summary_table(meta: pd.DataFrame, labels) -> pd.DataFrame:
    """Images, patients and per-label positives (raw value 1, with prevalence) per split and overall."""
    parts = {}
    splits = [s for s in SPLIT_ORDER if "split" in meta.columns and (meta["split"] == s).any()]
    groups = [(s, meta[meta["split"] == s]) for s in splits]
    if len(groups) != 1:
        groups.append(("all", meta))
    for s, part in groups:
        col = {"images": f"{len(part):,}", "patients": f"{part['patient_id'].nunique():,}"}
        for name in labels:
            raw = pd.to_numeric(part[name], errors="coerce")
            pos = int((raw == 1).sum())
            annotated = len(part) and raw.notna().any()
            col[name] = f"{pos:,} ({100.0 * pos / max(len(part), 1):.1f}%)" if annotated else "n/a"
        parts[s] = col
    return pd.DataFrame(parts)


def _summary(args) -> int:
    from . import DEFAULT_LABELS, _labels, load_meta
    from .files import show_path

    labels = _labels(args.dataset, args.labels)
    meta, skipped = load_meta(
        args.dataset, root=args.root, split=args.split, manifest=args.manifest, n_max=args.n_max, site=args.site, seed=args.seed, on_error=args.on_error
    )
    if args.dataset == "nih" and any(n not in meta.columns for n in labels):
        from .real import nih_as_chexpert

        meta = nih_as_chexpert(meta)
    if args.check_images:
        if args.dataset in ("phantom", "pneumoniamnist", "chestmnist"):
            raise ValueError(f"--check-images applies to image folders; {args.dataset!r} has none")
        import warnings

        from .real import FileDataset

        with warnings.catch_warnings():  # the skipped files are printed below
            warnings.simplefilter("ignore", UserWarning)
            ds = FileDataset(meta, label_names=labels, name=args.dataset, verify="decode", on_error=args.on_error, skipped=skipped, root=args.root, progress=True)
        meta, skipped = ds.meta, ds.skipped
    source = f"root {show_path(args.root)}" if args.root else "label CSV shipped in torchxrayvision (no images)"
    if args.dataset == "phantom":
        source = f"phantom site {args.site!r}, seed {args.seed}"
    print(f"dataset {args.dataset} ({source}); positives = raw label value 1 (uncertain -1 not counted)")
    if labels != DEFAULT_LABELS[args.dataset]:
        print(f"labels: {', '.join(labels)}")
    table = summary_table(meta, labels)
    print(table.to_string())
    if (table == "n/a").any().any():
        print("n/a: label not annotated in this dataset (raw values all empty)")
    if len(skipped):
        print(f"skipped: {len(skipped)} file(s)/row(s)")
        for problem, n in skipped["problem"].value_counts().items():
            first = skipped.loc[skipped["problem"] == problem, "image_id"].iloc[0]
            print(f"  {n:6d}  {problem}  (e.g. {show_path(first)})")
    return 0


def _verify(args) -> int:
    from .manifests import verify_files
    from .files import show_path

    manifest = Path(args.manifest)
    problems = verify_files(manifest, args.root, decode=not args.no_decode, progress=True)
    n = len(pd.read_csv(manifest, usecols=[0])) if manifest.is_file() else 0
    if problems.empty:
        print(f"ok: {n} file(s) of {show_path(manifest)} found{'' if args.no_decode else ' and readable'} under {show_path(args.root)}")
        return 0
    print(f"{len(problems)} of {n} file(s) of {show_path(manifest)} have problems under {show_path(args.root)}:")
    kinds = problems["problem"].str.split(":").str[0]
    for kind, k in kinds.value_counts().items():
        print(f"  {k:6d}  {kind}")
    shown = problems.head(args.show)
    for r in shown.itertuples():
        print(f"  {show_path(r.image_id)}: {r.problem}")
    if len(problems) > len(shown):
        print(f"  ... and {len(problems) - len(shown)} more")
    return 1


def _manifests(args) -> int:
    import tempfile

    from .manifests import MANIFEST_BUILDERS, manifest_dir, read_manifest_sidecar, sidecar_path

    builders = dict(MANIFEST_BUILDERS)
    try:  # the phantom's builder lives in cxrlib.data.phantom (the lead's module)
        from . import phantom

        if hasattr(phantom, "build_manifest"):
            builders["phantom"] = phantom.build_manifest
    except ImportError:
        pass
    names = args.dataset or sorted(builders)
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise ValueError(f"no manifest builder for {unknown}; available: {sorted(builders)}")
    out = Path(args.out) if args.out else manifest_dir()
    status = 0
    for name in names:
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                new = builders[name](tmp)
                committed = next((p for p in (out / new.name,) if p.is_file()), None)
                if committed is None:
                    print(f"{name}: no committed {out / new.name}")
                    status = 1
                    continue
                same = read_manifest_sidecar(new)["sha256"] == read_manifest_sidecar(committed)["sha256"]
                print(f"{name}: {'identical to' if same else 'DIFFERS from'} {committed}")
                status |= 0 if same else 1
        else:
            path = builders[name](out)
            side = read_manifest_sidecar(path)
            counts = ", ".join(f"{s} {c['images']:,} img / {c['patients']:,} pat" for s, c in side["counts"]["splits"].items())
            print(f"{name}: wrote {path} ({path.stat().st_size / 1e6:.2f} MB) + {sidecar_path(path).name}: {counts}")
    return status


def register(subparsers) -> None:
    from . import DATASETS

    p = subparsers.add_parser("data", help="datasets: summary, verify, manifests")
    sub = p.add_subparsers(dest="data_command", metavar="{summary,verify,manifests}")
    sub.required = True

    s = sub.add_parser("summary", help="images, patients and per-label positives per split")
    s.add_argument("--dataset", required=True, choices=DATASETS, help="dataset name")
    s.add_argument("--root", default=None, help="dataset folder (CheXpert/NIH without it: the label CSVs shipped in torchxrayvision)")
    s.add_argument("--split", default=None, choices=SPLIT_ORDER, help="one split (default: all)")
    s.add_argument("--manifest", default=None, help="a manifest CSV (default: data_manifests/<dataset>.csv[.gz])")
    s.add_argument("--labels", nargs="+", default=None, help="label names (default: the dataset's)")
    s.add_argument("--n-max", type=int, default=None, help="only the first N images (an external phantom site: its size)")
    s.add_argument("--site", default="internal", help="phantom site")
    s.add_argument("--seed", type=int, default=0, help="phantom seed")
    s.add_argument("--check-images", action="store_true", help="decode every image (slow) and count unreadable ones")
    s.add_argument("--on-error", default="raise", choices=("raise", "skip"), help="stop at a bad file/row, or skip and count it")
    s.set_defaults(func=_summary)

    v = sub.add_parser("verify", help="check an image folder against a manifest (missing, unreadable, sha256)")
    v.add_argument("--manifest", required=True, help="manifest CSV (image_id/path/file column; optional sha256 column)")
    v.add_argument("--root", required=True, help="folder the manifest's paths are relative to")
    v.add_argument("--no-decode", action="store_true", help="only check that files exist and have a readable header")
    v.add_argument("--show", type=int, default=20, help="how many problems to list")
    v.set_defaults(func=_verify)

    m = sub.add_parser("manifests", help="(re)build the frozen manifests in data_manifests/")
    m.add_argument("--dataset", nargs="+", default=None, help="which (default: all with a builder)")
    m.add_argument("--out", default=None, help="output folder (default: data_manifests/)")
    m.add_argument("--check", action="store_true", help="rebuild in a temporary folder and compare with the committed ones")
    m.set_defaults(func=_manifests)
