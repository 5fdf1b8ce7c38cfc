"""The smoke book: built once per session (HTML + PDF), then checked as files and in headless Chromium.

It builds from the project's notebooks (notebooks/NN_name.ipynb) at profile smoke; while none exist
yet (or with CXR_TEST_BOOK=fixture), from the tiny fixture notebook. The build happens in a copy of
book/ with its own runs folder, so it never touches the project's book/_build or runs/. Every
notebook is executed; the project's notebooks share the project's artifact cache (content-addressed
and verified on read, so sharing is safe and spares retraining), the fixture gets its own.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from cxrlib import book as book_builder, execution
from cxrlib.utils import project_root

pytestmark = pytest.mark.book

ROOT = project_root()
FIXTURES = Path(__file__).parent / "fixtures"
# Absolute http(s) URLs, except to this machine: anywhere in HTML; in CSS, what the browser would load.
EXTERNAL_URL = re.compile(r"https?://(?!(?:localhost|127\.0\.0\.1)[:/])[^\s\"'<>)]+")
CSS_EXTERNAL = re.compile(r"(?:url\(\s*['\"]?|@import\s+['\"]?)(https?://(?!localhost|127\.0\.0\.1)[^'\")\s]+)")


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke-book")
    book = tmp / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "chapters"))
    notebooks = ROOT / "notebooks"
    fixture = os.environ.get("CXR_TEST_BOOK") == "fixture" or not book_builder.discover_notebooks(notebooks)
    if fixture:
        notebooks = FIXTURES / "notebooks"
    with pytest.MonkeyPatch.context() as mp:
        if fixture:
            mp.setenv("CXR_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]))
        mp.syspath_prepend(str(FIXTURES))
        result = book_builder.build_book("smoke", book=book, notebooks_dir=notebooks, runs_dir=tmp / "runs", pdf=True)
        # Built twice: the second build must resume (no notebook rerun) and still produce the book.
        again = book_builder.build_book("smoke", book=book, notebooks_dir=notebooks, runs_dir=tmp / "runs", pdf=False)
    return {"book": book, "html": book / "_build" / "html", "result": result, "again": again,
            "notebooks": book_builder.discover_notebooks(notebooks)}


def _pages(smoke_book):
    html = smoke_book["html"]
    chapters = [html / "chapters" / f"{nb.stem}.html" for nb in smoke_book["notebooks"]]
    methods = sorted((html / "methods").glob("*.html"))
    return [html / "index.html", html / "chapters" / "scorecard.html", *chapters, *methods, html / "chapters" / "status.html",
            html / "references.html"]


def test_html_and_pdf_are_built(smoke_book):
    r = smoke_book["result"]
    assert r.html.is_file()
    pdf = r.pdf.read_bytes() if r.pdf else b""
    assert pdf[:5] == b"%PDF-" and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 5
    assert not r.failed, r.failed


def test_every_notebook_is_a_chapter_and_missing_ones_are_listed(smoke_book):
    html = smoke_book["html"]
    for nb in smoke_book["notebooks"]:
        assert (html / "chapters" / f"{nb.stem}.html").is_file(), nb
    status = (html / "chapters" / "status.html").read_text()
    planned = book_builder.planned_chapters(smoke_book["book"])
    present = {int(nb.name[:2]) for nb in smoke_book["notebooks"]}
    for c in planned:
        if c["number"] not in present:
            assert c["number"] in [m["number"] for m in smoke_book["result"].missing]
    assert status.count("<strong>missing</strong>") == len(smoke_book["result"].missing)


def test_second_build_resumes_without_rerunning(smoke_book):
    again = smoke_book["again"]
    assert again.chapters and all(c["status"] == "up to date" for c in again.chapters)
    assert again.html.is_file()


def test_no_external_url_in_the_html(smoke_book):
    build = smoke_book["book"] / "_build"
    offenders = {}
    files = [*build.glob("html/**/*.html"), *build.glob("singlehtml/**/*.html")]
    assert len(files) > 10
    for f in [*files, *build.glob("html/_static/**/*.css")]:
        pattern = CSS_EXTERNAL if f.suffix == ".css" else EXTERNAL_URL
        found = sorted(set(pattern.findall(f.read_text(errors="replace"))))
        if found:
            offenders[str(f.relative_to(build))] = found[:5]
    assert offenders == {}


def test_figures_are_numbered_labelled_and_citable(smoke_book):
    html = smoke_book["html"]
    n_figures = 0
    for nb in smoke_book["notebooks"]:
        page = (html / "chapters" / f"{nb.stem}.html").read_text()
        for fig in re.findall(r"<figure[^>]*id=\"fig-[^\"]+\".*?</figure>", page, flags=re.S):
            n_figures += 1
            assert re.search(r'class="caption-number">Fig\. \d+\.\d+', fig), fig[:300]
            assert "Cite this figure" in fig and "doi:" in fig and "version" in fig
            src = re.search(r'<img[^>]*src="([^"]+)"', fig).group(1)
            assert (html / "chapters" / src).resolve().is_file(), src
            for ext in ("pdf", "svg", "json"):
                assert re.search(rf'href="[^"]+\.{ext}"', fig), ext
    assert n_figures >= 1


def test_chapters_open_with_prose_and_rerun_command_reproduces_the_run(smoke_book):
    """No import or parameter cell is rendered; each chapter shows its configuration and a command
    that, typed into a shell, resolves the same config (same hash) as the run the chapter shows."""
    import html as html_lib
    import shlex

    from cxrlib.notebook_params import collect_params, read_notebook, resolve_config

    for nb in smoke_book["notebooks"]:
        page = (smoke_book["html"] / "chapters" / f"{nb.stem}.html").read_text()
        text = html_lib.unescape(re.sub(r"<[^>]+>", "", page))
        for plumbing in ("from_notebook(", "overrides = {}", "import ", "start_run("):
            assert plumbing not in text, (nb.stem, plumbing)
        assert "Configuration of this run" in text and "Rerun this chapter" in text
        assert text.index("Overview") < text.index("Configuration of this run") if "Overview" in text else True
        command = re.search(r"^cxr run .*$", text, flags=re.M).group(0)
        args = shlex.split(command)[2:]
        notebook, rest = args[0], args[1:]
        profile = rest[rest.index("--profile") + 1]
        pairs = [(rest[i + 1], rest[i + 2]) for i, a in enumerate(rest) if a == "-p"]
        spec = read_notebook(project_root() / notebook)
        cfg, _ = resolve_config(spec, collect_params(pairs), profile, raw=dict(pairs))
        run_hash = re.search(r"configuration hash\s+(\w+)", text).group(1)
        assert cfg.hash() == run_hash, (nb.stem, command)


def test_scorecard_csv_and_page(smoke_book):
    """cxr book writes runs/scorecard-<profile>.csv (every claim of the register, each verdict one of
    three, each rule printed) and the scorecard page right after the introduction."""
    import pandas as pd

    from cxrlib import verdicts

    card = pd.read_csv(smoke_book["book"].parent / "runs" / "scorecard-smoke.csv")
    assert list(card.columns) == list(verdicts.SCORECARD_COLUMNS) and len(card) >= 10
    assert set(card["verdict"]) <= set(verdicts.VERDICTS) and card["rule"].str.len().min() > 20
    page = (smoke_book["html"] / "chapters" / "scorecard.html").read_text()
    assert "Reproduction scorecard" in page and page.count("<tr") >= len(card) + 1
    toc = (smoke_book["book"] / "_toc.yml").read_text()
    assert toc.index("chapters/scorecard") < toc.index("methods/datasets")


def test_pages_render_in_headless_chromium(smoke_book):
    from io import BytesIO

    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    pages = _pages(smoke_book)
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        failed, outside = [], []
        page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
        for path in pages:
            failed.clear()
            outside.clear()
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(300)  # MathJax typesets after load
            shot = Image.open(BytesIO(page.screenshot(full_page=True))).convert("L")
            if shot.size[1] < 300 or ImageStat.Stat(shot).stddev[0] < 5:
                problems.append(f"{path.name}: blank screenshot {shot.size}")
            broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
            if failed or outside or broken:
                problems.append(f"{path.name}: failed={failed} external={outside} broken images={broken}")
            if path.parent.name == "chapters" and path.stem in {nb.stem for nb in smoke_book["notebooks"]}:
                if page.locator("figure img").count() < 1:
                    problems.append(f"{path.name}: no figure")
                visible = page.inner_text("main")
                if "from_notebook(" in visible or "overrides = {}" in visible or "cxr run" not in visible:
                    problems.append(f"{path.name}: plumbing visible or no rerun command")
            if path.name == "models.html" and page.locator("mjx-container").count() < 3:
                problems.append("models.html: MathJax did not typeset the equations")
        browser.close()
    assert problems == []


@pytest.mark.slow
def test_interrupted_book_build_resumes(tmp_path, monkeypatch):
    """Ctrl-C during `cxr book` (second notebook running): the first notebook's finished run is not
    recomputed by the next build, the interrupted one leaves nothing behind and is rerun."""
    import signal
    import subprocess
    import sys
    import time

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for name in ("01_tiny", "02_tiny"):
        shutil.copy(FIXTURES / "notebooks" / "01_tiny.ipynb", nbs / f"{name}.ipynb")
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "chapters"))
    runs, hold = tmp_path / "runs", tmp_path / "hold"
    hold.write_text("")
    env = {**os.environ, "CXR_CACHE_DIR": str(tmp_path / "cache"), "CXR_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
           "CXR_TEST_HOLD": str(hold), "CXR_TEST_HOLD_NOTEBOOK": "02_tiny"}
    args = [sys.executable, "-m", "cxrlib.cli", "book", "--profile", "smoke", "--no-pdf", "--book-dir", str(book),
            "--notebooks-dir", str(nbs), "--runs-dir", str(runs)]
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    # start_run creates figures/ in the staging folder: the second notebook is then running (and held)
    while time.time() < deadline and not list((runs / "02_tiny").glob(".smoke-*.staging-*/figures")):
        time.sleep(0.2)
    assert time.time() < deadline, "the second notebook never started"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 130
    (first,) = [p for p in (runs / "01_tiny").iterdir() if not p.name.startswith(".")]
    assert execution.is_complete(first)
    assert [p for p in (runs / "02_tiny").iterdir() if not p.name.endswith(".lock")] == []
    finished = (first / "run.json").read_bytes()

    hold.unlink()
    monkeypatch.setenv("CXR_CACHE_DIR", env["CXR_CACHE_DIR"])
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.syspath_prepend(str(FIXTURES))
    result = book_builder.build_book("smoke", book=book, notebooks_dir=nbs, runs_dir=runs, pdf=False)
    assert [(c["notebook"], c["status"]) for c in result.chapters] == [("01_tiny.ipynb", "up to date"), ("02_tiny.ipynb", "ran")]
    assert (first / "run.json").read_bytes() == finished  # the finished run was not recomputed
