"""The measurement engine: one run = one generator over a :class:`RunConfig`.

API (stable; the GUI's child process, the CLI and the tests use it)::

    config = RunConfig(head=preset("fcn"), device="cpu", batch=2, input_hw=(384, 384), mode="train")
    gen = run_iter(config, cancel=threading.Event())   # Generator[Progress, None, RunResult]
    for progress in gen: ...                            # or: result = run(config)
    result = <StopIteration.value>

    # the very same step code, without a run around it (real, or fake: meta / FakeTensorMode on CPU):
    ex: Execution = execute(config, fake=True)          # in the calling thread (run/execution.py)
    result = build_result(ex)                           # RunResult with the tensor timeline only

``run_iter`` runs ``execute`` (:mod:`.execution`, the step program of :mod:`.program`) on a worker thread it
owns — the tracer's dispatch mode and module tracker are entered *in that thread* and always left in
``finally`` — together with the allocator-level source (:mod:`.allocator_level`) and the device sampler
(:mod:`.sampler`), and relays :class:`Progress` at every layer boundary, with the new tensor-level rows as a
chunk for live plots. Closing the generator cancels the run and joins the thread.

Faults: CUDA OOM and CPU allocation failures end the run with status ``"oom"`` and a :class:`Fault` saying
where (module, phase, iteration); the timelines up to that point are kept; references are dropped, ``gc``
runs and the CUDA cache is emptied (:mod:`.hygiene`), so the next run works. Cancel (the ``cancel`` event)
takes effect at the next op or module boundary: status ``"cancelled"``, partial timelines kept. Test hook:
``fail_at=FailAt(module, phase)`` raises the allocator's own error at the first op of that module in that
phase.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Generator
from typing import Any

import torch

from vggexplorer.core.model.config import (
    ConfigError,
    RunConfig,
    device_dtype_problem,
)
from vggexplorer.core.results.result import (
    DeviceSamples,
    RunResult,
)
from vggexplorer.core.run.allocator_level import (
    AllocatorSource,
    CudaHistorySource,
    ex_wall0,
    start_allocator_source,
)
from vggexplorer.core.run.attribution import build_result
from vggexplorer.core.run.execution import (
    CUDA_SPAN_NOTE,
    _check_shapes,
    ensure_cuda_context,
    execute,
    resolve_device,
)
from vggexplorer.core.run.progress import Progress
from vggexplorer.core.run.tracer import FailAt, Tracer

__all__ = ["run", "run_iter", "start_device_sampler"]


_DONE = object()


def run_iter(
    config: RunConfig, cancel: threading.Event | None = None, *, fail_at: FailAt | None = None
) -> Generator[Progress, None, RunResult]:
    """Run ``config`` on a worker thread; yield Progress; return the RunResult (status ok/oom/cancelled).

    Bad configs raise :class:`ConfigError` before anything runs; unexpected errors are re-raised here after
    the worker has cleaned up. Closing the generator early cancels the run and waits for the worker.
    """
    dev = resolve_device(config.device)
    if problem := device_dtype_problem(dev.type, config.dtype):
        raise ConfigError(problem)
    _check_shapes(config)
    if dev.type == "cpu" and config.allocator_level and not _off_main_thread():
        from vggexplorer.core.run.quiet import prime_profiler

        prime_profiler()  # keeps kineto's known start-up messages off stderr (see core/run/quiet.py)
    stop = threading.Event()
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=_worker, args=(config, dev, cancel, stop, fail_at, q, box), name="vggexplorer-run", daemon=True
    )
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        worker.join()
    if "error" in box:
        raise box["error"]
    result: RunResult = box["result"]
    return result


def run(
    config: RunConfig, cancel: threading.Event | None = None, *, fail_at: FailAt | None = None
) -> RunResult:
    """Drive ``run_iter`` to the end and return its result."""
    gen = run_iter(config, cancel, fail_at=fail_at)
    while True:
        try:
            next(gen)
        except StopIteration as s:
            res: RunResult = s.value
            return res


class _Any:
    """An Event-like that is set when any of its events is."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _worker(
    config: RunConfig,
    dev: torch.device,
    cancel: threading.Event | None,
    stop: threading.Event,
    fail_at: FailAt | None,
    q: queue.SimpleQueue[Any],
    box: dict[str, Any],
) -> None:

    try:
        gc.collect()
        t0 = time.perf_counter()
        n_iter = config.warmup + config.iterations
        leaves: dict[str, int] = {}
        sent: dict[str, Any] = {"row": 0, "frac": 0.0}
        tracer_box: dict[str, Tracer] = {}
        source: AllocatorSource | None = None
        sampler: Any = None
        notes: list[str] = []

        def progress(phase: str, module: str, frac: float, msg: str) -> None:
            tr = tracer_box.get("t")
            chunk = None
            strings: tuple[str, ...] = ()
            if tr is not None:
                start, cols = sent["row"], None
                nxt, cols = tr.chunk(start)
                sent["row"] = nxt
                chunk = cols if nxt > start else None
                strings = tuple(tr.strings)
            it = tr.iteration if tr is not None else -1
            frac = sent["frac"] = max(min(max(frac, 0.0), 1.0), sent["frac"])
            q.put(Progress(frac, phase, module, it, msg, chunk, strings))

        def frac_at(phase: str, module: str, iteration: int) -> float:
            per = 1.0 / max(n_iter, 1)
            k = leaves.get(module, 0) / max(len(leaves), 1)
            within = {"forward": 0.45 * k, "backward": 0.5 + 0.45 * (1 - k)}.get(phase, 0.0)
            return 0.02 + 0.96 * per * (max(iteration, 0) + within)

        def on_boundary(module: str, phase: str, entering: bool) -> None:
            tr = tracer_box["t"]
            if not leaves and tr._leaves:
                leaves.update({n: i for i, n in enumerate(sorted(tr._leaves, key=_module_sort_key))})
            if entering and module in leaves:
                progress(
                    phase,
                    module,
                    frac_at(phase, module, tr.iteration),
                    f"iteration {tr.iteration + 1}/{n_iter} · {phase} · {module}",
                )

        def on_iteration(i: int) -> None:
            progress("idle", "", 0.02 + 0.96 * (i + 1) / max(n_iter, 1), f"iteration {i + 1}/{n_iter} done")

        def on_started(tr: Tracer) -> None:
            nonlocal source, sampler
            tracer_box["t"] = tr
            progress("setup", "", 0.0, f"setting up {config.label()} on {dev}")
            if dev.type == "cuda":
                notes.append(CUDA_SPAN_NOTE)
            if config.sample_hz > 0:
                sampler = start_device_sampler(dev, t0, config.sample_hz, notes)
            if config.allocator_level:
                source = start_allocator_source(dev, t0, ex_wall0(t0))
            # CUDA counters at every tensor event cost ~0.1 ms each (memory_stats builds a dict): only as
            # the fallback when the memory history is not recording
            tr.read_counters = not (isinstance(source, CudaHistorySource) and source.recording)

        def on_before_release(tr: Tracer) -> None:
            if source is not None:
                source.stop()

        ex = None
        try:
            ex = execute(
                config,
                device=dev,
                cancel=_Any(cancel, stop),  # type: ignore[arg-type]
                fail_at=fail_at,
                on_boundary=on_boundary,
                on_iteration=on_iteration,
                on_started=on_started,
                on_before_release=on_before_release,
                t0=t0,
            )
        finally:
            samples = DeviceSamples()
            if sampler is not None:
                samples = sampler.stop()
            if source is not None:
                source.stop()
        allocator, trace = source.timeline(ex.tracer) if source is not None else (None, None)
        if source is not None:
            notes.extend(source.notes)
        env = _environment(dev)
        result = build_result(ex, allocator=allocator, device_samples=samples, environment=env)
        result.allocator_trace = trace
        result.notes.extend(notes)
        box["result"] = result
        q.put(
            Progress(
                1.0,
                "idle",
                "",
                ex.tracer.iteration,
                _final_message(result),
                None,
                tuple(result.strings),
                result,
            )
        )
    except BaseException as e:
        box["error"] = e
    finally:
        q.put(_DONE)


