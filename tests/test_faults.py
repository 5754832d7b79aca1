"""Faults at every layer (CPU): injected allocation failures, a failing device sampler, cancel at any moment.

Each fault must end the run with the right status and place, keep partial results that are valid and
exportable (save_run + write_csv + load_run), give every byte back, leave nothing installed (dispatch
modes, module hooks, the profiler, threads) and let the next run work.

"Memory back to its baseline" is measured two ways, both able to fail:

- the bytes of every live CPU tensor storage the garbage collector can reach (each storage once) — equal
  before and after the run, to the byte (a traceback that keeps the program's frames, a result holding a
  tensor, an optimizer left in a closure: all show up here; ``test_the_leak_checks_can_fail`` proves it);
- weak references to the model and the optimizer the run built — dead after ``gc.collect()``.
"""

from __future__ import annotations

import csv
import errno
import gc
import itertools
import random
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pynvml
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leaks import NOTHING_INSTALLED, installed

import vggexplorer.core.run.program as program
from vggexplorer.core.devices import nvml
from vggexplorer.core.model.backbone import build_model
from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.results.result import PHASES, RunResult
from vggexplorer.core.results.runfile import load_run, save_run, write_csv
from vggexplorer.core.run import sampler
from vggexplorer.core.run.attribution import build_result
from vggexplorer.core.run.engine import run, run_iter
from vggexplorer.core.run.execution import execute
from vggexplorer.core.run.tracer import FailAt, Tracer

GAP = preset("gap")
#: leaf modules of VGG11 + the gap head, in forward order
LEAVES: list[str] = [n for n, _ in program._leaf_order(build_model(GAP, device="meta", init=False))]
#: the order phases come in, in one train-step iteration (zero_grad before the forward)
STEP_ORDER = ("setup", "zero_grad", "forward", "loss", "backward", "optimizer", "idle")


def small(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        head=GAP, device="cpu", batch=1, input_hw=(32, 32), mode="train-step", sample_hz=0
    )
    base.update(kw)
    return RunConfig(**base)


# ------------------------------------------------------------------------------------------------ checks


def run_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vggexplorer-") and t.is_alive()]


def live_storage_bytes() -> int:
    """Bytes of all distinct live CPU tensor storages reachable by the garbage collector."""
    gc.collect()
    seen: dict[int, int] = {}
    for o in gc.get_objects():
        if type(o) is torch.Tensor or type(o) is torch.nn.Parameter:
            if o.device.type != "cpu":
                continue
            try:
                s = o.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            seen[s._cdata] = s.nbytes()
    return sum(seen.values())


