"""The GitHub workflows and the published book's launch buttons, checked without running either.

ci.yml runs `bash .ci/run` (the README's `make test`); book.yml builds the smoke book with launch
buttons for this repository and deploys it to GitHub Pages. Every action is pinned to a commit.
The launch buttons come from an explicit option (cxrlib.book.publish_config): without it the book
stays offline (tests/test_book.py), with it the chapters link to Binder and Colab.
"""

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cxrlib import book as book_builder
from cxrlib.errors import UserError
from cxrlib.utils import project_root

ROOT = project_root()
WORKFLOWS = ROOT / ".github" / "workflows"
SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
REPOSITORY = "https://github.com/example-org/cxr-study"


def _load(name: str) -> dict:
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def _runs(wf: dict) -> list[str]:
    return [line.strip() for s in _steps(wf) for line in str(s.get("run", "")).splitlines() if line.strip()]


def _commands(script: str) -> list[str]:
    return [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _readme_test_command() -> str:
    """The command the README's "Two commands" block gives for the tests (`make test`)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [ln.split("#", 1)[0].strip() for ln in block.splitlines()]
    (command,) = [ln for ln in lines if ln.startswith("make") and "test" in shlex.split(ln)]
    return command


def test_ci_runs_the_ci_script_on_push_and_pull_request():
    wf = _load("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    assert wf["permissions"] == {"contents": "read"}
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] == 90
    python = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python@")]
    assert [s["with"]["python-version"] for s in python] == ["3.11"]
    assert [s["run"].strip() for s in job["steps"] if "run" in s] == ["bash .ci/run"]
    (cache,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
    assert cache["with"]["path"] == "~/.cache/pip" and "hashFiles('requirements.lock')" in cache["with"]["key"]
    assert job["steps"].index(cache) < next(i for i, s in enumerate(job["steps"]) if "run" in s)


def test_ci_script_runs_the_readme_test_command():
    command = _readme_test_command()
    assert command == "make test"
    assert command in _commands((ROOT / ".ci" / "run").read_text())
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\binstall\b", makefile, flags=re.M)  # make test creates .venv and installs the lock
    assert "-r requirements.lock" in makefile


@pytest.mark.parametrize("name", ["ci.yml", "book.yml"])
def test_every_action_is_pinned_to_a_commit(name):
    text = (WORKFLOWS / name).read_text()
    uses = [s["uses"] for s in _steps(_load(name)) if "uses" in s]
    assert uses
    for action in uses:
        assert SHA_PIN.match(action), action
        # the line carries the release the commit is, for humans and update bots
        assert re.search(rf"uses: {re.escape(action)} # v\d+\.\d+\.\d+\s*$", text, flags=re.M), action
    assert len(re.findall(r"^\s*-?\s*uses:", text, flags=re.M)) == len(uses)


def test_book_workflow_builds_the_smoke_book_with_launch_buttons_and_deploys_pages():
    wf = _load("book.yml")
    assert wf["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["group"] == "pages"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert build["runs-on"] == "ubuntu-latest"

    (step,) = [s for s in build["steps"] if "make book" in str(s.get("run", ""))]
    assert step["run"].strip() == "make book PROFILE=smoke"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PROFILE \?=", makefile, flags=re.M) and "cxr book --profile $(PROFILE)" in makefile
    assert "smoke" in book_builder.PROFILE_NAMES
    assert step["env"][book_builder.REPOSITORY_ENV] == "${{ github.server_url }}/${{ github.repository }}"
    assert step["env"][book_builder.BRANCH_ENV] == "${{ github.ref_name }}"
    assert any("apt-get install" in r and "chromium" in r for r in _runs(wf))

    (upload,) = [s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-pages-artifact@")]
    assert upload["with"]["path"] == "book/_build/html"
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


def test_cli_reads_the_repository_from_the_environment(monkeypatch):
    import argparse

    def parse(*argv):
        parser = argparse.ArgumentParser()
        book_builder.register_cli(parser.add_subparsers())
        return parser.parse_args(["book", *argv])

    monkeypatch.delenv(book_builder.REPOSITORY_ENV, raising=False)
    monkeypatch.delenv(book_builder.BRANCH_ENV, raising=False)
    args = parse()
    assert args.repository_url is None and args.repository_branch == "main"
    monkeypatch.setenv(book_builder.REPOSITORY_ENV, REPOSITORY)
    monkeypatch.setenv(book_builder.BRANCH_ENV, "release")
    args = parse()
    assert (args.repository_url, args.repository_branch) == (REPOSITORY, "release")
    assert parse("--repository-url", "https://github.com/a/b").repository_url == "https://github.com/a/b"


def test_publish_config_gives_launch_buttons_for_a_repository():
    cfg = book_builder.publish_config(REPOSITORY + ".git/", "main")
    assert cfg["repository"] == {"url": REPOSITORY, "path_to_book": "book", "branch": "main"}
    assert cfg["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["html"]["use_repository_button"] is True
    theme = cfg["sphinx"]["config"]["html_theme_options"]
    assert theme["repository_url"] == REPOSITORY and theme["path_to_docs"] == "book"
    assert theme["launch_buttons"] == cfg["launch_buttons"] and theme["use_repository_button"] is True


@pytest.mark.parametrize("url", [None, "", "   "])
def test_publish_config_is_empty_without_a_repository(url):
    assert book_builder.publish_config(url) == {}


def test_offline_config_has_no_repository_or_launch_service():
    cfg = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert not cfg["repository"]["url"] and not cfg["html"]["use_repository_button"]
    launch = cfg["launch_buttons"]
    assert not any(v for k, v in launch.items() if k.endswith("_url")) and not launch["thebe"]
    assert not re.search(r"https?://", (ROOT / "book" / "_config.yml").read_text().split("\nsphinx:")[1])


@pytest.mark.parametrize("url", [
    "github.com/example-org/cxr-study", "http://github.com/example-org/cxr-study", "https://gitlab.com/a/b",
    "https://github.com/example-org", "https://github.com/example-org/cxr-study/tree/main", "https://github.com/a/..",
    "https://github.com/-bad/repo", "https://github.com/a b/c", "https://github.com/a/b?x=1",
])
def test_publish_config_rejects_a_malformed_repository_url(url):
    with pytest.raises(UserError, match=r"--repository-url / \$CXR_BOOK_REPOSITORY must be a GitHub repository"):
        book_builder.publish_config(url)


@pytest.mark.parametrize("branch", ["-x", "a..b", "a b", "/main"])
def test_publish_config_rejects_a_malformed_branch(branch):
    with pytest.raises(UserError, match=r"--repository-branch / \$CXR_BOOK_BRANCH"):
        book_builder.publish_config(REPOSITORY, branch)


def test_publish_config_file_adds_the_buttons_to_the_book_config(tmp_path):
    book = ROOT / "book"
    out = book_builder.write_publish_config(book, book_builder.publish_config(REPOSITORY), tmp_path / "_config.yml")
    offline, published = yaml.safe_load((book / "_config.yml").read_text()), yaml.safe_load(out.read_text())
    assert published["title"] == offline["title"] and published["parse"] == offline["parse"]
    assert published["repository"]["url"] == REPOSITORY
    assert published["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    theme = published["sphinx"]["config"]["html_theme_options"]
    assert theme["icon_links"] == [] and theme["repository_url"] == REPOSITORY  # the book's own options kept
    assert Path(published["sphinx"]["local_extensions"]["cxrbook"]) == (book / "_ext").resolve()
    assert published["sphinx"]["extra_extensions"] == ["cxrlib.book"]
    assert offline == yaml.safe_load((book / "_config.yml").read_text())  # the offline config is untouched


def test_launch_buttons_open_the_repositorys_notebooks():
    """sphinx-book-theme makes the launch links for book/chapters/NN_name.ipynb (generated, not in the
    repository); the published build's hook points them at notebooks/NN_name.ipynb."""
    from sphinx_book_theme.header_buttons import update_context_with_repository_info
    from sphinx_book_theme.header_buttons.launch import add_launch_buttons

    theme = book_builder.publish_config(REPOSITORY, "main")["sphinx"]["config"]["html_theme_options"]

    class Config(dict):
        html_theme_options = theme
        html_context: dict = {}

    page = "chapters/03_example"
    app = SimpleNamespace(config=Config(html_theme_options=theme), builder=None,
                          env=SimpleNamespace(doc2path=lambda name: f"/src/book/{name}.ipynb",
                                              metadata={page: {"kernelspec": {"name": "python3"}}}))
    update_context_with_repository_info(app)
    context = {**app.config.html_context, "pagename": page, "sourcename": f"{page}.ipynb", "header_buttons": []}
    add_launch_buttons(app, page, "page.html", context, None)
    book_builder._launch_repository_notebooks(app, page, "page.html", context, None)
    (group,) = [g for g in context["header_buttons"] if g.get("label") == "launch-buttons"]
    urls = {b["text"]: b["url"] for b in group["buttons"]}
    assert urls == {
        "Binder": "https://mybinder.org/v2/gh/example-org/cxr-study/main?urlpath=tree/notebooks/03_example.ipynb",
        "Colab": "https://colab.research.google.com/github/example-org/cxr-study/blob/main/notebooks/03_example.ipynb",
    }
    assert (ROOT / "notebooks").is_dir()
    other = "https://x/blob/main/book/chapters/status.md"
    assert book_builder.notebook_launch_url(other) == other
