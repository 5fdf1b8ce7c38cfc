"""Publish the notebooks' runs as a book (``cxr book``): Jupyter Book HTML and a PDF.

``cxr book [--profile P]`` runs every ``notebooks/NN_name.ipynb`` (:func:`cxrlib.execution.execute`
skips runs that are complete and unchanged, so an interrupted build resumes), copies the executed
notebooks into ``book/chapters/`` (:func:`prepare_chapter`), builds the HTML with ``jupyter-book
build -W -n --keep-going`` and prints a PDF of the single-page HTML with headless Chromium.

A chapter opens with the notebook's overview (its first markdown cell), then the configuration the
run resolved (the config cell's output, its input hidden) and a "Rerun this chapter" command with
exactly the parameters injected for that run. The plumbing cells (imports, ``parameters``,
papermill's ``injected-parameters``) are removed with myst-nb cell tags that :func:`prepare_chapter`
adds to the copy; the notebooks in ``notebooks/`` and the run folders stay as they are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from .config import PROFILE_NAMES, ConfigError
from .errors import RunError, UserError
from .execution import execute, read_run_record
from .notebook_params import read_notebook, rerun_command, resolve_config
from .run_context import RUN_RECORD, read_json, run_dir_for, runs_root
from .utils import project_root

NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_\-]+\.ipynb$")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- chapters ----------------------------------------------------------------------------------------
def book_dir() -> Path:
    return project_root() / "book"


def planned_chapters(book: Path) -> list[dict[str, Any]]:
    """The rows of ``book/chapters.yml``: ``{"number": 3, "title": ...}``."""
    import yaml

    f = book / "chapters.yml"
    if not f.is_file():
        return []
    return list((yaml.safe_load(f.read_text()) or {}).get("chapters", []))


def discover_notebooks(notebooks_dir: Path) -> list[Path]:
    """``notebooks/NN_name.ipynb`` in chapter order."""
    return sorted(p for p in notebooks_dir.glob("*.ipynb") if NOTEBOOK_RE.match(p.name))


def _md_cell(text: str):
    import nbformat

    return nbformat.v4.new_markdown_cell(text)


# A tqdm progress line ("name:  40%|####  | 4/10 [00:07<00:09, 1.67s/batch]") and tqdm's warning that
# ipywidgets is missing (which carries an external URL): noise in a printed chapter, not results.
_PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?\s*\[.*\]\s*$")
_TQDM_WARNING = re.compile(r"^.*TqdmWarning: IProgress not found.*$|^\s*from \.autonotebook import tqdm as notebook_tqdm\s*$")


def _without_progress(text: str) -> str:
    """``text`` (a stderr stream) without progress-bar lines and tqdm's ipywidgets warning."""
    kept = []
    for line in text.split("\n"):
        last = line.split("\r")[-1]  # what a terminal would show after carriage returns
        if _PROGRESS_LINE.match(last) or _TQDM_WARNING.match(last):
            continue
        kept.append(last)
    return "\n".join(kept)


def _figure_markdown(stem: str, fig_id: str, record: Mapping[str, Any], files_dir: str) -> str:
    label = f"fig-{stem}-{fig_id}".lower()
    base = f"{files_dir}/figures/{fig_id}"
    downloads = ", ".join(f"{{download}}`{fmt.upper()} <{base}.{fmt}>`" for fmt in ("png", "pdf", "svg", "json"))
    caption = " ".join(str(record["caption"]).split())
    return (
        f":::{{figure}} {base}.png\n:name: {label}\n:width: 90%\n\n"
        f"{caption} *Cite this figure:* {record['cite']} Files: {downloads}.\n:::\n"
    )


# myst-nb cell tags (Jupyter Book 1): the cell is not rendered / only its outputs are.
REMOVE_CELL, REMOVE_INPUT = "remove-cell", "remove-input"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _add_tag(cell, tag: str) -> None:
    cell.setdefault("metadata", {})["tags"] = [*_tags(cell), tag]


