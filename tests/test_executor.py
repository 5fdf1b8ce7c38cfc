"""The grid executor: serial, local processes, Dask (a tiny LocalCluster) and SLURM construction."""

import os
from pathlib import Path

import pytest

from cxrlib import cache
from cxrlib.executor import CellError, parse_executor, run_grid, slurm_cluster


def square_plus(x: int, y: int = 0) -> int:
    return x * x + y


def current_pid() -> int:
    return os.getpid()


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def cached_cell(name: str, log: str, root: str) -> str:
    """An idempotent cell: produces its artifact through the cache; logs each real production."""
    k = cache.key("cell", {"name": name})

    def produce(d: Path):
        with open(log, "a") as f:
            f.write(f"{name}\n")
        (d / "out.txt").write_text(name)

    return (cache.Cache(root).get_or_create(k, produce) / "out.txt").read_text()


def test_parse_executor():
    assert parse_executor("local") == ("local", None)
    assert parse_executor("local:3") == ("local", 3)
    assert parse_executor("serial") == ("serial", None)
    assert parse_executor("tcp://10.0.0.1:8786") == ("dask", "tcp://10.0.0.1:8786")
    assert parse_executor("dask://node:8786") == ("dask", "tcp://node:8786")
    for bad in ("locl", "local:0", "slurm"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_executor(bad)


def test_serial_and_local_processes_return_results_in_grid_order():
    cells = [{"x": x, "y": 1} for x in range(5)]
    expected = [x * x + 1 for x in range(5)]
    assert run_grid(square_plus, cells, executor="serial") == expected
    assert run_grid(square_plus, cells, executor="local:2") == expected


def test_failing_cell_is_named():
    with pytest.raises(CellError, match=r"fails_on_three\(x=3\).*three is not allowed"):
        run_grid(fails_on_three, [{"x": x} for x in range(5)], executor="serial")


def test_cells_are_idempotent_through_the_cache_across_workers(tmp_path):
    log = tmp_path / "produced.log"
    root = tmp_path / "cache"
    # Four cells, two distinct artifacts, two worker processes: each artifact is produced once.
    cells = [{"name": n, "log": str(log), "root": str(root)} for n in ("a", "b", "a", "b")]
    assert run_grid(cached_cell, cells, executor="local:2") == ["a", "b", "a", "b"]
    assert sorted(log.read_text().split()) == ["a", "b"]
    # Running the grid again (e.g. after an interrupt) produces nothing.
    assert run_grid(cached_cell, cells, executor="serial") == ["a", "b", "a", "b"]
    assert sorted(log.read_text().split()) == ["a", "b"]


def test_dask_scheduler_address(tmp_path):
    from distributed import LocalCluster

    log = tmp_path / "produced.log"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        assert run_grid(square_plus, [{"x": x} for x in range(6)], executor=address) == [x * x for x in range(6)]
        cells = [{"name": n, "log": str(log), "root": str(tmp_path / "cache")} for n in ("a", "a", "b")]
        assert run_grid(cached_cell, cells, executor=address) == ["a", "a", "b"]
        assert sorted(log.read_text().split()) == ["a", "b"]
        with pytest.raises(CellError, match=r"x=3"):
            run_grid(fails_on_three, [{"x": x} for x in range(5)], executor=address)


def test_slurm_cluster_is_constructed_with_gpu_directives():
    pytest.importorskip("dask_jobqueue")
    cluster = slurm_cluster(cores=4, memory="16GB", gpus=2, walltime="01:30:00", queue="gpu", account="lab",
                            jobs=0, scheduler_options={"dashboard_address": None})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:2" in script
    assert "#SBATCH -p gpu" in script and "#SBATCH -A lab" in script and "#SBATCH -t 01:30:00" in script
    assert "--nthreads 4" in script or "--nworkers 1" in script


def test_local_with_one_usable_core_or_one_cell_runs_in_this_process(monkeypatch):
    import cxrlib.executor as E

    monkeypatch.setattr(E, "usable_cores", lambda: 1)
    assert run_grid(current_pid, [{}, {}], executor="local") == [os.getpid()] * 2
    monkeypatch.setattr(E, "usable_cores", lambda: 4)
    assert run_grid(current_pid, [{}], executor="local") == [os.getpid()]
