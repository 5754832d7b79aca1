"""core.results.analysis: the one step-function lookup, the step envelope, categories at a time (one
derivation for the series and for chosen times), and phase alignment, on synthetic runs (no Qt, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from vggexplorer.core.results.analysis import (
    aligned_times,
    categories_at_peak,
    category_levels_at,
    category_samples,
    category_series,
    level_at,
    peak_time,
    phase_intervals,
    run_offsets,
    step_at,
    step_envelope,
    step_index,
)
from vggexplorer.core.results.result import CATEGORIES
from vggexplorer.core.results.synthetic import synthetic_run

# ---- the step-function lookup


def test_step_lookup_holds_each_value_until_the_next_event() -> None:
    t = np.array([1.0, 2.0, 2.0, 4.0])
    v = np.array([10, 20, 25, 5], dtype=np.int64)
    at = np.array([0.5, 1.0, 1.5, 2.0, 3.9, 4.0, 9.0])
    assert step_index(t, at).tolist() == [-1, 0, 0, 2, 2, 3, 3]  # the last of equal times wins
    assert step_at(t, v, at).tolist() == [0, 10, 10, 25, 25, 5, 5]
    assert step_at(t, v, at, before=-1).tolist()[0] == -1
    assert step_at(np.zeros(0), np.zeros(0, np.int64), at, before=7).tolist() == [7] * len(at)
    assert step_at(t, v, at).dtype == np.int64


def test_level_at_is_the_same_lookup_for_one_time() -> None:
    t = np.array([1.0, 2.0, 4.0])
    y = np.array([10, 30, 20], dtype=np.int64)
    assert level_at(t, y, 0.99) is None
    assert level_at(np.zeros(0), np.zeros(0, np.int64), 1.0) is None
    for x in (1.0, 1.5, 2.0, 3.99, 4.0, 100.0):
        assert level_at(t, y, x) == float(step_at(t, y, [x])[0])


def test_step_envelope_is_exact_when_few_events_are_in_view() -> None:
    t = np.array([0.0, 1.0, 2.0, 5.0])
    y = np.array([10, 30, 20, 0], dtype=np.int64)
    xs, ys = step_envelope(t, y, 0.0, 5.0, 100)
    assert xs.tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 5.0, 5.0]
    assert ys.tolist() == [10, 10, 30, 30, 20, 20, 0]  # holds between events, no ramps


def test_step_envelope_keeps_peaks_and_stays_small() -> None:
    rng = np.random.default_rng(1)
    t = np.sort(rng.random(200_000)) * 10
    y = np.cumsum(rng.integers(-100, 101, len(t))).astype(np.int64)
    y[123_456] = y.max() + 10_000  # a one-event spike must survive
    xs, ys = step_envelope(t, y, 0.0, 10.0, 800)
    assert len(xs) <= 4 * 800 + 4
    assert ys.max() == y.max() and ys.min() == y.min()
    assert np.all(np.diff(xs) >= 0)


# ---- categories


@pytest.mark.parametrize("cuda", [False, True])
def test_category_series_and_levels_at_are_one_derivation(cuda: bool) -> None:
    r = synthetic_run(
        head="fcn", input_hw=128, batch=2, cuda=cuda, workspace_bytes=8 * 2**20, extra_events=400
    )
    t, series = category_series(r)
    at = category_levels_at(r, t)
    assert list(at) == list(CATEGORIES)
    derived = {"untracked_workspace", "allocator_overhead", "non_pytorch"}
    assert set(series) == set(CATEGORIES) if cuda else set(CATEGORIES) - {"allocator_overhead", "non_pytorch"}
    for c in CATEGORIES:
        if c in series:
            assert np.array_equal(series[c], at[c]), c
        else:
            assert c in derived and not at[c].any()  # absent from the series, zero at any time
    assert at["untracked_workspace"].max() >= 8 * 2**20  # the workspace lives at the allocator level only


def test_categories_at_peak_and_samples_include_the_peak() -> None:
    r = synthetic_run(head="fc", input_hw=96, batch=2, extra_events=5000)
    pk = peak_time(r)
    assert pk == float(r.allocator.t[r.allocator.peak_index])
    times, levels = category_samples(r, nbins=50)
    assert pk in times and len(times) <= 52
    i = int(np.searchsorted(times, pk))
    assert {c: int(levels[c][i]) for c in CATEGORIES} == categories_at_peak(r)
    rows = sum(categories_at_peak(r)[c] for c in CATEGORIES[:8])
    assert rows + categories_at_peak(r)["untracked_workspace"] == r.summary.peak_allocated_bytes


# ---- phases and alignment


def test_phase_intervals_and_run_alignment() -> None:
    a = synthetic_run(head="fc", input_hw=64, batch=1)
    b = synthetic_run(head="fc", input_hw=128, batch=4)
    assert [p for p, _, _ in phase_intervals(a)] == ["forward", "backward", "optimizer"]
    offs = run_offsets([a, b])
    assert offs[1] == 0.0 and len(offs) == 2
    t = np.array([s.t0 for s in a.spans if s.module == ""])
    mapped, ok = aligned_times(t, a, b)
    assert ok and mapped.tolist() == pytest.approx([s.t0 for s in b.spans if s.module == ""])
