"""Device sampler: rate, clock, RSS plausibility, thread hygiene, live reads, NVML failures mid-run.

No test sleeps: the main thread does torch work (which releases the GIL) until the sampler has enough
samples, or waits on events the fake NVML sets, or joins the sampler thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pynvml
import pytest
import torch
from test_nvml import UUID_B, FakeGpu, FakeNvml, fake_cuda, nvml_error, two_gpus

from vggexplorer.core.devices import nvml
from vggexplorer.core.run import sampler
from vggexplorer.core.run.sampler import MAX_FAILURES, MISSING, DeviceSampler, read_rss, valid_max

GiB = 1024**3
DEADLINE_S = 20.0


@pytest.fixture(autouse=True)
def _fresh_nvml() -> Iterator[None]:
    nvml.reset()
    yield
    nvml.reset()


def work_until(s: DeviceSampler, n: int, device: str = "cpu") -> None:
    """Torch work (the GIL is released inside the kernels) until the sampler holds ``n`` samples."""
    a = torch.randn(384, 384, device=device)
    deadline = time.perf_counter() + DEADLINE_S
    while s.count < n:
        a = torch.tanh(a @ a)
        if device != "cpu":
            torch.cuda.synchronize()  # wait without the GIL
        assert time.perf_counter() < deadline, f"only {s.count} samples after {DEADLINE_S} s"


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vggexplorer-device-sampler"]


# --- CPU / RSS --------------------------------------------------------------------------------------------


def test_statm_read_failing_stops_the_inline_loop_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RSS loop reads /proc/self/statm itself (not through the probe): a read error there ends sampling
    with what was sampled so far and the reason, never an exception into the run."""
    real = os.pread
    calls = {"n": 0}

    def pread(fd: int, n: int, offset: int) -> bytes:
        calls["n"] += 1
        if calls["n"] > 30:
            raise OSError(5, "Input/output error")
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    s = DeviceSampler("cpu", t0=time.perf_counter(), rate_hz=1000.0).start()
    deadline = time.monotonic() + 10
    while s.running and time.monotonic() < deadline:
        time.sleep(0.01)
    r = s.stop()
    assert 0 < len(r) <= 30 and np.all(r.process > 0)
    assert "sampler stopped by an error: OSError" in r.source


def test_cpu_rate_clock_and_rss() -> None:
    t0 = time.perf_counter()
    with DeviceSampler("cpu", t0, rate_hz=1000.0) as s:
        work_until(s, 300)
    r = s.samples
    assert len(r) >= 300
    assert r.achieved_hz > 200, r.achieved_hz
    assert r.achieved_hz < 1100  # at most RATE_MARGIN (0.5 %) above the asked rate; no bursts
    assert np.all(np.diff(r.t) > 0), "sample times must increase strictly"
    assert r.t[0] >= 0 and r.t[-1] <= time.perf_counter() - t0
    assert r.device_used is None and r.driver_reserved is None
    assert r.process.dtype == np.int64 and np.all(r.process > 0)
    rss = psutil.Process().memory_info().rss
    assert abs(int(r.process[-1]) - rss) < max(64 * 1024**2, 0.1 * rss)
    assert "RSS" in r.source
    assert 0 < s.cpu_seconds < r.t[-1] - r.t[0]  # the sampler's own CPU cost, well under its wall time
    if os.path.exists("/proc/self/statm"):
        assert r.source.startswith("RSS from /proc/self/statm")


def test_read_rss_matches_psutil() -> None:
    a, b = read_rss(), psutil.Process().memory_info().rss
    assert abs(a - b) < 16 * 1024**2


