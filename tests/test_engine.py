"""The run generator: results, fake == real, faults, cancel, cleanup, and the head-size claims."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from leaks import NOTHING_INSTALLED, installed

from vggexplorer.core.model.config import ConfigError, RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.results.analysis import category_series
from vggexplorer.core.results.result import CATEGORIES, PHASES, RunResult
from vggexplorer.core.run.attribution import build_result
from vggexplorer.core.run.engine import run, run_iter
from vggexplorer.core.run.execution import execute
from vggexplorer.core.run.progress import Progress
from vggexplorer.core.run.tracer import FailAt

VGG11_PARAMS = 132_863_336


def small(**kw: object) -> RunConfig:
    base: dict[str, object] = dict(head=preset("gap"), device="cpu", batch=1, input_hw=(32, 32), sample_hz=0)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def step_run() -> Iterator[tuple[RunResult, list[Progress]]]:
    cfg = small(mode="train-step", optimizer="adam", iterations=2, sample_hz=200.0, input_hw=(64, 64))
    gen = run_iter(cfg)
    progress: list[Progress] = []
    while True:
        try:
            progress.append(next(gen))
        except StopIteration as s:
            yield s.value, progress
            return


def test_run_result_is_complete(step_run: tuple[RunResult, list[Progress]]) -> None:
    r, progress = step_run
    assert r.status == "ok" and r.fault is None
    assert len(r.tensor) > 100 and len(r.allocator) >= len(r.tensor) // 2
    assert r.summary.peak_tensor_bytes == r.tensor.peak
    # allocator level = tensors + kernel buffers: never below the tensor level at the peak
    assert r.summary.peak_allocated_bytes >= r.summary.peak_tensor_bytes
    assert r.summary.output_shape == (1, 1000)
    phases = {PHASES[p] for p in np.unique(r.tensor.phase)}
    assert {"setup", "forward", "loss", "backward", "optimizer"} <= phases
    cats = {CATEGORIES[c] for c in np.unique(r.tensor.category)}
    assert {"parameters", "inputs", "activations", "gradients", "optimizer_state"} <= cats
    assert set(np.unique(r.tensor.iteration)) == {-1, 0, 1}
    assert np.all(np.diff(r.tensor.t) >= 0) and np.all(np.diff(r.allocator.t) >= 0)
    assert len(r.device) > 0 and r.device.achieved_hz > 0
    # Adam keeps two moments per parameter: optimizer state = 2 × params (+ step counters)
    _t, series = category_series(r)
    assert series["optimizer_state"].max() >= 2 * r.summary.param_bytes
    assert series["untracked_workspace"].min() >= 0
    # progress: monotone, at every layer boundary, chunks that add up to the tensor timeline
    fr = [p.fraction for p in progress]
    assert fr == sorted(fr) and fr[-1] == 1.0 and progress[-1].result is r
    modules = {p.module for p in progress}
    assert {"features.0", "classifier.0"} <= modules
    rows = sum(len(p.chunk["t"]) for p in progress if p.chunk is not None)
    assert rows <= len(r.tensor)
    last = [p for p in progress if p.chunk is not None][-1].chunk
    assert last is not None
    i = rows - 1
    assert last["total"][-1] == r.tensor.total[i]


def test_allocator_events_are_joined_to_modules(step_run: tuple[RunResult, list[Progress]]) -> None:
    r, _ = step_run
    al = r.allocator
    fwd = al.phase == PHASES.index("forward")
    mods = {r.string(int(m)) for m in al.module[fwd]}
    assert "features.0" in mods
    # conv workspaces are allocator-only: tagged untracked, in a conv's forward or backward
    u = al.category == CATEGORIES.index("untracked_workspace")
    assert u.any()
    # every tensor allocation of the run appears at the allocator level with its category
    matched = al.category[(al.delta > 0) & ~u]
    assert len(matched) > 0.9 * np.sum(r.tensor.delta > 0)


def test_fake_execution_equals_measured_timeline() -> None:
    for mode, opt in (("eval", "sgd"), ("train", "sgd"), ("train-step", "adamw")):
        cfg = small(mode=mode, optimizer=opt, iterations=2, allocator_level=False)
        real = build_result(execute(cfg))
        fake = build_result(execute(cfg, fake=True))
        assert fake.predicted and not real.predicted
        a, b = real.tensor, fake.tensor
        assert np.array_equal(a.delta, b.delta), mode
        assert np.array_equal(a.phase, b.phase) and np.array_equal(a.category, b.category)
        assert [real.string(int(i)) for i in a.module] == [fake.string(int(i)) for i in b.module]
        assert [real.string(int(i)) for i in a.op] == [fake.string(int(i)) for i in b.op]
        assert real.summary.peak_tensor_bytes == fake.summary.peak_tensor_bytes


def test_param_bytes_fc_and_fcn_float32() -> None:
    for name in ("fc", "fcn"):
        r = build_result(execute(small(head=preset(name), input_hw=(224, 224), mode="eval"), fake=True))
        assert r.summary.param_bytes == 4 * VGG11_PARAMS
        params = r.tensor.category == CATEGORIES.index("parameters")
        assert r.tensor.delta[params & (r.tensor.delta > 0)].sum() == 4 * VGG11_PARAMS


def _head_rows(r: RunResult) -> dict[str, tuple[int, int]]:
    return {x.name: (x.output_bytes, x.saved_bytes) for x in r.layers if x.name.startswith("classifier")}


def test_fc_and_fcn_pooled_same_head_activations_at_224() -> None:
    """Measured (real CPU run) on fc; fcn-pooled's conv head at 224 keeps exactly the same bytes."""
    fc = run(small(head=preset("fc"), input_hw=(224, 224), mode="train", allocator_level=False))
    fcnp = build_result(
        execute(small(head=preset("fcn-pooled"), input_hw=(224, 224), mode="train"), fake=True)
    )
    a, b = _head_rows(fc), _head_rows(fcnp)
    assert sorted(v for v in a.values()) == sorted(v for v in b.values())
    assert sum(s for _, s in a.values()) == sum(s for _, s in b.values()) > 0
    assert fc.summary.param_bytes == 4 * VGG11_PARAMS


