"""compare(): difference tables and the plain-language explanation, from synthetic runs with known numbers."""

from __future__ import annotations

import numpy as np
import pytest

from vggexplorer.core.base.units import GiB
from vggexplorer.core.results.analysis import categories_at_peak, category_levels_at, peak_time
from vggexplorer.core.results.compare import (
    compare,
    comparison_to_markdown,
    comparison_to_rows,
    explain,
)
from vggexplorer.core.results.result import CATEGORIES
from vggexplorer.core.results.synthetic import synthetic_run


@pytest.fixture(scope="module")
def fc224() -> object:
    return synthetic_run(head="fc", input_hw=224, batch=8, optimizer=False)


@pytest.fixture(scope="module")
def fcn384() -> object:
    return synthetic_run(head="fcn", input_hw=384, batch=8, optimizer=False)


def test_category_levels_follow_rows_and_derived_differences() -> None:
    r = synthetic_run(head="fcn", input_hw=384, batch=2, workspace_bytes=123 * 4096, cuda=True)
    head_fwd = next(s for s in r.spans if s.module == "classifier.0" and s.phase == "forward")
    inside = head_fwd.t0 + 0.002  # the synthetic workspace lives from +1.5 ms to +4.5 ms of the layer
    lv = category_levels_at(r, [inside, r.tensor.t[-1] + 1.0])
    assert set(lv) == set(CATEGORIES)
    assert lv["untracked_workspace"][0] >= 123 * 4096  # + rounding to 512 B on the CUDA allocator level
    assert lv["untracked_workspace"][1] == max(int(r.allocator.total[-1] - r.tensor.total[-1]), 0)
    params = sum(lay.param_bytes for lay in r.layers)
    assert lv["parameters"][0] == params
    # row categories sum to the tensor level at any time
    rows = sum(int(lv[c][0]) for c in CATEGORIES[:8])
    i = int(np.searchsorted(r.tensor.t, inside, side="right")) - 1
    assert rows == int(r.tensor.total[i])
    # non-PyTorch = NVML process − reserved (the synthetic process is reserved + 500 MiB)
    assert lv["non_pytorch"][0] == 500 * 2**20


def test_cpu_runs_have_no_allocator_overhead_or_non_pytorch(fc224: object) -> None:
    c = compare(fc224, fc224)  # type: ignore[arg-type]
    assert c.category_diff("allocator_overhead").a is None
    assert c.category_diff("non_pytorch").b is None
    assert c.summary_diff("peak_reserved_bytes").delta is None


def test_difference_table_numbers(fc224: object, fcn384: object) -> None:
    a, b = fc224, fcn384
    c = compare(a, b)  # type: ignore[arg-type]
    pa = c.summary_diff("peak_allocated_bytes")
    assert pa.a == a.summary.peak_allocated_bytes and pa.b == b.summary.peak_allocated_bytes  # type: ignore[attr-defined]
    assert pa.delta == pa.b - pa.a  # type: ignore[operator]
    out0 = next(d for d in c.layers if d.name == "features.0" and d.metric == "output_bytes")
    assert out0.delta == 64 * 4 * 8 * (384**2 - 224**2)
    params = [d for d in c.layers if d.metric == "param_bytes"]
    assert params and all(d.delta == 0 for d in params)
    cats_a, cats_b = categories_at_peak(a), categories_at_peak(b)  # type: ignore[arg-type]
    for d in c.categories:
        if d.a is not None:
            assert (d.a, d.b) == (cats_a[d.name], cats_b[d.name])
    rows = comparison_to_rows(c)
    row = next(r for r in rows if r["name"] == "features.0" and r["metric"] == "output_bytes")
    assert row["delta_bytes"] == out0.delta and row["delta"].startswith("+")
    md = comparison_to_markdown(c)
    assert "| features.0 · output_bytes |" in md and "## Categories at each run's peak" in md


def test_explanation_names_the_larger_contributors_first(fc224: object, fcn384: object) -> None:
    lines = explain(compare(fc224, fcn384))  # type: ignore[arg-type]
    assert lines[0].startswith("fcn at 384 vs fc at 224: peak allocated")
    assert "2.9× the pixels (384² vs 224²)" in lines[1]
    body = " ".join(lines)
    assert "Activations saved for backward +" in body
    assert "Parameters equal (412.4 MiB)" in body
    i_act = next(i for i, s in enumerate(lines) if s.startswith("Activations"))
    i_tmp = next(i for i, s in enumerate(lines) if s.startswith("Temporaries"))
    assert i_act < i_tmp  # ranked by size: activations differ by far more than temporaries
    assert "8×1000×6×6 vs 8×1000" in body  # the head's score map, from the runs' output shapes


def test_untracked_workspace_is_explained_when_it_makes_the_difference() -> None:
    a = synthetic_run(head="fcn", input_hw=384, batch=8, optimizer=False)
    b = synthetic_run(head="fcn", input_hw=384, batch=8, optimizer=False, workspace_bytes=GiB)
    lines = explain(compare(a, b))
    assert lines[0].startswith("B (fcn at 384) vs A (fcn at 384)")
    assert lines[1].startswith("Untracked workspace +1.0 GiB at the peak")
    assert "peaks in backward" in " ".join(lines) and "in forward at classifier.0" in " ".join(lines)


def test_workspace_the_size_of_a_weight_is_named() -> None:
    # a kernel buffer 1.8% larger than the head conv's parameters (within the 2% we call "the size of")
    w = 2 * GiB
    a = synthetic_run(head="fcn", input_hw=512, batch=1, optimizer=False, head_param_bytes=w)
    b = synthetic_run(
        head="fcn", input_hw=512, batch=1, optimizer=False, head_param_bytes=w, workspace_bytes=int(w * 1.018)
    )
    assert b.summary.peak_module == "classifier.0"
    text = " ".join(explain(compare(a, b)))
    assert "within 2% of the parameter bytes of classifier.0 (Conv2d, 2.0 GiB)" in text


def test_equal_runs_say_no_difference(fc224: object) -> None:
    twin = synthetic_run(head="fc", input_hw=224, batch=8, optimizer=False)
    lines = explain(compare(fc224, twin))  # type: ignore[arg-type]
    assert len(lines) == 1 and lines[0].startswith("No difference")


def test_peak_time_is_the_allocator_peak(fcn384: object) -> None:
    r = fcn384
    assert peak_time(r) == pytest.approx(float(r.allocator.t[r.allocator.peak_index]))  # type: ignore[attr-defined]
