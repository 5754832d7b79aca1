"""Environment: device picker entries, status line, the environment dict a run stores."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator

import psutil
import pynvml
import pytest
import torch
from test_nvml import UUID_B, FakeNvml, fake_cuda, nvml_error, two_gpus

from vggexplorer.core.devices import environment as envmod
from vggexplorer.core.devices import nvml
from vggexplorer.core.devices.environment import (
    DeviceInfo,
    best_device,
    collect_environment,
    list_devices,
    status_line,
)

GiB = 1024**3


@pytest.fixture(autouse=True)
def _fresh_nvml() -> Iterator[None]:
    nvml.reset()
    yield
    nvml.reset()


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def h100(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """NVML sees two GPUs; CUDA_VISIBLE_DEVICES=1 makes the H100 (NVML index 1) cuda:0."""
    fake = FakeNvml(two_gpus()).install(monkeypatch)
    fake.gpus[1].total = int(79.1 * GiB)
    fake_cuda(monkeypatch, fake.gpus, visible=[1])
    return fake


def test_cpu_entry_always_first(no_cuda: None) -> None:
    devices = list_devices()
    assert len(devices) == 1
    cpu = devices[0]
    assert isinstance(cpu, DeviceInfo) and cpu.id == "cpu" and cpu.kind == "cpu"
    assert cpu.total_bytes == psutil.virtual_memory().total
    assert cpu.label.startswith("CPU · ") and cpu.label.endswith(" GiB RAM")
    assert envmod.cpu_model() in cpu.label
    assert best_device() == "cpu"
    with pytest.raises(AttributeError):
        cpu.id = "x"  # type: ignore[misc]  # frozen


def test_cuda_entries_in_ordinal_order(h100: FakeNvml) -> None:
    devices = list_devices()
    assert [d.id for d in devices] == ["cpu", "cuda:0"]
    gpu = devices[1]
    assert gpu.label == "cuda:0 · NVIDIA H100 80GB HBM3 · 79.1 GiB"
    assert (gpu.kind, gpu.total_bytes) == ("cuda", int(79.1 * GiB))
    assert best_device() == "cuda:0"


def test_status_line_without_gpu(no_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    assert status_line() == "No GPU: measuring on the CPU (torch built without CUDA)"
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    line = status_line()
    assert line.startswith("No GPU: measuring on the CPU (torch built with CUDA 12.4, but no GPU is usable")


def test_status_line_with_gpu(h100: FakeNvml) -> None:
    assert status_line() == "NVML ok · driver 580.65.06"


def test_status_line_gpu_without_nvml(h100: FakeNvml) -> None:
    h100.fail["nvmlInit"] = nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert status_line() == "NVML not available: NVML library not found (no NVIDIA driver)"


def test_collect_environment_cpu() -> None:
    env = collect_environment("cpu")
    json.dumps(env)  # plain data: goes into run.json
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    assert env["cuda"] == torch.version.cuda
    assert env["cpu_cores_logical"] == os.cpu_count()
    assert env["ram_bytes"] == psutil.virtual_memory().total
    assert env["device"] == "cpu" and env["device_kind"] == "cpu"
    assert env["torch_threads"] == torch.get_num_threads()
    ok, reason = nvml.nvml_status()
    assert env["nvml"] == {"available": ok, "reason": reason}
    assert "device_uuid" not in env


def test_collect_environment_cuda_matches_nvml_by_uuid(h100: FakeNvml) -> None:
    env = collect_environment("cuda:0")
    json.dumps(env)
    assert env["device_name"] == "NVIDIA H100 80GB HBM3"
    assert env["device_total_bytes"] == int(79.1 * GiB)
    assert env["compute_capability"] == "9.0"
    assert env["device_uuid"] == UUID_B
    assert env["driver"] == "580.65.06"
    assert env["nvml_device"] == {"name": "NVIDIA H100 80GB HBM3", "uuid": UUID_B, "index": 1}
    assert env["nvml"] == {"available": True, "reason": "driver 580.65.06"}


def test_collect_environment_cuda_with_nvml_broken(h100: FakeNvml) -> None:
    for name in FakeNvml.NAMES[2:]:
        h100.fail[name] = nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
    env = collect_environment("cuda:0")  # never raises
    json.dumps(env)
    assert env["device_name"] == "NVIDIA H100 80GB HBM3"  # from torch
    assert env["driver"] is None
    assert "error" in env["nvml_device"]


def test_collect_environment_cuda_device_without_cuda(no_cuda: None) -> None:
    env = collect_environment("cuda:0")
    assert env["device_error"] == "CUDA not available in this process"


@pytest.mark.gpu
def test_gpu_environment_is_complete() -> None:
    env = collect_environment("cuda:0")
    assert env["device_uuid"].startswith(("GPU-", "MIG-"))
    assert env["device_name"] == torch.cuda.get_device_properties(0).name
    assert env["cuda"] is not None
    ok, _ = nvml.nvml_status()
    if ok:
        assert env["driver"] and "error" not in env["nvml_device"], env["nvml_device"]
    assert [d.id for d in list_devices()][:2] == ["cpu", "cuda:0"]
    assert status_line().startswith(("NVML ok · driver ", "NVML not available: "))
