"""NVML wrapper: lazy init, NA instead of exceptions, UUID matching, v2/v3 fallbacks.

Without a GPU the real library is missing, so most tests install ``FakeNvml``: the ``pynvml`` functions
replaced (monkeypatch) by a scriptable fake that raises real ``pynvml.NVMLError`` subclasses on demand.
``FakeNvml`` and ``fake_cuda`` are reused by test_sampler.py and test_environment.py.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
import torch

from vggexplorer.core.devices import nvml
from vggexplorer.core.devices.nvml import NA

GiB = 1024**3


def nvml_error(code: int) -> pynvml.NVMLError:
    """A real pynvml error instance (``NVMLError(code)`` returns the matching subclass)."""
    return pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    uuid: str  # NVML form, "GPU-…"
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * GiB
    used: int = 1 * GiB
    reserved: int = 512 * 1024**2
    procs: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, usedGpuMemory)


class FakeNvml:
    """Replaces the pynvml functions the wrapper uses. ``fail[name] = exc`` makes ``name`` raise ``exc``.

    ``calls`` counts calls per function; ``after_call(name, n)`` hooks run after each call (tests use them
    to set events instead of sleeping).
    """

    def __init__(self, gpus: list[FakeGpu], driver: str = "580.65.06") -> None:
        self.gpus = gpus
        self.driver = driver
        self.fail: dict[str, BaseException] = {}
        self.calls: Counter[str] = Counter()
        self.hooks: list[Callable[[str, int], None]] = []
        self.lock = threading.Lock()

    def _enter(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1
            n = self.calls[name]
        for hook in self.hooks:
            hook(name, n)
        exc = self.fail.get(name)
        if exc is not None:
            raise exc

    def _gpu(self, handle: Any) -> FakeGpu:
        if not isinstance(handle, FakeGpu):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle

    # the pynvml surface ------------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= i < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[i]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByUUID")
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        self._enter("nvmlDeviceGetUUID")
        return self._gpu(h).uuid

    def nvmlDeviceGetName(self, h: Any) -> str:
        self._enter("nvmlDeviceGetName")
        return self._gpu(h).name

    def nvmlDeviceGetIndex(self, h: Any) -> int:
        self._enter("nvmlDeviceGetIndex")
        return self.gpus.index(self._gpu(h))

    def nvmlDeviceGetMemoryInfo(self, h: Any, version: int | None = None) -> SimpleNamespace:
        self._enter("nvmlDeviceGetMemoryInfo" + ("_v2" if version else ""))
        g = self._gpu(h)
        free = g.total - g.used - g.reserved
        if version:
            return SimpleNamespace(total=g.total, free=free, used=g.used, reserved=g.reserved)
        return SimpleNamespace(total=g.total, free=free, used=g.used + g.reserved)

    def _procs(self, name: str, h: Any) -> list[SimpleNamespace]:
        self._enter(name)
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self._gpu(h).procs]

    def nvmlDeviceGetComputeRunningProcesses_v3(self, h: Any) -> list[SimpleNamespace]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses_v3", h)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: Any) -> list[SimpleNamespace]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses_v2", h)

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[SimpleNamespace]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses", h)

    NAMES = (
        "nvmlInit",
        "nvmlShutdown",
        "nvmlSystemGetDriverVersion",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetName",
        "nvmlDeviceGetIndex",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetComputeRunningProcesses",
    )

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
        for name in self.NAMES:
            monkeypatch.setattr(pynvml, name, getattr(self, name))
        return self


UUID_A = "GPU-11111111-2222-3333-4444-555555555555"
UUID_B = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def two_gpus(pid: int | None = None) -> list[FakeGpu]:
    """NVML index 0 = A (not ours), index 1 = B (ours: this PID uses 3 GiB on it)."""
    me = os.getpid() if pid is None else pid
    return [
        FakeGpu(UUID_A, name="NVIDIA A100-SXM4-40GB", total=40 * GiB, procs=[(4242, 2 * GiB)]),
        FakeGpu(UUID_B, used=5 * GiB, procs=[(4242, 1 * GiB), (me, 3 * GiB)]),
    ]


class _TorchUuid:
    """Stands for torch's ``_CUuuid``: ``str()`` gives the bare 8-4-4-4-12 hex form (no ``GPU-``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def fake_cuda(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu], visible: list[int]) -> None:
    """Make torch believe CUDA works with ``visible`` (NVML indices) as cuda:0, cuda:1, … — as under
    ``CUDA_VISIBLE_DEVICES``. Only ``is_available``/``device_count``/``get_device_properties`` are faked."""

    def props(i: int) -> SimpleNamespace:
        if not 0 <= i < len(visible):
            raise AssertionError(f"invalid device ordinal {i}")
        g = gpus[visible[i]]
        return SimpleNamespace(
            name=g.name,
            total_memory=g.total,
            major=9,
            minor=0,
            multi_processor_count=132,
            uuid=_TorchUuid(g.uuid.removeprefix("GPU-")),
        )

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(visible))
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)