class Watch:
    """Weak references to what the run builds (model, optimizer), through the engine's own factories."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.refs: list[weakref.ref[Any]] = []
        self.keep: list[Any] = []  # only the leak self-test fills it
        self.strong = False
        self._real_build = program.build_model
        self._real_opt = program._make_optimizer
        self._patches = [
            mock.patch.object(program, "build_model", self._build),
            mock.patch.object(program, "_make_optimizer", self._opt),
        ]
        if monkeypatch is not None:
            monkeypatch.setattr(program, "build_model", self._build)
            monkeypatch.setattr(program, "_make_optimizer", self._opt)
            self._patches = []

    def _build(self, *a: Any, **kw: Any) -> Any:
        m = self._real_build(*a, **kw)
        self.refs.append(weakref.ref(m))
        if self.strong:
            self.keep.append(m)
        return m

    def _opt(self, *a: Any, **kw: Any) -> Any:
        o = self._real_opt(*a, **kw)
        self.refs.append(weakref.ref(o))
        return o

    def __enter__(self) -> Watch:
        for p in self._patches:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self._patches):
            p.stop()

    def alive(self) -> int:
        gc.collect()
        return sum(r() is not None for r in self.refs)


def assert_valid_partial(r: RunResult) -> None:
    """Columns consistent, time monotone, every storage allocated once and freed at most once."""
    for tl in (r.tensor, r.allocator):
        n = len(tl)
        for col in ("delta", "total", "phase", "category", "op", "module", "iteration"):
            assert len(getattr(tl, col)) == n, col
        assert np.all(np.diff(tl.t) >= 0)
    tl = r.tensor
    assert np.array_equal(tl.total, np.cumsum(tl.delta))
    assert tl.storage is not None
    for sid in np.unique(tl.storage):
        d = tl.delta[tl.storage == sid]
        assert d[0] > 0 and len(d) <= 2 and (len(d) == 1 or d.sum() == 0), sid
    assert r.summary.peak_tensor_bytes == tl.peak
    if len(r.allocator):
        assert r.summary.peak_allocated_bytes == r.allocator.peak >= 0


def assert_exportable(r: RunResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_run(r, folder / "run.json")
    write_csv(r, folder / "memory.csv")
    back = load_run(folder / "run.json")
    assert (back.status, back.fault, back.summary) == (r.status, r.fault, r.summary)
    for name in ("tensor", "allocator"):
        a, b = getattr(r, name), getattr(back, name)
        for col in ("t", "delta", "total", "phase", "category", "module", "iteration"):
            assert np.array_equal(getattr(a, col), getattr(b, col)), (name, col)
    with open(folder / "memory.csv", newline="") as f:
        rows = list(csv.reader(f))
    dev = len(r.device) * (1 + (r.device.device_used is not None))
    assert len(rows) == 1 + len(r.tensor) + len(r.allocator) + dev


def phase_rank(phase: str) -> int:
    return STEP_ORDER.index(phase)


def assert_stops_at(r: RunResult, module: str, phase: str) -> None:
    """No tensor row from a phase after the fault's, and in a forward fault no later module's rows."""
    tl = r.tensor
    assert {phase_rank(PHASES[p]) for p in tl.phase} <= set(range(phase_rank(phase) + 1))
    if phase == "forward" and module:
        fwd = tl.phase == PHASES.index("forward")
        seen = {r.string(int(m)) for m in tl.module[fwd]}
        assert seen <= {*LEAVES[: LEAVES.index(module) + 1], ""}, seen


# ------------------------------------------------------------------------------------------------ faults


@pytest.fixture(scope="module")
def baseline() -> int:
    run(small(iterations=1))  # warm caches (oneDNN, profiler) once, so the baseline is the steady state
    return live_storage_bytes()


def fault_case(module: str, phase: str, tmp: Path, baseline: int, monkeypatch: pytest.MonkeyPatch) -> None:
    before = installed()
    watch = Watch(monkeypatch)
    r = run(small(), fail_at=FailAt(module, phase))
    assert r.status == "oom", (module, phase, r.status, r.fault)
    assert r.fault is not None and r.fault.kind == "oom"
    assert (r.fault.layer, r.fault.phase, r.fault.iteration) == (module, phase, 0 if phase != "setup" else -1)
    assert "can't allocate memory" in r.fault.message and "injected" in r.fault.message
    if phase != "setup":
        assert len(r.tensor) > 0 and len(r.allocator) > 0
    assert_valid_partial(r)
    assert_stops_at(r, module, phase)
    assert_exportable(r, tmp)
    # memory back to the baseline, no reference to the model or optimizer survives, nothing installed
    assert watch.alive() == 0
    assert len(watch.refs) == (0 if phase == "setup" else 2)  # the model and the optimizer were watched
    assert live_storage_bytes() == baseline
    assert installed() == before
    assert run_threads() == []


FAST = [
    ("features.0", "forward"),
    ("features.11", "forward"),
    ("classifier.0", "forward"),
    ("classifier.0", "backward"),
    ("features.10", "backward"),
    ("features.0", "backward"),
    ("", "loss"),
    ("", "optimizer"),
    ("", "zero_grad"),
    ("", "setup"),
]
EVERY = [(m, p) for p in ("forward", "backward") for m in LEAVES if (m, p) not in FAST]


@pytest.mark.parametrize(("module", "phase"), FAST)
def test_fault_subset(
    module: str, phase: str, tmp_path: Path, baseline: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault_case(module, phase, tmp_path, baseline, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(("module", "phase"), EVERY)
def test_fault_every_layer(
    module: str, phase: str, tmp_path: Path, baseline: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault_case(module, phase, tmp_path, baseline, monkeypatch)


def test_every_module_is_covered() -> None:
    assert len(LEAVES) == 24 and LEAVES[0] == "features.0" and LEAVES[-1] == "classifier.0"
    cases = set(FAST) | set(EVERY)
    assert {(m, p) for m in LEAVES for p in ("forward", "backward")} <= cases


def test_next_run_after_faults_is_complete_and_unchanged(baseline: int) -> None:
    """A run after faults gives the very same tensor timeline as a fresh process would (fake == real)."""
    for m, p in (("features.3", "forward"), ("features.3", "backward")):
        assert run(small(), fail_at=FailAt(m, p)).status == "oom"
    ok = run(small())
    assert ok.status == "ok" and ok.fault is None
    fake = build_result(execute(small(), fake=True))
    assert np.array_equal(ok.tensor.delta, fake.tensor.delta)
    assert live_storage_bytes() == baseline


def test_the_leak_checks_can_fail(baseline: int) -> None:
    """The checks above are not vacuous: a model kept alive is seen by both."""
    with Watch() as watch:
        watch.strong = True
        r = run(small(), fail_at=FailAt("features.6", "backward"))
    assert r.status == "oom"
    assert watch.alive() >= 1
    assert live_storage_bytes() > baseline
    watch.keep.clear()
    assert watch.alive() == 0 and live_storage_bytes() == baseline


def test_fault_through_execute_in_the_calling_thread(baseline: int) -> None:
    before = installed()
    with Watch() as watch:
        ex = execute(small(), fail_at=FailAt("features.8", "backward"))
    assert ex.status == "oom" and ex.fault is not None and ex.fault.layer == "features.8"
    r = build_result(ex)
    del ex
    assert_valid_partial(r)
    assert watch.alive() == 0 and live_storage_bytes() == baseline and installed() == before


# ------------------------------------------------------------------------------- device sampler failures


def flaky_rss(after: int, exc: BaseException) -> Callable[[sampler.DeviceSampler], Any]:
    """A ``_make_rss_probe`` whose probe raises ``exc`` from its ``after``-th call on."""
    real = sampler.DeviceSampler._make_rss_probe

    def make(self: sampler.DeviceSampler) -> Any:
        probe = real(self)
        count = itertools.count()

        def p() -> tuple[int, ...]:
            if next(count) >= after:
                raise exc
            return probe()

        return p

    return make


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EIO, "Input/output error"), FileNotFoundError(errno.ENOENT, "/proc/self/statm gone")],
    ids=["io-error", "reader-gone"],
)
def test_rss_reader_failing_mid_run(
    exc: BaseException, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = installed()
    monkeypatch.setattr(sampler.DeviceSampler, "_make_rss_probe", flaky_rss(25, exc))
    r = run(small(sample_hz=1000.0))
    assert r.status == "ok" and r.fault is None
    assert len(r.device) == 25  # truncated where the reader failed ...
    assert np.all(r.device.process > 0)
    assert f"sampler stopped by an error: {type(exc).__name__}" in r.device.source  # ... with the reason
    assert r.summary.peak_device_bytes == int(r.device.process.max())
    assert_exportable(r, tmp_path)
    assert installed() == before and run_threads() == []


UUID = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class _Gpu:
    """What the fake NVML reports for 'our' GPU (5 GiB used, this process 3 GiB)."""

    def __init__(self) -> None:
        import os

        self.pid = os.getpid()
        self.calls = 0
        self.fail: BaseException | None = None

    def procs(self, handle: object) -> list[Any]:
        from types import SimpleNamespace

        self._tick()
        return [SimpleNamespace(pid=self.pid, usedGpuMemory=3 << 30)]

    def mem(self, handle: object, version: int | None = None) -> Any:
        from types import SimpleNamespace

        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(total=80 << 30, free=75 << 30, used=5 << 30, reserved=1 << 29)

    def _tick(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def fake_nvml_sampler(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Gpu]:
    """The engine's CPU run sampled through the NVML path of the sampler, against a scripted fake NVML."""
    gpu = _Gpu()
    nvml.reset()
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "580.65.06")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", lambda u: "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: UUID)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetIndex", lambda h: 0)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: "Fake H100")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", gpu.mem)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses_v3", gpu.procs)
    monkeypatch.setattr(nvml, "cuda_uuid", lambda index: UUID)

    class NvmlSampler(sampler.DeviceSampler):
        def __init__(self, device: Any, t0: float, rate_hz: float = 1000.0) -> None:
            # every tick reads the process series (this test counts failed reads per tick)
            super().__init__("cuda:0", t0, rate_hz, process_hz=rate_hz)

    monkeypatch.setattr(sampler, "DeviceSampler", NvmlSampler)
    yield gpu
    nvml.reset()