def _hide_plumbing(cells) -> Any:
    """Tag the plumbing at the top of an executed notebook for the book: the code cells before the
    ``parameters`` cell (imports), the ``parameters`` and papermill's ``injected-parameters`` cells are
    removed; the next code cell (it builds the config and shows its table) keeps only its output.
    Returns that config cell (None if the notebook has no parameters cell)."""
    params = next((i for i, c in enumerate(cells) if c.cell_type == "code" and "parameters" in _tags(c)), None)
    if params is None:
        return None
    config_cell = None
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        if i <= params or "injected-parameters" in _tags(cell):
            _add_tag(cell, REMOVE_CELL)
        elif config_cell is None:
            _add_tag(cell, REMOVE_INPUT)
            config_cell = cell
    return config_cell


def _rerun_markdown(command: str, run_dir: Path, config_hash: Any) -> str:
    return (
        "**Rerun this chapter** with exactly these parameters (configuration hash "
        f"`{config_hash}`, run folder `{run_dir.parent.name}/{run_dir.name}`):\n\n"
        f"```bash\n{command}\n```\n\n"
        "Add `-p NAME VALUE` to change any parameter of the table above (see the README)."
    )


def prepare_chapter(run_dir: Path, chapters_dir: Path, stem: str, title: str, notebook: str) -> Path:
    """Copy an executed notebook into the book. The chapter opens with the notebook's overview, then
    the configuration of the run and the command that reruns it (``notebook``: the notebook's path as
    that command shows it); imports and parameter cells are hidden (:func:`_hide_plumbing`). Figures
    become numbered, labelled, citable MyST figures; progress bars are dropped from stderr (the run
    folder keeps the notebook as executed); the chapter ends with the run record. Returns its path."""
    import nbformat

    files_name = f"{stem}_files"
    files_dir = chapters_dir / files_name
    if files_dir.exists():
        shutil.rmtree(files_dir)
    files_dir.mkdir(parents=True)
    for item in ("figures", "config.json", "provenance.json", RUN_RECORD):
        src = run_dir / item
        if src.is_dir():
            shutil.copytree(src, files_dir / item)
        elif src.is_file():
            shutil.copy2(src, files_dir / item)
    tables = sorted(p.name for p in run_dir.glob("*.csv"))
    for t in tables:
        shutil.copy2(run_dir / t, files_dir / t)

    rec = read_run_record(run_dir) or {}
    prov = read_json(run_dir / "provenance.json") or {}
    injected = rec.get("parameters") or prov.get("parameters") or {"profile": rec.get("profile")}
    rerun = _md_cell(_rerun_markdown(rerun_command(notebook, injected), run_dir, rec.get("config_hash")))
    nb = nbformat.read(run_dir / f"{stem}.ipynb", as_version=4)
    config_cell = _hide_plumbing(nb.cells)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        keep, figs = [], []
        for out in cell.get("outputs", []):
            fig = out.get("metadata", {}).get("cxrlib_figure")
            if fig and (files_dir / "figures" / f"{fig['id']}.json").is_file():
                figs.append(fig["id"])
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = _without_progress(out.get("text", ""))
                if text.strip():
                    out["text"] = text
                    keep.append(out)
            else:
                keep.append(out)
        cell.outputs = keep
        if cell is config_cell:
            cells.append(_md_cell(f"## Configuration of this run\n\nEvery parameter as this run resolved it "
                                  f"(profile `{rec.get('profile')}`, then the parameters given):"))
        cells.append(cell)
        if cell is config_cell:
            cells.append(rerun)
        for fig_id in figs:
            record = json.loads((files_dir / "figures" / f"{fig_id}.json").read_text())
            cells.append(_md_cell(_figure_markdown(stem, fig_id, record, files_name)))
    first_md = next((c for c in cells if c.cell_type == "markdown"), None)
    if first_md is None or not first_md.source.lstrip().startswith("# "):
        cells.insert(0, _md_cell(f"# {title}"))
    if config_cell is None:  # no parameters cell: the command goes after the overview
        first = next(i for i, c in enumerate(cells) if c.cell_type == "markdown")
        cells.insert(first + 1, rerun)
    git = prov.get("git", {})
    commit = (git.get("commit") or "none")[:12] + (" (with uncommitted changes)" if git.get("dirty") else "")
    links = ", ".join(f"{{download}}`{n} <{files_name}/{n}>`" for n in ["config.json", "provenance.json", *tables])
    cells.append(_md_cell(
        "## Run record\n\n"
        f"This chapter is the notebook `{stem}.ipynb` as executed by `cxr run`: profile `{rec.get('profile')}`, "
        f"configuration hash `{rec.get('config_hash')}`, wall time {float(rec.get('wall_time_s') or 0):.1f} s, "
        f"code commit `{commit}`, finished {rec.get('finished')}. Files: {links}. The command under "
        "*Configuration of this run* reruns it."
    ))
    nb.cells = cells
    out = chapters_dir / f"{stem}.ipynb"
    nbformat.write(nb, out)
    return out