@pytest.fixture(autouse=True)
def _fresh_nvml() -> Iterator[None]:
    nvml.reset()
    yield
    nvml.reset()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    return FakeNvml(two_gpus()).install(monkeypatch)


# --- NA ---------------------------------------------------------------------------------------------------


def test_na_reads_as_na_and_computes_as_nan() -> None:
    assert str(NA) == "N/A" and f"{NA}" == "N/A" and NA == "N/A"
    assert f"[{NA:>8.1f}]" == "[     N/A]"  # numeric format spec keeps the width
    assert f"{NA:<5}|" == "N/A  |"
    for value in (
        NA + 1,
        1 + NA,
        NA - 1,
        2 - NA,
        NA * 3,
        3 * NA,
        NA / 1024,
        1024 / NA,
        NA // 2,
        -NA,
        abs(NA),
    ):
        assert isinstance(value, float) and math.isnan(value)
    assert math.isnan(float(NA))
    assert NA + " str" == "N/A str"
    assert not NA
    assert not (NA < 1) and not (NA > 1) and NA != 0 and not NA.__eq__(0)
    with pytest.raises(ValueError):
        int(NA)
    assert nvml.NaType() is NA
    assert pickle.loads(pickle.dumps(NA)) is NA
    assert nvml.is_na(NA) and nvml.is_na(NA * 2) and not nvml.is_na(0)


# --- lazy init --------------------------------------------------------------------------------------------


def test_import_does_not_touch_nvml() -> None:
    code = (
        "import sys\n"
        "import vggexplorer.core.devices.nvml, vggexplorer.core.run.sampler\n"
        "import vggexplorer.core.devices.environment\n"
        "print('pynvml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_init_is_lazy_and_happens_once_across_threads(fake: FakeNvml) -> None:
    assert fake.calls["nvmlInit"] == 0
    barrier = threading.Barrier(8)
    results: list[tuple[bool, str]] = []

    def worker() -> None:
        barrier.wait()
        results.append(nvml.nvml_status())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.calls["nvmlInit"] == 1
    assert results == [(True, "driver 580.65.06")] * 8
    assert nvml.driver_version() == "580.65.06"
    assert nvml.device_count() == 2


def test_real_library_status_never_raises() -> None:
    ok, reason = nvml.nvml_status()
    assert isinstance(reason, str) and reason
    if not ok:  # this machine: no driver
        assert nvml.driver_version() is NA
        assert nvml.device_count() is NA
        assert nvml.memory_info(object()).used is NA
        assert nvml.process_memory(object()).used is NA
        assert nvml.find_device(UUID_A)[0] is None
    else:
        assert reason.startswith("driver ")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML library not found (no NVIDIA driver)"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVIDIA driver not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission to use NVML"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML init failed: Unknown Error"),
    ],
)
def test_init_failure_gives_a_human_reason(fake: FakeNvml, code: int, reason: str) -> None:
    fake.fail["nvmlInit"] = nvml_error(code)
    assert nvml.nvml_status() == (False, reason)
    # every query is NA with that reason, and init is not retried on each query
    assert nvml.memory_info(fake.gpus[0]).reason == reason
    pm = nvml.process_memory(fake.gpus[0])
    assert pm.used is NA and pm.reason == reason
    assert nvml.find_device(UUID_A) == (None, reason)
    assert fake.calls["nvmlInit"] == 1


