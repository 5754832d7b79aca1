"""The "nvidia-smi level" series: a background thread sampling memory on the run clock.

On CPU it samples the process RSS (``/proc/self/statm`` read with one ``pread`` per sample: ~1.5 µs here;
psutil, ~9 µs, on other systems). On CUDA it samples NVML: this process's used memory, the device's used
memory and the driver-reserved memory (memory info v2) of the GPU matched to the CUDA device by UUID.

Timing: ticks are on an absolute schedule (``due += period``; ``time.sleep`` until the next tick, no busy
waiting), so oversleeping does not accumulate. Ticks are scheduled ``RATE_MARGIN`` (0.5 %) faster than
``rate_hz``, so that the jitter of the first and last sample does not put the achieved rate below the
requested one. A sampler that falls behind (a late wake-up, a slow probe) catches up at up to twice the rate
(consecutive samples are at least half a period apart, no bursts); a backlog of more than
``MAX_BACKLOG`` periods is dropped. Each sample's time is the middle of its probe, on the run clock
``time.perf_counter() - t0``.

The thread asks Linux for a short scheduler time slice (``sched_setattr``, honoured by the EEVDF scheduler
from Linux 6.12; ignored elsewhere). With the default slice a woken sampler often could not preempt a
busy torch thread and ran only at the next scheduler tick (4 ms at HZ=250), which lost ticks; its CPU use
is the same either way.

Values are int64 bytes; ``MISSING`` (-1) marks a sample where a series could not be read (NVML error, GPU
lost, this PID not in NVML's list). A series that fails ``MAX_FAILURES`` times in a row is no longer queried
(the reason goes into ``notes`` and ``source``); when every series has stopped, sampling ends. Nothing in
here raises into the run: errors become notes.

Readers on other threads (live plots) use ``count``, ``latest()`` and ``snapshot_since(i)`` without locks:
the writer fills a slot before it publishes the new count, and growing swaps in a copy holding every
published sample, so a reader that reads the count first and the buffers second always sees valid data.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import struct
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vggexplorer.core.devices import nvml
from vggexplorer.core.results.result import DeviceSamples

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_BACKLOG",
    "MAX_FAILURES",
    "MISSING",
    "PROCESS_GRACE_S",
    "PROCESS_HZ",
    "RATE_MARGIN",
    "DeviceSampler",
    "read_rss",
    "valid_max",
]

MISSING: Final = -1
#: Consecutive failed reads after which a series is no longer queried.
MAX_FAILURES: Final = 20
#: Default rate of the NVML per-process series (CUDA). One process read is two driver calls
#: (``nvmlDeviceGetComputeRunningProcesses_v3`` sized, then filled: pynvml's wrapper calls it twice) and a
#: Python object per process; the device series (``nvmlDeviceGetMemoryInfo``, one call) keeps ``rate_hz``.
#: Not measured on a GPU yet: a lower rate keeps a busy host from dropping ticks or contending with the run.
PROCESS_HZ: Final = 100.0
#: Seconds after start during which "NVML lists no compute process" before the first good read is not a
#: failure: NVML lists a PID only once its CUDA context exists, and the list can lag the context a little.
PROCESS_GRACE_S: Final = 10.0
_CHUNK: Final = 1 << 16  # samples per buffer growth step (65 s at 1 kHz)
_STATM: Final = "/proc/self/statm"
#: Ticks are scheduled this much faster than ``rate_hz`` (see the module docstring).
RATE_MARGIN: Final = 1.005
#: Periods of backlog the sampler catches up; beyond that, ticks are dropped.
MAX_BACKLOG: Final = 20
#: Time slice asked for the sampler thread, ns (the kernel's minimum for custom slices).
_SLICE_NS: Final = 100_000
#: (sched_setattr, sched_getattr) syscall numbers.
_SCHED_SYSCALLS: Final = {"x86_64": (314, 315), "aarch64": (274, 275)}


def valid_max(values: np.ndarray[Any, Any] | None) -> int | None:
    """The largest valid (non-``MISSING``) sample, or None when there is none."""
    if values is None:
        return None
    ok = values[values != MISSING]
    return int(ok.max()) if ok.size else None


def read_rss() -> int:
    """This process's resident set size in bytes (one-off read; the sampler keeps its file open)."""
    if sys.platform.startswith("linux"):
        try:
            with open(_STATM, "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    import psutil

    return int(psutil.Process().memory_info().rss)


def _request_short_slice(ns: int = _SLICE_NS) -> bool:
    """Set the calling thread's scheduler time slice to ``ns`` (Linux fair policies only). Best effort.

    Keeps policy and nice (read with ``sched_getattr``, written back with ``sched_runtime`` set). Linux
    ≥ 6.12 uses it as the thread's EEVDF slice: a thread with a shorter slice than the running one may
    preempt it on wake-up. Older kernels ignore ``sched_runtime`` for fair policies.
    """
    nums = _SCHED_SYSCALLS.get(platform.machine())
    if nums is None or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(56)  # struct sched_attr, SCHED_ATTR_SIZE_VER1
        if libc.syscall(nums[1], 0, attr, 56, 0) != 0:
            return False
        size, policy = struct.unpack_from("II", attr)
        if size < 48 or policy not in (0, 3):  # SCHED_OTHER, SCHED_BATCH
            return False
        struct.pack_into("Q", attr, 24, ns)  # sched_runtime
        return bool(libc.syscall(nums[0], 0, attr, 0) == 0)
    except (OSError, AttributeError, ValueError, struct.error):
        return False


def _view(a: np.ndarray[Any, Any]) -> Any:
    """A memoryview of a 1-D array (``view[i] = x`` costs less than ``array[i] = x``)."""
    return memoryview(a)  # type: ignore[arg-type]


Probe = Callable[[], tuple[int, ...]]


class _Series:
    """Bookkeeping for one column: consecutive failures, first failure reason, stopped or not."""

    __slots__ = ("failures", "name", "reason", "stopped")

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self.reason = ""
        self.stopped = False


class DeviceSampler:
    """Samples memory of ``device`` on a daemon thread at ``rate_hz`` between ``start()`` and ``stop()``.

    Usage::

        with DeviceSampler("cpu", t0=time.perf_counter()) as s:
            work()
        s.samples.process  # RSS, bytes

    ``stop()`` joins the thread and returns the :class:`DeviceSamples`; it never raises and may be called
    more than once (later calls return the same result). Leaving the ``with`` block stops the thread also
    when the body raises.
    """

    def __init__(
        self,
        device: torch.device | str,
        t0: float,
        rate_hz: float = 1000.0,
        *,
        process_hz: float = PROCESS_HZ,
    ) -> None:
        import torch

        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
        if not (math.isfinite(process_hz) and process_hz > 0):
            raise ValueError(f"process_hz must be a positive number, got {process_hz!r}")
        self.device = torch.device(device)
        self.t0 = t0
        self.rate_hz = float(rate_hz)
        #: CUDA: the NVML process series is read every ``process_every``-th tick (about ``process_hz``) and
        #: holds its last read value in between; on CPU the RSS is read at every tick.
        self.process_every = max(1, round(self.rate_hz / process_hz))
        self.notes: list[str] = []
        self.source = ""
        #: CPU time the sampler thread used (its own cost), set when the thread ends.
        self.cpu_seconds = 0.0
        self._cuda = self.device.type == "cuda"
        self._series: list[_Series] = []
        self._n = 0  # published sample count
        self._bufs: tuple[np.ndarray[Any, Any], ...] = ()  # t, then one int64 column per series
        self._stop = False
        self._thread: threading.Thread | None = None
        self._result: DeviceSamples | None = None
        self._close: Callable[[], None] = lambda: None
        self._probe: Probe | None = None
        #: (fd, page size, the statm probe): while that probe is the one in use, the loop reads it inline
        self._statm: tuple[int, int, Probe] | None = None
        #: Whether the thread got the short time slice (see the module docstring).
        self.short_slice = False

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> DeviceSampler:
        """Resolve what to measure and start the thread. Returns self. Starting twice is an error."""
        if self._thread is not None or self._result is not None:
            raise RuntimeError("DeviceSampler.start() called twice; use a new sampler per run")
        try:
            self._probe = self._make_probe()
        except Exception as exc:  # never raise into the run: no samples, with the reason
            self._probe = None
            self.notes.append(f"device sampling not available: {exc}")
        if self._probe is None:
            self.source = self.source or "no device samples"
            return self
        self._alloc(_CHUNK)
        self._thread = threading.Thread(target=self._run, name="vggexplorer-device-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> DeviceSamples:
        """Stop sampling, join the thread and return the samples. Never raises; idempotent."""
        if self._result is not None:
            return self._result
        self._stop = True
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # a hung NVML call; the thread is a daemon and ends with it
                self.notes.append(f"sampler thread did not stop within {timeout:g} s")
        self._result = self._collect()
        return self._result

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def samples(self) -> DeviceSamples:
        """The result after ``stop()`` (or leaving the ``with`` block)."""
        if self._result is None:
            raise RuntimeError("the sampler has not been stopped yet")
        return self._result

    def __enter__(self) -> DeviceSampler:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- live reads (any thread) --------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._n

    def latest(self) -> tuple[float, int] | None:
        """``(t, process bytes)`` of the newest sample (bytes may be ``MISSING``); None before any."""
        n = self._n
        bufs = self._bufs
        if n == 0 or not bufs:
            return None
        return float(bufs[0][n - 1]), int(bufs[1][n - 1])

    def snapshot_since(self, i: int) -> DeviceSamples:
        """Copies of samples ``i:count`` as a :class:`DeviceSamples` (next call: ``i + len(result)``)."""
        n = self._n
        bufs = self._bufs
        i = max(0, min(i, n))
        if not bufs:
            return DeviceSamples(source=self.source)
        cols = [b[i:n].copy() for b in bufs]
        return DeviceSamples(
            t=cols[0],
            process=cols[1],
            device_used=cols[2] if self._cuda else None,
            driver_reserved=cols[3] if self._cuda else None,
            source=self.source,
        )

    # --- probes -------------------------------------------------------------------------------------------

    def _make_probe(self) -> Probe | None:
        if self._cuda:
            return self._make_nvml_probe()
        return self._make_rss_probe()

    def _make_rss_probe(self) -> Probe:
        self._series = [_Series("process RSS")]
        if sys.platform.startswith("linux"):
            try:
                fd = os.open(_STATM, os.O_RDONLY)
                page = os.sysconf("SC_PAGE_SIZE")
                int(os.pread(fd, 128, 0).split()[1])  # check the format once
            except (OSError, ValueError, IndexError) as exc:
                self.notes.append(f"{_STATM} not readable ({exc}); using psutil")
            else:
                pread, split = os.pread, bytes.split

                def statm() -> tuple[int, ...]:
                    return (int(split(pread(fd, 128, 0))[1]) * page,)

                self._statm = (fd, page, statm)
                self._close = lambda: os.close(fd)
                self.source = f"RSS from {_STATM} (resident set size of this process)"
                return statm
        import psutil

        info = psutil.Process().memory_info

        def ps() -> tuple[int, ...]:
            return (int(info().rss),)

        self.source = "RSS from psutil.Process().memory_info() (resident set size of this process)"
        return ps

    def _make_nvml_probe(self) -> Probe | None:
        self._series = [_Series("NVML process used"), _Series("NVML device used"), _Series("NVML reserved")]
        ok, reason = nvml.nvml_status()
        if not ok:
            self.source = f"no device samples: NVML not available ({reason})"
            return None
        dev, why = nvml.device_for_torch(self.device)
        if dev is None:
            self.source = f"no device samples: {why}"
            return None
        handle, pid = dev.handle, os.getpid()
        process_memory, memory_info = nvml.process_memory, nvml.memory_info
        series = self._series
        every = self.process_every
        perf = time.perf_counter
        grace_until = perf() + PROCESS_GRACE_S
        state = {"tick": 0, "held": MISSING, "seen": False}

        def probe() -> tuple[int, ...]:
            d = r = MISSING
            p = state["held"]
            tick = state["tick"]
            state["tick"] = tick + 1
            if not series[0].stopped and tick % every == 0:
                pm = process_memory(handle, pid)
                p = MISSING if pm.used is nvml.NA else int(pm.used)
                state["held"] = p
                if p != MISSING:
                    state["seen"] = True
                    series[0].failures = 0
                elif not (pm.no_processes and not state["seen"] and perf() < grace_until):
                    # an empty process list before our first good read is "no context yet", not a failure.
                    # A list of other processes without our PID is not: the engine creates our context
                    # before sampling starts, so that is NVML not seeing this PID (a container without
                    # --pid=host), and the series stops soon with that reason
                    self._fail(series[0], pm.reason)
            elif series[0].stopped:
                p = MISSING
            if not (series[1].stopped and series[2].stopped):
                mi = memory_info(handle)
                d = MISSING if mi.used is nvml.NA else int(mi.used)
                r = MISSING if mi.reserved is nvml.NA else int(mi.reserved)
                why = mi.reason or ("memory info v1: no reserved field" if mi.version == 1 else "")
                for s, v in ((series[1], d), (series[2], r)):
                    if v == MISSING:
                        self._fail(s, why)
                    else:
                        s.failures = 0
            return p, d, r

        self.source = f"NVML process used memory, {dev.name} ({dev.uuid}), PID {pid}"
        if every > 1:
            self.notes.append(
                f"NVML process series read every {every} ticks (~{self.rate_hz / every:g} Hz, value held "
                f"between reads); device series at {self.rate_hz:g} Hz"
            )
        return probe

    def _fail(self, s: _Series, reason: str) -> None:
        if s.failures == 0 and not s.reason:
            s.reason = reason or "not available"
        s.failures += 1
        if s.failures >= MAX_FAILURES and not s.stopped:
            s.stopped = True
            t = time.perf_counter() - self.t0
            self.notes.append(
                f"{s.name}: stopped at t={t:.3f} s after {s.failures} failed reads ({s.reason})"
            )

    # --- the thread ---------------------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        cols = 1 + (3 if self._cuda else 1)
        new = [np.empty(capacity, np.float64)] + [
            np.full(capacity, MISSING, np.int64) for _ in range(cols - 1)
        ]
        n = self._n
        for dst, src in zip(new, self._bufs, strict=False):
            dst[:n] = src[:n]
        self._bufs = tuple(new)  # one atomic swap; readers read the count first

    def _run(self) -> None:
        self.short_slice = _request_short_slice()
        try:
            if self._statm is not None and self._probe is self._statm[2]:
                self._loop_statm(self._statm[0], self._statm[1])
            else:
                self._loop_probe()
        except Exception as exc:  # never into the run: note it, keep what was sampled
            self.notes.append(f"sampler stopped by an error: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                self._close()
            self.cpu_seconds = time.thread_time()

    def _loop_statm(self, fd: int, page: int) -> None:
        """The RSS loop: ``_loop_probe`` with the statm read inlined (less work per wake-up).

        ``statm`` is "size resident shared ...", in pages; the second field is the RSS.
        """
        perf, sleep, pread = time.perf_counter, time.sleep, os.pread
        period = 1.0 / (self.rate_hz * RATE_MARGIN)
        gap, backlog = 0.5 * period, MAX_BACKLOG * period
        t0 = self.t0
        bufs = self._bufs
        cap = bufs[0].shape[0]
        tv, pv = _view(bufs[0]), _view(bufs[1])  # item stores cheaper than numpy's
        n = 0
        due = b = perf()
        wake = due
        while not self._stop:
            if b < wake:  # b: end of the previous probe, a microsecond or so before now
                sleep(wake - b)
                if self._stop:
                    break
            a = perf()
            s = pread(fd, 128, 0)
            b = perf()
            if n == cap:
                self._alloc(cap + _CHUNK)
                bufs = self._bufs
                cap = bufs[0].shape[0]
                tv, pv = _view(bufs[0]), _view(bufs[1])
            tv[n] = 0.5 * (a + b) - t0
            i = s.find(32)
            pv[n] = int(s[i + 1 : s.find(32, i + 1)]) * page
            n += 1
            self._n = n  # publish after the slot is written
            due += period
            if b - due > backlog:  # far behind: drop the ticks beyond the backlog
                due = b - backlog
            wake = due if due > b + gap else b + gap

    def _loop_probe(self) -> None:
        probe = self._probe
        assert probe is not None
        perf, sleep = time.perf_counter, time.sleep
        period = 1.0 / (self.rate_hz * RATE_MARGIN)
        gap, backlog = 0.5 * period, MAX_BACKLOG * period
        t0 = self.t0
        series = self._series
        bufs = self._bufs
        cap = bufs[0].shape[0]
        n = 0
        due = b = perf()
        wake = due
        while not self._stop:
            if b < wake:
                sleep(wake - b)
                if self._stop:
                    break
            a = perf()
            values = probe()
            b = perf()
            if n == cap:
                self._alloc(cap + _CHUNK)
                bufs = self._bufs
                cap = bufs[0].shape[0]
            bufs[0][n] = 0.5 * (a + b) - t0
            for col, v in enumerate(values, 1):
                bufs[col][n] = v
            n += 1
            self._n = n  # publish after the slot is written
            due += period
            if b - due > backlog:
                due = b - backlog
            wake = due if due > b + gap else b + gap
            if all(s.stopped for s in series):
                self.notes.append(f"sampling ended at t={b - t0:.3f} s: no series could be read")
                break

    # --- result -------------------------------------------------------------------------------------------

    def _collect(self) -> DeviceSamples:
        n = self._n
        bufs = self._bufs
        if not bufs:
            return DeviceSamples(source=self._source_with_notes(), achieved_hz=0.0)
        cols = [b[:n].copy() for b in bufs]
        t = cols[0]
        hz = (n - 1) / float(t[-1] - t[0]) if n >= 2 and t[-1] > t[0] else 0.0
        device_used = reserved = None
        if self._cuda:
            device_used = cols[2] if bool((cols[2] != MISSING).any()) else None
            reserved = cols[3] if bool((cols[3] != MISSING).any()) else None
        for s in self._series:
            if s.reason and not s.stopped:
                self.notes.append(f"{s.name}: some reads failed ({s.reason})")
        return DeviceSamples(
            t=t,
            process=cols[1],
            device_used=device_used,
            driver_reserved=reserved,
            source=self._source_with_notes(),
            achieved_hz=hz,
            process_hz=hz / self.process_every if self._cuda else hz,
        )

    def _source_with_notes(self) -> str:
        return "; ".join([self.source, *self.notes]) if self.notes else self.source
