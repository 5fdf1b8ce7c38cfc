"""`cxr run`: parameter validation, run folders, provenance, citable figures, resume and cache reuse.

Executions use the tiny fixture notebook (tests/fixtures/notebooks/01_tiny.ipynb, ~8 s each).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cxrlib import book as book_builder, execution, notebook_params, run_context
from cxrlib.cli import main as cxr_main

FIXTURES = Path(__file__).parent / "fixtures"
NB = FIXTURES / "notebooks" / "01_tiny.ipynb"


@pytest.fixture
def fixture_env(tmp_path, monkeypatch, cache_dir):
    """The fixture experiment importable here and in the notebook's kernel; isolated runs folder."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]))
    runs = tmp_path / "runs"
    monkeypatch.setenv("CXR_RUNS_DIR", str(runs))
    return runs


def test_yaml_literal_values_and_param_files(tmp_path, fixture_env):
    assert notebook_params.parse_value("1") == 1
    assert notebook_params.parse_value("1e-3") == pytest.approx(1e-3)  # YAML 1.1 alone would give a string
    assert notebook_params.parse_value("0.5") == 0.5
    assert notebook_params.parse_value("true") is True
    assert notebook_params.parse_value("[1, 2]") == [1, 2]
    assert notebook_params.parse_value("cuda:0") == "cuda:0"
    assert notebook_params.parse_value("null") is None
    # a text field keeps the text as typed ("yes" is not YAML's True for it); a number field does not
    spec = notebook_params.read_notebook(NB)
    _, injected = notebook_params.resolve_config(spec, {"hold_file": True, "gen_steps": 5}, "smoke",
                                        raw={"hold_file": "yes", "gen_steps": "5"})
    assert injected["hold_file"] == "yes" and injected["gen_steps"] == 5
    f = tmp_path / "p.yaml"
    f.write_text("seed: 3\nclf_lr: 2e-2\n")
    assert notebook_params.collect_params([("seed", "4")], [str(f)]) == {"seed": 4, "clf_lr": pytest.approx(0.02)}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-p", "no_such_param", "1"], ["unknown parameter 'no_such_param'", "Valid parameters:", "clf_lr", "gen_steps"]),
        (["-p", "clf_lrr", "0.1"], ["unknown parameter 'clf_lrr'", "Did you mean 'clf_lr'"]),
        (["-p", "gen_steps", "ten"], ["parameter 'gen_steps'", "expected an integer", "'ten'"]),
        (["-p", "profile", "smoke", "--profile", "cpu"], ["profile given twice"]),
    ],
)
def test_bad_parameters_exit_nonzero_naming_them(fixture_env, capsys, args, expected):
    assert cxr_main(["run", str(NB), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr: error:") and len(err.strip().splitlines()) == 1
    for text in expected:
        assert text in err
    assert not fixture_env.exists()  # nothing was executed


def test_notebook_contract_is_checked(tmp_path, fixture_env):
    nb = nbformat.read(NB, as_version=4)
    bad = tmp_path / "01_bad.ipynb"
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    original = cell.source
    # the cell need not list every field: the others come from the profile or `overrides`
    cell.source = original.replace("n_points = None\n", "")
    nbformat.write(nb, bad)
    assert "n_points" not in notebook_params.read_notebook(bad).parameter_names
    for source, message in [
        (original + "\nn_pointz = 3", r"not config fields: \['n_pointz'\]"),
        (original.replace("overrides = {}", "overrides = {'clf_lrr': 0.1}"), r"unknown parameter 'clf_lrr'.*Did you mean 'clf_lr'"),
        (original.replace("overrides = {}", "overrides = [1]"), "must be a mapping"),
        (original + "\nimport os", "may hold only assignments"),
        (original.replace('hold_file = ""', "hold_file = str(1)"), "'hold_file' of the parameters cell is not a literal"),
    ]:
        cell.source = source
        nbformat.write(nb, bad)
        with pytest.raises(ValueError, match=message):
            notebook_params.read_notebook(bad)
    cell.source = original
    del nb.metadata["cxrlib"]
    nbformat.write(nb, bad)
    with pytest.raises(ValueError, match="cxrlib.config"):
        notebook_params.read_notebook(bad)


def test_any_config_field_is_a_parameter_once(fixture_env):
    """A field the parameters cell does not list can be set by -p, by `overrides` or in a -f file's
    `overrides:`; all three resolve the same config. Given twice, it is an error naming it."""
    spec = notebook_params.read_notebook(NB)
    assert "clf_lr" not in spec.parameter_names
    direct, injected = notebook_params.resolve_config(spec, {"clf_lr": 0.5}, "smoke")
    nested, _ = notebook_params.resolve_config(spec, {"overrides": {"clf_lr": 0.5}}, "smoke")
    assert direct.clf_lr == 0.5 and direct.hash() == nested.hash()
    # the notebook resolves the same config from its namespace: the cell, then papermill's variables
    in_kernel = spec.config_cls.from_notebook({**spec.cell, **injected})
    assert in_kernel.hash() == direct.hash()
    via_overrides = spec.config_cls.from_notebook({**spec.cell, "profile": "smoke", "overrides": {"clf_lr": 0.5}})
    assert via_overrides.hash() == direct.hash()
    with pytest.raises(ValueError, match="'clf_lr' is given twice"):
        spec.config_cls.from_notebook({**spec.cell, "clf_lr": 0.5, "overrides": {"clf_lr": 0.4}})
    with pytest.raises(ValueError, match="'clf_lr' is given twice"):
        notebook_params.resolve_config(spec, {"clf_lr": 0.5, "overrides": {"clf_lr": 0.4}}, "smoke")


def test_run_folder_contents_rerun_and_cache_reuse(fixture_env, capsys):
    # 1. First run: everything is produced.
    r1 = execution.run_notebook(NB, {"seed": 1}, profile="smoke", progress=False)
    spec = notebook_params.read_notebook(NB)
    cfg, _ = notebook_params.resolve_config(spec, {"seed": 1}, "smoke")
    assert r1.status == "ran" and r1.run_dir == fixture_env / "01_tiny" / f"smoke-{cfg.hash()}"
    d = r1.run_dir
    assert execution.is_complete(d)
    for name in ("01_tiny.ipynb", "config.json", "provenance.json", "results.csv", "run.json"):
        assert (d / name).is_file(), name
    assert json.loads((d / "config.json").read_text()) == cfg.to_dict()
    prov = json.loads((d / "provenance.json").read_text())
    for field in ("git", "packages", "data_manifests", "profile", "wall_time_s", "device", "hostname", "python"):
        assert field in prov, field
    assert prov["profile"] == "smoke" and prov["wall_time_s"] > 0 and prov["packages"]["torch"]
    assert [e["event"] for e in prov["cache_events"]] == ["miss"]
    assert 0.05 < json.loads((d / "run.json").read_text())["peak_rss_gb"] < 8  # a kernel with torch imported: >50 MB
    # The run depends on the code its kernel imported: the run context, not the runner or the book
    # builder (an edit to the PDF flags must not make every chapter stale).
    code = {Path(p).name for p in json.loads((d / "run.json").read_text())["inputs"]["code"]}
    assert "run_context.py" in code and "config.py" in code
    assert not code & {"execution.py", "book.py", "notebook_params.py", "cli.py", "runner.py"}, code
    # 2. The citable figure: PNG at 300 dpi, PDF, SVG, and its JSON record with the cite line.
    from PIL import Image

    with Image.open(d / "figures" / "line.png") as im:
        assert round(im.info["dpi"][0]) == 300
    assert (d / "figures" / "line.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (d / "figures" / "line.svg").read_bytes()[:500]
    rec = json.loads((d / "figures" / "line.json").read_text())
    assert rec["figure_id"] == "01_tiny/line" and rec["params"]["seed"] == 1
    assert "01_tiny/line" in rec["cite"] and "version 0.1.0" in rec["cite"] and "doi:10.5281/zenodo" in rec["cite"]
    assert rec["provenance"]["profile"] == "smoke"
    # 3. Same parameters again: complete and unchanged, so nothing runs.
    assert cxr_main(["run", str(NB), "--profile", "smoke", "-p", "seed", "1"]) == 0
    assert "up to date" in capsys.readouterr().out
    # 4. Only a classifier parameter changed: a new run folder, the cached generator is reused.
    r2 = execution.run_notebook(NB, {"seed": 1, "clf_lr": 0.5}, profile="smoke", progress=False)
    assert r2.run_dir != r1.run_dir
    prov2 = json.loads((r2.run_dir / "provenance.json").read_text())
    assert [e["event"] for e in prov2["cache_events"]] == ["hit"]
    assert prov2["cache_events"][0]["key"] == prov["cache_events"][0]["key"]


def test_python_m_cli_prints_one_line_errors(fixture_env):
    """`python -m cxrlib.cli` runs cli.py as __main__: a failing notebook and a bad parameter are still
    one `cxr: error:` line with exit code 2, not a traceback (the error classes live in cxrlib.errors)."""
    for extra in (["-p", "gen_steps", "0"], ["-p", "gen_stepz", "3"]):
        proc = subprocess.run([sys.executable, "-m", "cxrlib.cli", "run", str(NB), "--profile", "smoke", *extra],
                              capture_output=True, text=True, env=os.environ.copy(), timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "cxr: error:" in proc.stderr


def test_failing_notebook_names_the_cell_and_keeps_no_run(fixture_env, capsys):
    # gen_steps=0 passes validation but the notebook indexes an empty array.
    assert cxr_main(["run", str(NB), "--profile", "smoke", "-p", "gen_steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "01_tiny.ipynb failed" in err and "IndexError" in err and ".failed" in err
    folders = [p.name for p in (fixture_env / "01_tiny").iterdir() if not p.name.endswith(".lock")]
    assert len(folders) == 1 and folders[0].endswith(".failed")


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["kill", "ctrl-c"])
def test_killed_run_is_never_served_and_rerun_resumes_from_cache(fixture_env, tmp_path, sig):
    """Kill `cxr run` mid-notebook (SIGKILL, or Ctrl-C = SIGINT to its process group); the rerun
    recomputes only what was unfinished."""
    hold = tmp_path / "hold"
    hold.write_text("")
    args = [sys.executable, "-m", "cxrlib.cli", "run", str(NB), "--profile", "smoke", "-p", "hold_file", str(hold)]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "CXR_NO_PROGRESS": "1"})
    gen_root = Path(os.environ["CXR_CACHE_DIR"]) / "tinygen"
    deadline = time.time() + 120
    while not (gen_root.is_dir() and any(gen_root.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    assert gen_root.is_dir(), "the notebook never produced its generator"
    time.sleep(0.5)
    os.killpg(proc.pid, sig)  # the runner dies mid-run (or cleans up and exits, on Ctrl-C) ...
    assert proc.wait(60) == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    time.sleep(2.5)  # ... and its kernel (own session) notices within ~1 s and exits (ipykernel's parent poller)
    nb_dir = fixture_env / "01_tiny"
    finals = [p for p in nb_dir.iterdir() if not p.name.startswith(".")]
    assert finals == []  # the half-written run is only a hidden staging folder, never a run folder
    if sig == signal.SIGKILL:  # no chance to clean up: a hidden staging folder is left for the next run
        assert any(p.name.startswith(".smoke-") and ".staging-" in p.name for p in nb_dir.iterdir())
    else:
        assert not any(".staging-" in p.name for p in nb_dir.iterdir())

    hold.unlink()
    r = execution.run_notebook(NB, {"hold_file": str(hold)}, profile="smoke", progress=False)
    assert r.status == "ran" and execution.is_complete(r.run_dir)
    prov = json.loads((r.run_dir / "provenance.json").read_text())
    assert [e["event"] for e in prov["cache_events"]] == ["hit"]  # the finished generator was reused
    assert not any(".staging-" in p.name for p in nb_dir.iterdir())  # leftovers removed


def test_start_run_by_hand_computes_the_same_folder(fixture_env):
    import tiny_experiment as tiny

    cfg = tiny.Config.from_params(profile="smoke", seed=2)
    ctx = run_context.start_run(cfg, notebook="01_tiny")
    assert ctx.dir == run_context.run_dir_for("01_tiny", cfg)
    assert json.loads((ctx.dir / "config.json").read_text())["seed"] == 2
    assert json.loads((ctx.dir / "provenance.json").read_text())["runner"] == "interactive"
    assert not execution.is_complete(ctx.dir)  # a hand run is never taken for a finished runner run


def test_figure_files_are_byte_reproducible(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cxrlib.figures import save_figure

    records = []
    for run in ("a", "b"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [1, 0, 2])
        records.append(save_figure(fig, "curve", "A curve.", out_dir=tmp_path / run, params={"k": 1}))
        plt.close(fig)
    assert records[0]["files"] == records[1]["files"]  # same sha256 for the PNG, PDF and SVG
    with pytest.raises(ValueError, match="figure id"):
        save_figure(None, "Bad Id", "x", out_dir=tmp_path)
    with pytest.raises(ValueError, match="caption"):
        save_figure(None, "ok", " ", out_dir=tmp_path)


def test_book_chapters_drop_progress_bars_but_keep_warnings():
    text = ("/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and ipywidgets. "
            "See https://ipywidgets.readthedocs.io/en/stable/user_install.html\n"
            "  from .autonotebook import tqdm as notebook_tqdm\n"
            "\repoch 1/1:  10%|█         | 1/10 [00:03<00:28,  3.22s/batch, loss=0.7175]\n"
            "UserWarning: the validation set has no positive 'Fracture'\n")
    out = book_builder._without_progress(text)
    assert "UserWarning: the validation set" in out
    assert "http" not in out and "%|" not in out


def test_editing_plots_or_the_book_builder_recomputes_no_artifact(tmp_path, monkeypatch, cache_dir):
    """Cached artifacts depend on the code that computes them, not on plotting code or the book
    builder: rerunning a chapter after an edit to a plotting function of its experiment module
    recomputes no cached artifact (every cache event is a hit); the book builder and the runner are
    not among the code a run depends on at all."""
    fixtures = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, fixtures)
    monkeypatch.syspath_prepend(str(fixtures))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fixtures), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    nb = fixtures / "notebooks" / NB.name
    first = execution.run_notebook(nb, {"seed": 2}, profile="smoke", progress=False)
    code = json.loads((first.run_dir / "run.json").read_text())["inputs"]["code"]
    assert not {Path(p).name for p in code} & {"book.py", "execution.py", "notebook_params.py"}
    with open(fixtures / "tiny_experiment.py", "a") as f:
        f.write("\n\ndef plot_line(ax, x, y):\n    ax.plot(x, y, color='black')\n")
    # (this copy lives outside the project, whose files alone a run records: rerun it explicitly)
    again = execution.run_notebook(nb, {"seed": 2}, profile="smoke", progress=False, force=True)
    assert again.status == "ran"  # the chapter is redone with the edited module ...
    prov = json.loads((again.run_dir / "provenance.json").read_text())
    assert [e["event"] for e in prov["cache_events"]] == ["hit"]  # ... but nothing cached is recomputed


def test_peak_memory_follows_the_children_of_the_run():
    """The runner's memory probe sums the resident memory of a process and its descendants: a
    grandchild holding 300 MB shows in the peak, and a process that has ended reads as 0."""
    import subprocess
    import sys

    hold = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {hold!r}])"
    proc = subprocess.Popen([sys.executable, "-c", spawn])
    probe = execution.PeakMemory(proc.pid, every=0.1)
    proc.wait()
    peak = probe.stop()
    assert peak > 300 * 2**20
    assert execution.PeakMemory(proc.pid).stop() == 0 and probe.sample() == 0