def test_shutdown_is_final_and_idempotent(fake: FakeNvml) -> None:
    assert nvml.nvml_status()[0]
    nvml.shutdown()
    nvml.shutdown()
    assert fake.calls["nvmlShutdown"] == 1
    assert nvml.nvml_status() == (False, "NVML shut down")
    assert nvml.memory_info(fake.gpus[0]).used is NA
    assert fake.calls["nvmlInit"] == 1  # no re-init after shutdown (daemon threads during exit)


# --- queries never raise ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FakeNvml.NAMES[2:])
@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_NOT_SUPPORTED]
)
def test_every_query_returns_na_when_nvml_fails(fake: FakeNvml, name: str, code: int) -> None:
    fake.fail[name] = nvml_error(code)
    g = fake.gpus[1]
    # none of these may raise, whatever fails underneath
    nvml.nvml_status()
    nvml.driver_version()
    nvml.device_count()
    nvml.device_name(g)
    found, _ = nvml.find_device(UUID_B)
    mi = nvml.memory_info(g)
    pm = nvml.process_memory(g)
    if name == "nvmlDeviceGetCount":
        assert nvml.device_count() is NA
    if name == "nvmlDeviceGetName":
        assert nvml.device_name(g) is NA
    if name == "nvmlDeviceGetMemoryInfo":  # only v1 fails: v2 still answers
        assert mi.version == 2 and mi.used == 5 * GiB
    if name.startswith("nvmlDeviceGetComputeRunningProcesses"):
        # v3 fails for real (GPU lost / unknown): no pointless fallback; "not supported": older versions tried
        if name.endswith("_v3") and code != pynvml.NVML_ERROR_NOT_SUPPORTED:
            assert pm.used is NA and "ComputeRunningProcesses_v3" in pm.reason
        else:
            assert pm.used == 3 * GiB
    if name == "nvmlDeviceGetHandleByUUID":  # falls back to a scan by index
        assert found is not None and found.uuid == UUID_B


def test_non_nvml_exceptions_are_contained_too(fake: FakeNvml) -> None:
    fake.fail["nvmlDeviceGetMemoryInfo_v2"] = OSError("ctypes call failed")
    fake.fail["nvmlDeviceGetMemoryInfo"] = OSError("ctypes call failed")
    mi = nvml.memory_info(fake.gpus[0])
    assert mi.used is NA and "ctypes call failed" in mi.reason


# --- memory info ------------------------------------------------------------------------------------------


def test_memory_info_v2_has_reserved(fake: FakeNvml) -> None:
    mi = nvml.memory_info(fake.gpus[1])
    assert (mi.total, mi.used, mi.reserved, mi.version) == (80 * GiB, 5 * GiB, 512 * 1024**2, 2)
    assert mi.free == 80 * GiB - 5 * GiB - 512 * 1024**2


@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH]
)
def test_memory_info_falls_back_to_v1_once(fake: FakeNvml, code: int) -> None:
    fake.fail["nvmlDeviceGetMemoryInfo_v2"] = nvml_error(code)
    mi = nvml.memory_info(fake.gpus[1])
    assert mi.version == 1 and mi.reserved is NA and mi.used == 5 * GiB + 512 * 1024**2
    nvml.memory_info(fake.gpus[1])
    assert fake.calls["nvmlDeviceGetMemoryInfo_v2"] == 1  # learned: v2 is not tried again


def test_memory_info_gpu_lost_is_na_not_v1(fake: FakeNvml) -> None:
    fake.fail["nvmlDeviceGetMemoryInfo_v2"] = nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
    mi = nvml.memory_info(fake.gpus[1])
    assert mi.used is NA and mi.version == 0 and "GPU is lost" in mi.reason
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 0


# --- process memory ---------------------------------------------------------------------------------------


def test_process_memory_matches_this_pid(fake: FakeNvml) -> None:
    pm = nvml.process_memory(fake.gpus[1])
    assert pm.used == 3 * GiB and pm.reason == "" and os.getpid() in pm.pids
    assert nvml.process_memory(fake.gpus[1], pid=4242).used == 1 * GiB