def _failing_after(gpu: _Gpu, n: int, exc: BaseException | Callable[[], None]) -> None:
    real = gpu._tick

    def tick() -> None:
        real()
        if gpu.calls == n:
            if isinstance(exc, BaseException):
                gpu.fail = exc
            else:
                exc()

    gpu._tick = tick  # type: ignore[method-assign]


@pytest.mark.parametrize("how", ["gpu-lost", "nvml-shut-down", "wrapper-raises"])
def test_nvml_failing_mid_run(
    how: str, fake_nvml_sampler: _Gpu, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gpu = fake_nvml_sampler
    n = 10
    if how == "gpu-lost":
        _failing_after(gpu, n, pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST))
    elif how == "nvml-shut-down":
        _failing_after(gpu, n, nvml.shutdown)
    else:  # the wrapper breaks its promise and raises: the sampler still keeps it out of the run
        real = nvml.process_memory
        count = itertools.count(1)

        def boom(handle: Any, pid: int | None = None) -> Any:
            if next(count) > n:
                raise RuntimeError("NVML wrapper exploded")
            return real(handle, pid)

        monkeypatch.setattr(nvml, "process_memory", boom)
    before = installed()
    r = run(small(sample_hz=1000.0, iterations=2))
    assert r.status == "ok" and r.fault is None
    d = r.device
    assert d.source.startswith(f"NVML process used memory, Fake H100 ({UUID})")
    assert len(d) >= n
    assert np.all(d.process[:n] == 3 << 30)  # n good samples up to the failure ...
    if how == "wrapper-raises":
        assert len(d) == n and "sampler stopped by an error: RuntimeError: NVML wrapper exploded" in d.source
    else:
        assert len(d) == n + sampler.MAX_FAILURES  # ... then marked missing, then no longer queried
        assert np.all(d.process[n:] == sampler.MISSING)
        reason = "GPU is lost" if how == "gpu-lost" else "NVML shut down"
        assert reason in d.source and "NVML process used: stopped" in d.source
    assert r.summary.peak_device_bytes == 3 << 30  # the missing marks never count as memory
    assert_exportable(r, tmp_path)
    assert installed() == before and run_threads() == []