def start_device_sampler(dev: torch.device, t0: float, rate_hz: float, notes: list[str]) -> Any:
    """The device sampler for a run, started; None (with a note) when it cannot start.

    On CUDA the context is created first: until it exists NVML lists no compute process for this PID, so
    the "this process" series would begin with failed reads (see ``ensure_cuda_context``).
    """
    try:
        from vggexplorer.core.run.sampler import DeviceSampler

        if dev.type == "cuda" and not ensure_cuda_context(dev):
            notes.append("CUDA context not created before sampling: the process series may start late")
        return DeviceSampler(dev, t0, rate_hz).start()
    except Exception as e:
        notes.append(f"device sampler not available: {e}")
        return None


def _off_main_thread() -> bool:
    """Priming the profiler takes ~1.7 s once per process: never do it on a GUI's main thread (the GUI
    runs the engine in a child process, where this is the main thread and nothing else waits)."""
    return threading.current_thread() is not threading.main_thread()


def _module_sort_key(name: str) -> tuple[int, int]:
    top = {"features": 0, "avgpool": 1, "flatten": 2, "classifier": 3}
    parts = name.split(".")
    return top.get(parts[0], 4), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _final_message(r: RunResult) -> str:
    from vggexplorer.core.results.wording import run_summary

    return run_summary(r, outcome=True, full=False, sep=", ")


def _environment(dev: torch.device) -> dict[str, Any]:
    from vggexplorer.core.devices.environment import collect_environment

    return dict(collect_environment(dev))