def _status_page(rows: list[dict[str, Any]], profile: str) -> str:
    lines = [
        "# Build status",
        "",
        f"Experiment chapters of this build (profile `{profile}`). A chapter is *missing* until its "
        "notebook `notebooks/NN_name.ipynb` exists; *failed* means the notebook raised an error and is not shown.",
        "",
        "| # | chapter | notebook | status | run | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = f"{r['wall_time_s']:.1f}" if r.get("wall_time_s") is not None else ""
        run = f"`{r['run']}`" if r.get("run") else ""
        nb = f"`{r['notebook']}`" if r.get("notebook") else ""
        status = r["status"].replace("|", "\\|").replace("`", "'").replace("{", "(").replace("}", ")")
        status = status if status in ("ran", "up to date") else f"**{status}**"
        lines.append(f"| {r.get('number', '')} | {r['title']} | {nb} | {status} | {run} | {wall} |")
    return "\n".join(lines) + "\n"


def _jupyter_book(args: list[str], log: Path, what: str) -> None:
    """Run the jupyter-book CLI, logging to ``log``; on failure show the log's errors."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", *args]
    t0 = time.perf_counter()
    _say(f"[book] {what} ...")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=project_root(), text=True)
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or "There was an error in building your book" in text:
        errors = [ln for ln in text.splitlines() if re.search(r"(WARNING:|ERROR:|Error:|Exception|Traceback)", ln)][:25]
        raise UserError(f"{what} failed (exit {proc.returncode}); full log: {log}\n" + "\n".join(errors))
    _say(f"[book] {what}: done in {time.perf_counter() - t0:.0f} s")


def chromium_path() -> str:
    exe = os.environ.get("CXR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise UserError("chromium is needed to print the PDF: install Debian's 'chromium' package "
                          "(or set CXR_CHROMIUM), or pass --no-pdf")
    return exe


# Headless Chromium, offline and quiet: no sandbox (containers), no GPU, no network side traffic.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--disable-sync", "--disable-extensions",
    "--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=30000",
)


def print_pdf(html: Path, pdf: Path, timeout: float = 600) -> Path:
    """Print ``html`` to ``pdf`` with headless Chromium (MathJax is typeset before printing)."""
    from .io import atomic_path

    exe = chromium_path()
    _say(f"[book] printing PDF with {exe} ...")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr-chromium-") as profile_dir, atomic_path(pdf) as tmp:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--print-to-pdf={tmp}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0 or tmp.read_bytes()[:5] != b"%PDF-":
            raise UserError(f"chromium could not print {html} to PDF (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    _say(f"[book] PDF: {pdf} ({pdf.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.0f} s)")
    return pdf


# --- publishing: launch buttons ---------------------------------------------------------------------
# The default book is offline (no external URL, tests/test_book.py). Only a build given the repository
# (`cxr book --repository-url URL` or $CXR_BOOK_REPOSITORY; .github/workflows/book.yml) gets the
# repository button and Binder / Colab launch buttons, which open the repository's notebooks/NN_name.ipynb.
REPOSITORY_ENV, BRANCH_ENV = "CXR_BOOK_REPOSITORY", "CXR_BOOK_BRANCH"
BINDERHUB_URL, COLAB_URL = "https://mybinder.org", "https://colab.research.google.com"
_GITHUB_REPOSITORY = re.compile(r"^https://github\.com/[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\.\.?$)[A-Za-z0-9_.-]{1,100}$")
_BRANCH = re.compile(r"^(?![-/])(?!.*\.\.)[A-Za-z0-9._/-]{1,200}$")


def publish_config(repository_url: str | None, branch: str | None = "main") -> dict[str, Any]:
    """The ``_config.yml`` keys a published build adds: repository and Binder / Colab launch buttons for
    ``repository_url`` (``https://github.com/OWNER/REPO``) at ``branch``; ``{}`` without a URL (offline
    book). A malformed URL or branch raises :class:`UserError` naming the option."""
    if not repository_url or not repository_url.strip():
        return {}
    url = repository_url.strip().rstrip("/").removesuffix(".git")
    if not _GITHUB_REPOSITORY.match(url):
        raise UserError(f"--repository-url / ${REPOSITORY_ENV} must be a GitHub repository, "
                        f"https://github.com/OWNER/REPO (Binder and Colab launch buttons need one); got {repository_url!r}")
    if not _BRANCH.match(branch := (branch or "main").strip()):
        raise UserError(f"--repository-branch / ${BRANCH_ENV} is not a branch name: {branch!r}")
    launch = {"notebook_interface": "classic", "binderhub_url": BINDERHUB_URL, "colab_url": COLAB_URL}
    theme = {"repository_url": url, "path_to_docs": "book", "repository_branch": branch,
             "use_repository_button": True, "launch_buttons": launch}
    return {"repository": {"url": url, "path_to_book": "book", "branch": branch},
            "html": {"use_repository_button": True}, "launch_buttons": launch,
            # this module's setup(): launch links to notebooks/. The book's sphinx.config.html_theme_options
            # replaces (not updates) the theme options Jupyter Book derives from the keys above: repeat them.
            "sphinx": {"extra_extensions": [__name__], "config": {"html_theme_options": theme}}}


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {**base, **{k: _merged(base[k], v) if isinstance(v, Mapping) and isinstance(base.get(k), Mapping) else v
                       for k, v in extra.items()}}


def write_publish_config(book: Path, overrides: Mapping[str, Any], out: Path) -> Path:
    """``book/_config.yml`` with ``overrides`` merged in, written to ``out`` for ``jupyter-book build
    --config``; local extension folders made absolute (``out`` is not in ``book``)."""
    import yaml

    config = _merged(yaml.safe_load((book / "_config.yml").read_text()) or {}, overrides)
    local = (config.get("sphinx") or {}).get("local_extensions") or {}
    local.update({name: str((book / path).resolve()) for name, path in local.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Generated by `cxr book --repository-url`; do not edit.\n" + yaml.safe_dump(config, sort_keys=False))
    return out


def notebook_launch_url(url: str) -> str:
    """A launch link to the chapter ``book/chapters/NN_name.ipynb`` (generated, not in git) -> to
    ``notebooks/NN_name.ipynb``."""
    return re.sub(r"(?<![^/=])book/chapters/(\d\d_[A-Za-z0-9_\-]+\.ipynb)", r"notebooks/\1", url)


def _launch_repository_notebooks(app, pagename, templatename, context, doctree) -> None:
    for button in (b for g in context.get("header_buttons") or [] if g.get("label") == "launch-buttons"
                   for b in g.get("buttons", []) if b.get("url")):
        button["url"] = notebook_launch_url(button["url"])


def setup(app):
    """Sphinx extension of the published build: after sphinx-book-theme (priority 501), relink launch buttons."""
    app.connect("html-page-context", _launch_repository_notebooks, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


@dataclasses.dataclass
class BookResult:
    html: Path
    pdf: Path | None
    chapters: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    wall_time_s: float


def build_book(
    profile: str = "cpu",
    *,
    book: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    pdf: bool = True,
    force: bool = False,
    repository_url: str | None = None,
    repository_branch: str | None = "main",
) -> BookResult:
    """Run every notebook at ``profile`` (resuming), copy them into the book, build HTML (+ PDF);
    with ``repository_url`` the HTML has repository and launch buttons (:func:`publish_config`)."""
    from .utils import tqdm

    t0 = time.perf_counter()
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"--profile {profile!r} is not one of {list(PROFILE_NAMES)}")
    published = publish_config(repository_url, repository_branch)  # a bad URL fails before any notebook runs
    book = Path(book).resolve() if book else book_dir()
    if not (book / "_config.yml").is_file():
        raise FileNotFoundError(f"no Jupyter Book at {book} (expected {book / '_config.yml'})")
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir else project_root() / "notebooks"
    notebooks = discover_notebooks(notebooks_dir) if notebooks_dir.is_dir() else []
    planned = {int(c["number"]): c for c in planned_chapters(book)}
    by_number = {int(NOTEBOOK_RE.match(p.name).group(1)): p for p in notebooks}
    missing = [c for n, c in sorted(planned.items()) if n not in by_number]
    _say(f"[book] profile {profile}: {len(notebooks)} notebook(s) in {notebooks_dir}")
    if missing:
        _say("[book] missing chapters (no notebooks/NN_*.ipynb yet; the book is built without them): "
             + "; ".join(f"{c['number']:02d} {c['title']}" for c in missing))

    # 1. Run the notebooks (finished, unchanged runs are skipped: an interrupted build resumes).
    chapters, failed, rows = [], [], []
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for nb_path in bar:
        number = int(NOTEBOOK_RE.match(nb_path.name).group(1))
        row = {"number": number, "title": planned.get(number, {}).get("title", nb_path.stem), "notebook": nb_path.name}
        bar.set_postfix_str(nb_path.stem)
        try:
            spec = read_notebook(nb_path)
            row["title"] = spec.title
            cfg, injected = resolve_config(spec, {}, profile)
            _say(f"[book] {nb_path.name}: run folder {run_dir_for(spec.stem, cfg, runs_dir)}")
            result = execute(spec, cfg, injected, runs_dir=runs_dir, force=force)
        except (RunError, ValueError, ImportError) as e:
            _say(f"[book] {nb_path.name}: FAILED: {e}")
            row.update(status=f"failed: {str(e).splitlines()[0][:200]}")
            failed.append(row)
            rows.append(row)
            continue
        verb = "up to date (not rerun)" if result.status == "up-to-date" else f"ran in {result.wall_time_s:.1f} s"
        _say(f"[book] {nb_path.name}: {verb}")
        row.update(status="up to date" if result.status == "up-to-date" else "ran", run=str(result.run_dir.name),
                   wall_time_s=result.wall_time_s, run_dir=result.run_dir, spec=spec)
        chapters.append(row)
        rows.append(row)
    for c in missing:
        rows.append({"number": c["number"], "title": c["title"], "status": "missing"})
    rows.sort(key=lambda r: r["number"])

    # 2. The book's generated chapters: executed notebooks + the status page.
    chapters_dir = book / "chapters"
    if chapters_dir.exists():
        shutil.rmtree(chapters_dir)
    chapters_dir.mkdir()
    from .io import atomic_write_text

    for row in chapters:
        spec = row["spec"]
        prepare_chapter(row["run_dir"], chapters_dir, spec.stem, spec.title, os.path.relpath(spec.path, project_root()))
    atomic_write_text(chapters_dir / "status.md", _status_page(rows, profile))
    # the reproduction scorecard, from the chapters of this build (cxrlib.verdicts)
    from . import verdicts

    card = verdicts.scorecard({row["spec"].stem: row["run_dir"] for row in chapters})
    scorecard_csv = runs_root(runs_dir) / f"scorecard-{profile}.csv"
    scorecard_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(scorecard_csv, card.to_csv(index=False))
    atomic_write_text(chapters_dir / "scorecard.md",
                      verdicts.scorecard_markdown(card, profile, built={row["spec"].stem for row in chapters}))
    _say(f"[book] scorecard: {scorecard_csv}")
    if not chapters:  # the TOC's chapter glob must match something, or Sphinx warns (an error with -W)
        atomic_write_text(chapters_dir / "00_no_experiments.md",
                          "# No experiment chapters yet\n\nNo notebook has run successfully for this build; "
                          "see {doc}`status`.\n")

    # 3. HTML (warnings are errors), then the single-page HTML printed to PDF.
    build = book / "_build"
    # published: launch buttons in the HTML only (the PDF stays the offline book)
    config = ["--config", str(write_publish_config(book, published, build / "publish" / "_config.yml"))] if published else []
    _jupyter_book(["build", str(book), "--all", "-W", "-n", "--keep-going", *config], build / "logs" / "html.log",
                  "building HTML" + (f" with launch buttons for {published['repository']['url']}" if published else ""))
    pdf_path = None
    if pdf:
        _jupyter_book(["build", str(book), "--all", "--builder", "singlehtml", "-W", "-n", "--keep-going"],
                      build / "logs" / "singlehtml.log", "building single-page HTML for the PDF")
        pdf_path = print_pdf(build / "singlehtml" / "index.html", build / "pdf" / "book.pdf")
    wall = time.perf_counter() - t0
    html = build / "html" / "index.html"
    _say(f"[book] HTML: {html}")
    _say(f"[book] {len(chapters)} chapter(s) built, {len(missing)} missing, {len(failed)} failed; {wall:.0f} s in total")
    for r in chapters:
        r.pop("spec", None)
    return BookResult(html, pdf_path, chapters, missing, failed, wall)


# --- command line ------------------------------------------------------------------------------------
def _cmd_book(args) -> int:
    result = build_book(args.profile, book=args.book_dir, notebooks_dir=args.notebooks_dir, runs_dir=args.runs_dir,
                        pdf=not args.no_pdf, force=args.force, repository_url=args.repository_url,
                        repository_branch=args.repository_branch)
    print(f"HTML: {result.html}")
    if result.pdf:
        print(f"PDF:  {result.pdf}")
    if result.missing:
        print("missing chapters: " + ", ".join(f"{c['number']:02d} {c['title']}" for c in result.missing))
    if result.failed:
        print("FAILED notebooks (not in the book): " + ", ".join(r["notebook"] for r in result.failed))
        return 1
    return 0


def register_cli(subparsers) -> None:
    """``cxr book``."""
    b = subparsers.add_parser("book", help="run every notebook at a profile and build the book (HTML + PDF)")
    b.add_argument("--profile", choices=PROFILE_NAMES, default="cpu", help="profile for every notebook (default: cpu)")
    b.add_argument("--runs-dir", default=None, help="root of run folders (default: $CXR_RUNS_DIR or <project>/runs)")
    b.add_argument("--book-dir", default=None, help="the Jupyter Book folder (default: <project>/book)")
    b.add_argument("--notebooks-dir", default=None, help="where NN_name.ipynb notebooks are (default: <project>/notebooks)")
    b.add_argument("--no-pdf", action="store_true", help="build the HTML only")
    b.add_argument("--force", action="store_true", help="rerun every notebook even if its run is complete")
    b.add_argument("--repository-url", default=os.environ.get(REPOSITORY_ENV) or None, metavar="URL",
                   help=f"published build: https://github.com/OWNER/REPO for the repository and Binder/Colab launch "
                        f"buttons (default: ${REPOSITORY_ENV}; unset = offline book, no external URL)")
    b.add_argument("--repository-branch", default=os.environ.get(BRANCH_ENV) or "main", metavar="BRANCH",
                   help=f"branch the launch buttons open (default: ${BRANCH_ENV} or main)")
    b.set_defaults(func=_cmd_book)