def test_rss_follows_a_big_allocation() -> None:
    with DeviceSampler("cpu", time.perf_counter()) as s:
        work_until(s, 20)
        before = s.latest()
        big = torch.ones(256 * 1024**2 // 4)  # 256 MiB, touched
        n = s.count
        work_until(s, n + 20)
        after = s.latest()
        del big
    assert before is not None and after is not None
    assert after[0] > before[0]
    assert after[1] - before[1] > 200 * 1024**2


def test_psutil_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler, "_STATM", "/nonexistent/statm")
    with DeviceSampler("cpu", time.perf_counter()) as s:
        work_until(s, 20)
    assert s.samples.source.startswith("RSS from psutil")
    assert "not readable" in s.samples.source
    assert np.all(s.samples.process > 0)


# --- lifecycle --------------------------------------------------------------------------------------------


def test_thread_gone_after_stop_and_stop_is_idempotent() -> None:
    s = DeviceSampler("cpu", time.perf_counter()).start()
    assert s.running and len(sampler_threads()) == 1
    first = s.stop()
    assert not s.running and sampler_threads() == []
    assert s.stop() is first
    with pytest.raises(RuntimeError, match="twice"):
        s.start()


def test_thread_gone_when_the_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), DeviceSampler("cpu", time.perf_counter()) as s:
        work_until(s, 5)
        _ = 1 / 0
    assert not s.running and sampler_threads() == []
    assert len(s.samples) >= 5


def test_samples_before_stop_is_an_error_and_bad_rate_rejected() -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        DeviceSampler("cpu", 0.0, rate_hz=0)
    with pytest.raises(ValueError, match="rate_hz"):
        DeviceSampler("cpu", 0.0, rate_hz=float("nan"))
    s = DeviceSampler("cpu", 0.0)
    with pytest.raises(RuntimeError, match="not been stopped"):
        _ = s.samples
    empty = s.stop()  # never started: empty, no thread
    assert len(empty) == 0 and empty.achieved_hz == 0.0


def test_probe_error_mid_run_ends_sampling_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pread
    calls = {"n": 0}
    broken = threading.Event()

    def flaky(fd: int, n: int, off: int) -> bytes:
        calls["n"] += 1
        if calls["n"] > 30:
            broken.set()
            raise OSError(5, "Input/output error")
        return real(fd, n, off)

    monkeypatch.setattr(os, "pread", flaky)
    s = DeviceSampler("cpu", time.perf_counter()).start()
    assert broken.wait(DEADLINE_S)
    thread = s._thread
    assert thread is not None
    thread.join(DEADLINE_S)  # the thread ends by itself
    r = s.stop()
    assert not thread.is_alive()
    assert len(r) == 29  # the first call is the format check in start()
    assert "sampler stopped by an error: OSError" in r.source


# --- live reads -------------------------------------------------------------------------------------------


def test_latest_and_snapshot_since_while_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler, "_CHUNK", 16)  # force many buffer growths under the reader
    seen: list[np.ndarray] = []
    errors: list[str] = []
    done = threading.Event()
    s = DeviceSampler("cpu", time.perf_counter())
    assert s.latest() is None
    s.start()

    def reader() -> None:
        i = 0
        while not done.is_set():
            chunk = s.snapshot_since(i)
            if len(chunk):
                if not (np.all(np.diff(chunk.t) > 0) and np.all(chunk.process > 0)):
                    errors.append(f"bad chunk at {i}: {chunk.t[:3]}, {chunk.process[:3]}")
                seen.append(chunk.t)
                i += len(chunk)
            s.latest()

    rt = threading.Thread(target=reader)
    rt.start()
    try:
        work_until(s, 150)
    finally:
        done.set()
        rt.join()
        r = s.stop()
    assert errors == []
    live = np.concatenate(seen)
    assert len(live) >= 50
    np.testing.assert_array_equal(live, r.t[: len(live)])
    latest = s.latest()
    assert latest is not None and latest == (float(r.t[-1]), int(r.process[-1]))
    tail = s.snapshot_since(len(r) - 3)
    assert len(tail) == 3 and tail.source == r.source.split("; ")[0]
    assert len(s.snapshot_since(10**9)) == 0


