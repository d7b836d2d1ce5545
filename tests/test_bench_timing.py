"""The timing loop and the summary rows, on a fake timer (exact numbers) and a real one."""
import statistics
import time

import numpy as np
import pytest

from harness.kinds.bench.costs import floor_ms
from harness.kinds.bench.summary import timing_summary_rows
from harness.kinds.bench.timing import CpuTimer, iqr, measure, median
from harness.kinds.bench.workload import Workload
from harness.cells import CellContext, CellTimeout
from harness.kinds.bench.testing import FakeTimer, by_metric


def test_median_and_iqr_match_numpy_on_random_samples():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30):
        xs = list(rng.exponential(3.0, size=n))
        assert median(xs) == pytest.approx(float(np.median(xs)))
        assert iqr(xs) == pytest.approx(float(np.percentile(xs, 75) - np.percentile(xs, 25)))
    assert iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(2.0)   # 4 - 2: robust to the outlier


def test_measure_runs_warmup_untimed_then_one_time_per_repeat():
    calls = []
    timer = FakeTimer([5.0, 1.0, 3.0, 2.0])
    times = list(measure(lambda: calls.append(1), timer, warmup=2, repeats=4))
    assert times == [5.0, 1.0, 3.0, 2.0]
    assert len(calls) == 6 and timer.calls == 4


def test_summary_rows_from_fake_times():
    times = [4.0, 1.0, 3.0, 2.0, 10.0]
    work = Workload(fn=lambda: None, tokens=1000, bytes=3e6, flops=2e9)
    rows = by_metric(timing_summary_rows(times, work, {"bytes_per_s": 1e12, "flops_per_s": 1e12}))
    med = statistics.median(times)
    assert rows["time_ms_median"][0]["value"] == med == 3.0
    assert rows["time_ms_iqr"][0]["value"] == pytest.approx(4.0 - 2.0)
    assert rows["tokens_per_s"][0]["value"] == pytest.approx(1000 / 3e-3)
    assert rows["achieved_GBps"][0]["value"] == pytest.approx(3e6 / 3e-3 / 1e9)
    assert rows["achieved_TFLOPs"][0]["value"] == pytest.approx(2e9 / 3e-3 / 1e12)
    # floors: memory 3e6/1e12 s = 0.003 ms, compute 2e9/1e12 s = 2 ms -> compute-bound
    assert rows["roofline_floor_ms"][0]["value"] == pytest.approx(2.0)
    assert rows["roofline_fraction"][0]["value"] == pytest.approx(2.0 / 3.0)
    assert rows["roofline_fraction"][0]["bound"] == "compute"
    assert all(r["unit"] == "ms" for r in rows["time_ms_median"] + rows["time_ms_iqr"])


def test_summary_without_declared_costs_has_no_roofline():
    rows = by_metric(timing_summary_rows([1.0, 2.0], Workload(lambda: None, tokens=10), {"bytes_per_s": 1e9}))
    assert set(rows) == {"time_ms_median", "time_ms_iqr", "tokens_per_s"}


def test_floor_picks_the_binding_resource_and_ignores_unknown_ceilings():
    t, bound = floor_ms({"bytes": 1e9, "flops": None, "exps": 1e10}, {"bytes_per_s": 1e12, "exps_per_s": 4e12})
    assert bound == "exp" and t == pytest.approx(2.5)
    t, bound = floor_ms({"bytes": 1e9, "exps": 1e10}, {"bytes_per_s": 1e12, "exps_per_s": None})
    assert bound == "memory" and t == pytest.approx(1.0)


def test_cpu_timer_measures_a_sleep():
    ms = CpuTimer()(lambda: time.sleep(0.02))
    assert 15.0 <= ms < 1000.0


def test_deadline_stops_before_a_call_that_cannot_fit():
    ctx = CellContext(deadline=time.monotonic() + 0.25)
    got = []
    with pytest.raises(CellTimeout, match="only"):
        for ms in measure(lambda: time.sleep(0.1), CpuTimer(), warmup=1, repeats=50, ctx=ctx):
            got.append(ms)
    # warm-up 0.1 s, then at most one timed call fits before the estimate (0.1 s) exceeds what is left
    assert 0 <= len(got) <= 2


def test_deadline_already_passed():
    ctx = CellContext(deadline=time.monotonic() - 1)
    with pytest.raises(CellTimeout):
        list(measure(lambda: None, CpuTimer(), warmup=0, repeats=3, ctx=ctx))
