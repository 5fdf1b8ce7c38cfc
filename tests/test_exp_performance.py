"""Chapter 9's per-stage breakdown of the book's wall time, from the run records a book build writes."""

import json

import pytest

from cxrlib.experiments import performance as PF


def _run(root, chapter, wall, events):
    d = root / chapter / "smoke-abc"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"wall_time_s": wall, "finished": "x"}))
    (d / "provenance.json").write_text(json.dumps({"cache_events": events}))


def test_stage_times_split_each_chapter_and_sum_to_its_wall_time(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    _run(tmp_path, "02_generators", 100.0, [
        {"key": "generator/a", "event": "miss", "seconds": 60.0}, {"key": "synthetic/b", "event": "miss", "seconds": 15.0},
        {"key": "synthetic/c", "event": "miss", "seconds": 5.0}, {"key": "classifier/d", "event": "hit", "seconds": 0.5},
        {"key": "featurestats/e", "event": "miss", "seconds": 2.0}])
    _run(tmp_path, "05_supplementation", 40.0, [{"key": "generator/a", "event": "hit", "seconds": 0.1},
                                                 {"key": "classifier/f", "event": "miss", "seconds": 30.0}])
    cfg = PF.Config.from_params(profile="smoke")
    st = PF.stage_times(cfg)
    gen = st[st.chapter == "02_generators"].set_index("stage")
    assert gen.loc["generator training", "seconds"] == 60.0 and gen.loc["sampling", "seconds"] == 20.0
    assert gen.loc["sampling", "artifacts"] == 2 and gen.loc["other cached work", "seconds"] == 2.0
    assert gen.loc[PF.REST, "seconds"] == pytest.approx(18.0)  # a hit is loading time: it stays in the rest
    sup = st[st.chapter == "05_supplementation"].set_index("stage")
    assert "generator training" not in sup.index  # produced by another chapter: a hit
    assert sup.loc["classifier training", "seconds"] == 30.0 and sup.loc[PF.REST, "seconds"] == pytest.approx(10.0)
    for ch, g in st.groupby("chapter"):
        assert g.seconds.sum() == pytest.approx({"02_generators": 100.0, "05_supplementation": 40.0}[ch])
    assert len(PF.plot_stage_times(st).axes) == 1
    assert PF.stage_times(cfg, PF.chapter_times(cfg).iloc[:0]).empty


def test_worker_events_are_counted_as_their_share_of_the_wall_time():
    from cxrlib import cache

    before = len(cache.events())
    cache.record_events([{"key": "classifier/a", "event": "miss", "seconds": 100.0},
                         {"key": "classifier/b", "event": "miss", "seconds": 100.0}], wall_share=0.55)
    new = cache.events()[before:]
    del cache._EVENTS[before:]  # leave this process's record as it was
    assert [e["seconds"] for e in new] == [55.0, 55.0] and [e["worker_seconds"] for e in new] == [100.0, 100.0]
    assert all(e["worker"] for e in new)


def test_executor_text_reports_the_measured_speed_up_or_why_not():
    import pandas as pd

    rows = pd.DataFrame([{"benchmark": "classifier grid", "setting": "local:2 speed-up over serial", "value": 1.234, "unit": "x"}])
    assert "**1.23×**" in PF.executor_text(rows) and '"local:2"' in PF.executor_text(rows)
    assert "was not run" in PF.executor_text(rows.iloc[:0])


BENCH_ROWS = [{"benchmark": "classifier training", "setting": "small_cnn 32px batch 64", "value": 250.0, "unit": "images/s"},
              {"benchmark": "generator training", "setting": "smoke recipe 32px batch 16", "value": 60.0, "unit": "images/s"},
              {"benchmark": "sampling", "setting": "ddim-5 32px", "value": 900.0, "unit": "image-steps/s"}]


def test_the_plan_of_a_profile_uses_the_chapters_own_rates_and_faces_the_measured_times():
    import pandas as pd

    plans = PF.profile_plans(pd.DataFrame(BENCH_ROWS), profiles=("smoke",))
    assert set(plans.profile) == {"smoke"} and "09_performance" not in set(plans.chapter)  # nothing to plan
    assert {"01_data", "03_imbalance", "05_supplementation", "08_img2img"} <= set(plans.chapter)
    assert (plans.hours > 0).all() and (plans.pflop > 0).all()
    faster = PF.profile_plans(pd.DataFrame([{**r, "value": 2 * r["value"]} for r in BENCH_ROWS]), profiles=("smoke",))
    assert faster.hours.sum() == pytest.approx(plans.hours.sum() / 2)  # the measured rates, not make bench's
    assert "At `smoke` the book plans" in PF.plans_text(plans)
    times = pd.DataFrame({"chapter": ["03_imbalance", "99_unplanned"], "wall_time_s": [7200.0, 10.0]})
    check = PF.plan_vs_measured(plans, times, "smoke")
    assert check.index.tolist() == ["03_imbalance"]
    planned = plans.set_index("chapter").loc["03_imbalance", "hours"]
    assert check.loc["03_imbalance", "measured_over_planned"] == pytest.approx(2.0 / planned)


def test_the_peer_benchmark_measures_both_loops_in_one_process_and_its_ratios_follow_from_them():
    from cxrlib import bench

    rows = {r["setting"]: r["value"] for r in bench.bench_peer(profile="smoke", steps=2)}
    plain, ours = rows["plain diffusers loop, smoke recipe 32px batch 16"], rows["cxrlib loop, smoke recipe 32px batch 16"]
    assert plain > 0 and ours > 0 and rows["GEMM 2048x2048 float32"] > 0
    assert rows["cxrlib loop speed over the plain diffusers loop"] == pytest.approx(ours / plain)
    achieved = rows["cxrlib loop achieved FLOP/s of GEMM"] / rows["plain diffusers loop achieved FLOP/s of GEMM"]
    assert achieved == pytest.approx(ours / plain)  # the same FLOPs per step: the fractions differ as the speeds


def test_peer_text_quotes_the_measured_ratios_and_the_targets():
    import pandas as pd

    rows = [("GEMM 2048x2048 float32", 0.32), ("cxrlib loop speed over the plain diffusers loop", 1.02),
            ("cxrlib loop achieved FLOP/s of GEMM", 51.9), ("plain diffusers loop achieved FLOP/s of GEMM", 51.0)]
    text = PF.peer_text(pd.DataFrame([{"benchmark": "peer", "setting": s, "value": v} for s, v in rows]))
    assert "1.02x" in text and "52 %" in text and "0.32 TFLOP/s" in text and "target: 70 %" in text