# ------------------------------------------------------------------------------------------------ cancel


class _CancelAt:
    """Counts the tracer's cancel checks (every op and module boundary) and sets the event at check ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.n = 0
        self.event = threading.Event()
        self.where: tuple[str, str, int] | None = None
        real = Tracer._check

        def check(tracer: Tracer, func: Any) -> None:  # a plain function: it binds as a method
            if self.n == self.k:
                self.event.set()
                self.where = (tracer.phase, tracer._current_module(), tracer.iteration)
            self.n += 1
            real(tracer, func)

        self.check = check


def checks_in_a_run(cfg: RunConfig) -> int:
    counter = _CancelAt(-1)
    with mock.patch.object(Tracer, "_check", counter.check):
        ex = execute(cfg, cancel=counter.event)
    assert ex.status == "ok"
    return counter.n


CANCEL_CFG = small(iterations=2, allocator_level=False)


@pytest.fixture(scope="module")
def n_checks() -> int:
    return checks_in_a_run(CANCEL_CFG)


def cancel_case(k: int, baseline: int, folder: Path) -> None:
    before = installed()
    counter = _CancelAt(k)
    with Watch() as watch, mock.patch.object(Tracer, "_check", counter.check):
        ex = execute(CANCEL_CFG, cancel=counter.event)
    assert ex.status == "cancelled", k
    f = ex.fault
    assert f is not None and f.kind == "cancelled" and f.phase in PHASES and f.iteration in (-1, 0, 1)
    # it took effect at the very check where the flag was first seen (the place of check k); torch's own
    # clean-up ops while the exception unwinds (record_function exit in Optimizer.step) may check again
    assert (f.phase, f.layer, f.iteration) == counter.where, (k, counter.where)
    r = build_result(ex)
    del ex
    assert r.status == "cancelled" and r.fault == f
    assert_valid_partial(r)
    assert installed() == before and run_threads() == []
    assert watch.alive() == 0
    # execute() ran in *this* thread: after a cancel inside backward, PyTorch's autograd engine keeps the
    # aborted graph's pending work in this thread's ready queue until the next backward here (or the
    # thread's end; run_iter's worker thread ends, see the generator test). Drain it, then count.
    # test_cancel_in_backward_leaves_nothing_in_the_calling_thread holds the engine to doing this itself.
    drain_autograd_queue()
    assert live_storage_bytes() == baseline
    if f.phase != "setup" or f.iteration >= 0:
        assert len(r.tensor) > 0
    assert_exportable(r, folder / f"k{k}")


def drain_autograd_queue() -> None:
    """A trivial backward in this thread: the autograd engine drops what an aborted backward left queued."""
    a = torch.ones((), requires_grad=True)
    (a * 2).backward()


def test_cancel_at_seeded_random_moments(n_checks: int, baseline: int, tmp_path: Path) -> None:
    assert n_checks > 300  # every op and module boundary of two train steps
    rng = random.Random(20240611)
    points = [0, 1, n_checks - 1, *rng.sample(range(2, n_checks - 1), 7)]
    for k in points:
        cancel_case(k, baseline, tmp_path)
    assert execute(CANCEL_CFG).status == "ok"


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frac=st.floats(0.0, 1.0, exclude_max=True))
def test_cancel_anywhere_hypothesis(frac: float, n_checks: int, baseline: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        cancel_case(int(frac * n_checks), baseline, Path(d))


def test_cancel_through_the_generator_at_random_progress(baseline: int) -> None:
    """The GUI's path: the cancel event is set from the consuming thread while the worker runs."""
    rng = random.Random(7)
    cfg = small(iterations=3, sample_hz=500.0)
    for k in [0, *rng.sample(range(1, 60), 3)]:
        before = installed()
        ev = threading.Event()
        gen = run_iter(cfg, ev)
        seen = 0
        while True:
            try:
                next(gen)
            except StopIteration as s:
                r: RunResult = s.value
                break
            if seen == k:
                ev.set()
            seen += 1
        # a train step of 3 iterations yields far more than 60 progress reports: the cancel lands in time
        assert r.status == "cancelled", (k, r.status)
        assert r.fault is not None and r.fault.kind == "cancelled"
        assert_valid_partial(r)
        assert k == 0 or len(r.tensor) > 0  # k = 0: cancelled while setting up, before any tensor
        assert installed() == before and run_threads() == []
    assert live_storage_bytes() == baseline
    assert run(small()).status == "ok"