def test_process_memory_falls_back_v3_v2_v1(fake: FakeNvml) -> None:
    fake.fail["nvmlDeviceGetComputeRunningProcesses_v3"] = nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    fake.fail["nvmlDeviceGetComputeRunningProcesses_v2"] = nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    assert nvml.process_memory(fake.gpus[1]).used == 3 * GiB
    assert nvml.process_memory(fake.gpus[1]).used == 3 * GiB
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 1  # learned once
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses"] == 2


def test_process_memory_missing_binding_function(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pynvml, "nvmlDeviceGetComputeRunningProcesses_v3")
    assert nvml.process_memory(fake.gpus[1]).used == 3 * GiB
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 1


def test_process_memory_container_pid_is_na_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(two_gpus(pid=999_999)).install(monkeypatch)  # NVML sees host PIDs, not ours
    pm = nvml.process_memory(fake.gpus[1])
    assert pm.used is NA
    assert f"PID {os.getpid()}" in pm.reason and "host PIDs" in pm.reason and "--pid=host" in pm.reason
    assert pm.pids == (4242, 999_999)


def test_process_memory_no_processes_and_wddm(fake: FakeNvml) -> None:
    fake.gpus[1].procs = []
    pm = nvml.process_memory(fake.gpus[1])
    assert pm.used is NA and "no compute process" in pm.reason
    fake.gpus[1].procs = [(os.getpid(), None)]  # NVML_VALUE_NOT_AVAILABLE → None in pynvml
    pm = nvml.process_memory(fake.gpus[1])
    assert pm.used is NA and "WDDM" in pm.reason


# --- UUID matching ----------------------------------------------------------------------------------------


def test_find_device_by_uuid_any_prefix_or_case(fake: FakeNvml) -> None:
    for text in (UUID_B, UUID_B.removeprefix("GPU-"), UUID_B.upper(), f"  {UUID_B}  "):
        dev, why = nvml.find_device(text)
        assert dev is not None, why
        assert (dev.uuid, dev.index, dev.name) == (UUID_B, 1, "NVIDIA H100 80GB HBM3")
    dev, why = nvml.find_device("GPU-00000000-0000-0000-0000-000000000000")
    assert dev is None and UUID_A in why and UUID_B in why


def test_cuda_device_is_matched_by_uuid_not_index(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA_VISIBLE_DEVICES=1: cuda:0 is NVML's index 1
    fake_cuda(monkeypatch, fake.gpus, visible=[1])
    assert nvml.cuda_uuid(0) == UUID_B
    dev, why = nvml.device_for_torch("cuda:0")
    assert dev is not None, why
    assert dev.index == 1 and dev.uuid == UUID_B
    assert nvml.device_for_torch(torch.device("cuda"))[0] == dev  # no index → ordinal 0
    assert nvml.device_for_torch("cpu") == (None, "cpu is not a CUDA device")
    assert nvml.device_for_torch("cuda:3")[0] is None


def test_device_for_torch_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    dev, why = nvml.device_for_torch("cuda:0")
    assert dev is None and "CUDA not available" in why


# --- on a real GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_uuid_matching_finds_the_device() -> None:
    ok, reason = nvml.nvml_status()
    assert ok, reason
    dev, why = nvml.device_for_torch("cuda:0")
    assert dev is not None, why
    assert dev.uuid.startswith(("GPU-", "MIG-"))
    assert str(dev.name) == torch.cuda.get_device_properties(0).name
    mi = nvml.memory_info(dev.handle)
    assert mi.total is not NA and int(mi.total) >= torch.cuda.get_device_properties(0).total_memory


@pytest.mark.gpu
def test_gpu_process_memory_covers_reserved() -> None:
    x = torch.empty(256 * 1024**2, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    dev, why = nvml.device_for_torch("cuda:0")
    assert dev is not None, why
    pm = nvml.process_memory(dev.handle)
    if pm.used is NA and "host PIDs" in pm.reason:
        pytest.skip(f"container PID namespace: {pm.reason}")
    assert pm.used is not NA, pm.reason
    assert int(pm.used) >= torch.cuda.memory_reserved(0) >= 256 * 1024**2
    del x