def test_valid_max() -> None:
    assert valid_max(None) is None
    assert valid_max(np.array([MISSING, MISSING], np.int64)) is None
    assert valid_max(np.array([5, MISSING, 7, 3], np.int64)) == 7


# --- CUDA path against a fake NVML ------------------------------------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(two_gpus()).install(monkeypatch)
    fake_cuda(monkeypatch, fake.gpus, visible=[1])  # cuda:0 = NVML index 1
    return fake


def event_after(fake: FakeNvml, name: str, n: int) -> threading.Event:
    ev = threading.Event()

    def hook(called: str, count: int) -> None:
        if called == name and count >= n:
            ev.set()

    fake.hooks.append(hook)
    return ev


def test_cuda_samples_nvml_process_device_and_reserved(fake_gpu: FakeNvml) -> None:
    g = fake_gpu.gpus[1]

    def grow(name: str, count: int) -> None:  # memory grows as the "run" goes on
        if name == "nvmlDeviceGetMemoryInfo_v2":
            g.used = 5 * GiB + count * 1024**2
            g.procs = [(4242, 1 * GiB), (os.getpid(), 3 * GiB + count * 1024**2)]

    fake_gpu.hooks.append(grow)
    enough = event_after(fake_gpu, "nvmlDeviceGetMemoryInfo_v2", 50)
    s = DeviceSampler("cuda:0", time.perf_counter(), process_hz=1000.0).start()
    try:
        assert enough.wait(DEADLINE_S)
    finally:
        r = s.stop()
    assert r.source == f"NVML process used memory, NVIDIA H100 80GB HBM3 ({UUID_B}), PID {os.getpid()}"
    assert len(r) >= 49 and r.device_used is not None and r.driver_reserved is not None
    assert np.all(r.process >= 3 * GiB) and np.all(np.diff(r.process) > 0)
    assert np.all(r.device_used >= 5 * GiB)
    assert np.all(r.driver_reserved == 512 * 1024**2)
    assert np.all(np.diff(r.t) > 0) and r.achieved_hz > 0
    assert fake_gpu.calls["nvmlDeviceGetMemoryInfo"] == 0  # v2 worked: no v1 calls


def test_cuda_gpu_disappearing_mid_run(fake_gpu: FakeNvml) -> None:
    lost_at = 25

    def lose(name: str, count: int) -> None:
        if name == "nvmlDeviceGetComputeRunningProcesses_v3" and count == lost_at:
            err = nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
            for f in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetMemoryInfo_v2"):
                fake_gpu.fail[f] = err

    fake_gpu.hooks.append(lose)
    s = DeviceSampler("cuda:0", time.perf_counter(), process_hz=1000.0).start()
    thread = s._thread
    assert thread is not None
    thread.join(DEADLINE_S)  # every series stops after MAX_FAILURES failed reads: the thread ends itself
    assert not thread.is_alive()
    r = s.stop()  # no exception
    assert len(r) == lost_at - 1 + MAX_FAILURES
    assert np.all(r.process[: lost_at - 1] == 3 * GiB)
    assert np.all(r.process[lost_at - 1 :] == MISSING)
    assert r.device_used is not None and np.all(r.device_used[lost_at - 1 :] == MISSING)
    assert "GPU is lost" in r.source and "sampling ended" in r.source
    assert "NVML process used: stopped" in r.source
    assert valid_max(r.process) == 3 * GiB
    # after the series stopped, NVML was not asked again
    assert fake_gpu.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == lost_at - 1 + MAX_FAILURES