def test_fcn_at_384_has_a_6x6_score_map() -> None:
    r = run(small(head=preset("fcn"), input_hw=(384, 384), mode="train", allocator_level=False))
    assert r.status == "ok"
    assert r.summary.output_shape == (1, 1000, 6, 6)
    rows = {x.name: x for x in r.layers}
    c0 = rows["classifier.0"]
    assert c0.output_shape == (1, 4096, 6, 6) and c0.output_bytes == 4096 * 36 * 4
    # conv0's output is saved by its in-place ReLU; dropout keeps its output and a float mask on CPU
    assert c0.saved_bytes == 4096 * 36 * 4
    assert rows["classifier.2"].saved_bytes == 2 * 4096 * 36 * 4
    assert rows["classifier.6"].output_bytes == 1000 * 36 * 4
    assert c0.param_bytes == c0.grad_bytes == 4 * (4096 * 512 * 49 + 4096)


def test_forced_oom_keeps_partial_timeline_and_engine_usable() -> None:
    before = installed()
    for module, phase in (("features.3", "forward"), ("classifier.0", "backward"), ("", "optimizer")):
        r = run(small(mode="train-step"), fail_at=FailAt(module, phase))
        assert r.status == "oom", (module, phase)
        assert r.fault is not None and r.fault.kind == "oom"
        assert (r.fault.layer, r.fault.phase) == (module, phase)
        assert len(r.tensor) > 0 and len(r.allocator) > 0
        assert installed() == before
    ok = run(small(mode="train-step"))
    assert ok.status == "ok"


def test_cancel_takes_effect_within_the_layer() -> None:
    before = installed()
    ev = threading.Event()

    def at(module: str, phase: str, entering: bool) -> None:
        if module == "features.6" and phase == "backward" and entering:
            ev.set()

    ex = execute(small(), cancel=ev, on_boundary=at)
    assert ex.status == "cancelled"
    assert ex.fault is not None and (ex.fault.layer, ex.fault.phase) == ("features.6", "backward")
    assert installed() == before
    # through the generator: cancel after the first forward progress; the worker thread ends
    ev2 = threading.Event()
    gen = run_iter(small(iterations=3), ev2)
    result = None
    while True:
        try:
            p = next(gen)
        except StopIteration as s:
            result = s.value
            break
        if p.phase == "forward":
            ev2.set()
    assert result is not None and result.status == "cancelled" and len(result.tensor) > 0
    assert installed() == before


def test_closing_the_generator_stops_the_worker() -> None:
    gen = run_iter(small(iterations=50))
    next(gen)
    gen.close()  # the conftest fixture fails the test if the worker thread is still alive
    assert installed() == NOTHING_INSTALLED


def test_unexpected_errors_propagate_and_clean_up() -> None:
    def boom(module: str, phase: str, entering: bool) -> None:
        if module == "features.3":
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        execute(small(), on_boundary=boom)
    assert installed() == NOTHING_INSTALLED


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError):
        small(batch=0)
    with pytest.raises(ConfigError):
        small(mode="fit")
    with pytest.raises(ConfigError):
        small(device="tpu")
    with pytest.raises(ConfigError, match="too small"):
        run(small(input_hw=(16, 16)))
    with pytest.raises(ConfigError, match="bfloat16"):
        run(small(dtype="float16"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            run(small(device="cuda"))


def test_config_round_trip() -> None:
    cfg = small(mode="train-step", optimizer="adamw", channels_last=True, dtype="bfloat16", seed=7)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        RunConfig.from_dict({**cfg.to_dict(), "surprise": 1})


def test_bfloat16_autocast_and_channels_last_run_on_cpu() -> None:
    r = run(small(channels_last=True, allocator_level=False))
    fake = build_result(execute(small(channels_last=True), fake=True))
    assert r.status == "ok" and np.array_equal(r.tensor.delta, fake.tensor.delta)
    # autocast: the cast-weight cache is emptied at autocast exit in hash-map order, so that burst of frees
    # may come in another order; the events, the peak and every level outside the burst are the same
    r = run(small(dtype="bfloat16", allocator_level=False))
    fake = build_result(execute(small(dtype="bfloat16"), fake=True))
    assert r.status == "ok"
    assert sorted(r.tensor.delta.tolist()) == sorted(fake.tensor.delta.tolist())
    assert r.tensor.peak == fake.tensor.peak
    bf16 = {x.name: x.output_bytes for x in r.layers}
    assert bf16["features.0"] == 64 * 32 * 32 * 2  # conv output in bfloat16
