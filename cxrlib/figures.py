"""Citable figures: every figure of the book as PNG (300 dpi), PDF and SVG, with a JSON record.

``save_figure(fig, fig_id, caption, out_dir=..., params=..., provenance=...)`` writes::

    <out_dir>/<fig_id>.png   .pdf   .svg   .json

The JSON sidecar holds the figure id, caption, the parameters that made the figure, the provenance of
the run, the sha256 of each file and a "cite this figure" line built from ``CITATION.cff`` (figure
id, book version, DOI). Notebooks call it through :meth:`cxrlib.run_context.RunContext.save_figure`, which
also shows the figure and marks it so the book renders it as a numbered, labelled figure.

The files are byte-for-byte reproducible: the creation date and software version that matplotlib
would stamp into them are left out, and the SVG ids use a fixed salt.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

FIG_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
FORMATS = ("png", "pdf", "svg")


def check_fig_id(fig_id: str) -> str:
    if not isinstance(fig_id, str) or not FIG_ID_RE.match(fig_id):
        raise ValueError(
            f"figure id {fig_id!r}: use lower-case letters, digits, '-' and '_' (it becomes a file name "
            "and the figure's label in the book), e.g. 'auroc-vs-ratio'"
        )
    return fig_id


def citation_info(path: str | Path | None = None) -> dict[str, Any]:
    """Title, version, DOI and authors from the project's ``CITATION.cff`` (``{}`` if there is none)."""
    import yaml

    from .utils import project_root

    path = Path(path) if path is not None else project_root() / "CITATION.cff"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    authors = []
    for a in data.get("authors", []) or []:
        if "name" in a:
            authors.append(str(a["name"]))
        else:
            authors.append(" ".join(str(a[k]) for k in ("given-names", "family-names") if k in a))
    year = str(data.get("date-released", ""))[:4]
    return {
        "title": data.get("title"),
        "version": str(data.get("version")) if data.get("version") is not None else None,
        "doi": data.get("doi"),
        "authors": authors,
        "year": year or None,
        "file": str(path),
    }


def cite_line(figure_id: str, citation: Mapping[str, Any] | None = None) -> str:
    """``<authors> (<year>). <title>, version <v>, figure <id>. doi:<doi>`` — the DOI as given in
    CITATION.cff, marked "(placeholder)" while it is the all-zero Zenodo placeholder."""
    from . import __version__

    c = dict(citation_info() if citation is None else citation)
    authors = ", ".join(c.get("authors") or []) or "The cxrlib authors"
    year = f" ({c['year']})" if c.get("year") else ""
    title = c.get("title") or "cxrlib"
    version = c.get("version") or __version__
    doi = c.get("doi")
    if doi:
        placeholder = " (placeholder)" if re.search(r"zenodo\.0+$", str(doi)) else ""
        doi_text = f" doi:{doi}{placeholder}."
    else:
        doi_text = " No DOI yet (CITATION.cff has none)."
    return f"{authors}{year}. {title}, version {version}, figure {figure_id}.{doi_text}"


def save_figure(
    fig,
    fig_id: str,
    caption: str,
    *,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    citation_id: str | None = None,
    dpi: int = 300,
) -> dict[str, Any]:
    """Write ``fig`` (a matplotlib Figure) as PNG/PDF/SVG plus ``<fig_id>.json``; return the record.

    ``citation_id`` is the id printed in the cite line (default ``fig_id``; the runner passes
    ``<notebook>/<fig_id>``). Files are written atomically.
    """
    import matplotlib

    from .io import atomic_path, atomic_write_json, sha256_file

    check_fig_id(fig_id)
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"figure {fig_id!r}: a caption is required (what the figure shows, for the book and the JSON record)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # No dates or versions inside the files: the same run draws the same bytes.
    metadata = {
        "png": {"Software": None},
        "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
        "svg": {"Creator": None, "Date": None},
    }
    files = {}
    with matplotlib.rc_context({"svg.hashsalt": "cxrlib", "pdf.compression": 6}):
        for fmt in FORMATS:
            path = out_dir / f"{fig_id}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata[fmt])
            files[fmt] = {"file": path.name, "sha256": sha256_file(path)}
    cid = citation_id or fig_id
    citation = citation_info()
    record = {
        "figure_id": cid,
        "caption": caption.strip(),
        "cite": cite_line(cid, citation),
        "book_version": citation.get("version"),
        "doi": citation.get("doi"),
        "files": files,
        "dpi": dpi,
        "params": dict(params or {}),
        "provenance": dict(provenance or {}),
    }
    atomic_write_json(out_dir / f"{fig_id}.json", record)
    return record