def test_closing_the_generator_at_random_points(baseline: int) -> None:
    rng = random.Random(3)
    for k in rng.sample(range(1, 80), 3):
        gen = run_iter(small(iterations=3, sample_hz=500.0))
        for _ in range(k):
            next(gen)
        gen.close()
        assert run_threads() == [] and installed() == NOTHING_INSTALLED
    assert live_storage_bytes() == baseline


def test_cancel_in_backward_leaves_nothing_in_the_calling_thread(n_checks: int, baseline: int) -> None:
    counter = _CancelAt(-1)
    contexts: list[tuple[str, int]] = []
    real = counter.check

    def record(tracer: Tracer, func: Any) -> None:
        contexts.append((tracer.phase, tracer.iteration))
        real(tracer, func)

    with mock.patch.object(Tracer, "_check", record):
        assert execute(CANCEL_CFG, cancel=counter.event).status == "ok"
    backward = [k for k, c in enumerate(contexts) if c == ("backward", 1)]
    leaks = []
    for k in backward[:60]:  # the first leak shows within a few points; stop there
        c = _CancelAt(k)
        with mock.patch.object(Tracer, "_check", c.check):
            assert execute(CANCEL_CFG, cancel=c.event).status == "cancelled"
        extra = live_storage_bytes() - baseline
        if extra:
            leaks.append((k, c.where, extra))
            drain_autograd_queue()
            break
    assert leaks == []