def test_cuda_container_pid_keeps_device_series(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(two_gpus(pid=999_999)).install(monkeypatch)
    fake_cuda(monkeypatch, fake.gpus, visible=[1])
    enough = event_after(fake, "nvmlDeviceGetMemoryInfo_v2", MAX_FAILURES + 30)
    s = DeviceSampler("cuda:0", time.perf_counter(), process_hz=1000.0).start()
    try:
        assert enough.wait(DEADLINE_S)
        assert s.running  # the process series stopped, the device series go on
    finally:
        r = s.stop()
    assert np.all(r.process == MISSING)
    assert r.device_used is not None and np.all(r.device_used == 5 * GiB)
    assert "host PIDs" in r.source and "NVML process used: stopped" in r.source
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == MAX_FAILURES


def test_cuda_memory_v1_fallback_has_no_reserved(fake_gpu: FakeNvml) -> None:
    fake_gpu.fail["nvmlDeviceGetMemoryInfo_v2"] = nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    enough = event_after(fake_gpu, "nvmlDeviceGetMemoryInfo", MAX_FAILURES + 5)
    s = DeviceSampler("cuda:0", time.perf_counter(), process_hz=1000.0).start()
    try:
        assert enough.wait(DEADLINE_S)
    finally:
        r = s.stop()
    assert r.driver_reserved is None  # never available with v1
    assert r.device_used is not None and np.all(r.device_used == 5 * GiB + 512 * 1024**2)
    assert "memory info v1" in r.source


def test_cuda_without_nvml_gives_no_samples_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(two_gpus()).install(monkeypatch)
    fake.fail["nvmlInit"] = nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    fake_cuda(monkeypatch, fake.gpus, visible=[1])
    with DeviceSampler("cuda:0", time.perf_counter()) as s:
        assert not s.running
    r = s.samples
    assert len(r) == 0
    assert r.source == "no device samples: NVML not available (NVML library not found (no NVIDIA driver))"


def test_cuda_device_not_in_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(two_gpus()).install(monkeypatch)
    stranger = FakeGpu("GPU-99999999-9999-9999-9999-999999999999")  # CUDA sees a GPU NVML does not list
    fake_cuda(monkeypatch, [stranger], visible=[0])
    with DeviceSampler("cuda:0", time.perf_counter()) as s:
        assert not s.running
    r = s.samples
    assert len(r) == 0
    assert r.source.startswith(f"no device samples: no NVML device has UUID {stranger.uuid}")


# --- on a real GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_sampler_sees_an_allocation() -> None:
    with DeviceSampler("cuda:0", time.perf_counter()) as s:
        x = torch.empty(256 * 1024**2, dtype=torch.uint8, device="cuda:0")
        torch.cuda.synchronize()
        work_until(s, s.count + 20, "cuda:0")
    r = s.samples
    assert len(r) > 20, r.source
    assert r.device_used is not None and valid_max(r.device_used) is not None
    peak = valid_max(r.process)
    if peak is None:
        pytest.skip(f"NVML cannot match this PID here: {r.source}")
    assert peak >= torch.cuda.memory_reserved(0) >= 256 * 1024**2
    del x


# --- GPU path: the process series before the CUDA context exists, and its lower rate ----------------------


def test_cuda_process_series_survives_the_time_before_the_context(fake_gpu: FakeNvml) -> None:
    """NVML lists a PID among a GPU's compute processes only once the process holds a CUDA context there
    (``nvmlDeviceGetComputeRunningProcesses``, NVML API reference: "processes having a compute context on
    the device"). An empty list before the first good read is "no context yet" and must not stop the
    series (the old sampler stopped it for good after MAX_FAILURES = 20 such reads, ~20 ms at 1 kHz)."""
    g = fake_gpu.gpus[1]
    g.procs = []  # our context does not exist yet
    listed_at = 3 * MAX_FAILURES

    def create_context(name: str, count: int) -> None:
        if name == "nvmlDeviceGetComputeRunningProcesses_v3" and count == listed_at:
            g.procs = [(os.getpid(), 2 * GiB)]

    fake_gpu.hooks.append(create_context)
    enough = event_after(fake_gpu, "nvmlDeviceGetComputeRunningProcesses_v3", listed_at + 10)
    s = DeviceSampler("cuda:0", time.perf_counter(), process_hz=1000.0).start()
    try:
        assert enough.wait(DEADLINE_S)
    finally:
        r = s.stop()
    assert "NVML process used: stopped" not in r.source
    assert valid_max(r.process) == 2 * GiB
    assert np.all(r.process[: listed_at - 1] == MISSING)  # before the context: no value, no failure


def test_cuda_empty_process_list_after_a_good_read_still_counts(fake_gpu: FakeNvml) -> None:
    """The grace is for the time before the first good read only: a process list that empties later (the
    context was destroyed, the GPU reset) is a failure like any other."""
    g = fake_gpu.gpus[1]

    def destroy(name: str, count: int) -> None:
        if name == "nvmlDeviceGetComputeRunningProcesses_v3" and count == 5:
            g.procs = []

    fake_gpu.hooks.append(destroy)
    enough = event_after(fake_gpu, "nvmlDeviceGetMemoryInfo_v2", MAX_FAILURES + 30)
    s = DeviceSampler("cuda:0", time.perf_counter(), process_hz=1000.0).start()
    try:
        assert enough.wait(DEADLINE_S)
    finally:
        r = s.stop()
    assert "NVML process used: stopped" in r.source
    assert fake_gpu.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 4 + MAX_FAILURES


def test_cuda_process_series_is_read_at_a_lower_rate_and_says_so(fake_gpu: FakeNvml) -> None:
    """Each process read costs two driver calls (nvidia-ml-py's ``nvmlDeviceGetComputeRunningProcesses_v3``
    asks for the count, then the list) and a Python object per process, against one call for the device's
    memory info: the process series is read at PROCESS_HZ (100 Hz by default) and holds its value between
    reads, the device series keeps the sampler's rate; both rates are recorded."""
    from vggexplorer.core.run.sampler import PROCESS_HZ

    n_dev = 200
    enough = event_after(fake_gpu, "nvmlDeviceGetMemoryInfo_v2", n_dev)
    s = DeviceSampler("cuda:0", time.perf_counter(), rate_hz=1000.0).start()
    try:
        assert enough.wait(DEADLINE_S)
    finally:
        r = s.stop()
    every = round(1000.0 / PROCESS_HZ)
    assert s.process_every == every == 10
    dev_calls = fake_gpu.calls["nvmlDeviceGetMemoryInfo_v2"]
    assert fake_gpu.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == -(-dev_calls // every)
    assert np.all(r.process == 3 * GiB)  # held between reads: no gaps in the curve
    assert r.achieved_hz > 0 and r.process_hz == pytest.approx(r.achieved_hz / every)
    assert f"read every {every} ticks" in r.source and "device series at 1000 Hz" in r.source


def test_engine_creates_the_cuda_context_before_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run starts NVML sampling only after the CUDA context exists (``torch.cuda.synchronize`` →
    ``cudaDeviceSynchronize`` creates the primary context; ``torch._C._cuda_hasPrimaryContext`` checks it),
    so the first process reads can find this PID."""
    from vggexplorer.core.run import engine

    order: list[str] = []
    ctx = {"exists": False}

    def synchronize(device: object = None) -> None:
        order.append("context")
        ctx["exists"] = True

    def start(self: DeviceSampler) -> DeviceSampler:
        order.append("sampler" if ctx["exists"] else "sampler without context")
        return self

    monkeypatch.setattr(torch._C, "_cuda_hasPrimaryContext", lambda i: ctx["exists"], raising=False)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(DeviceSampler, "start", start)
    notes: list[str] = []
    s = engine.start_device_sampler(torch.device("cuda", 0), time.perf_counter(), 1000.0, notes)
    assert isinstance(s, DeviceSampler)
    assert order == ["context", "sampler"] and notes == []
    # a context that already exists is not touched again
    order.clear()
    engine.start_device_sampler(torch.device("cuda", 0), time.perf_counter(), 1000.0, notes)
    assert order == ["sampler"]
