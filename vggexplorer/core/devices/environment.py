"""What machine a run ran on, and which devices the user can pick.

``collect_environment`` goes into every RunResult (``environment``), so a saved run says which card, driver,
torch, CUDA and cuDNN produced its numbers. ``list_devices``/``best_device``/``status_line`` feed the GUI's
device picker and status bar.

Nothing here runs at import time. Asking for a CUDA device's properties initialises CUDA in this process
(``torch.cuda.get_device_properties``); that is the same process the runs use, so it costs nothing extra.
NVML is asked through :mod:`vggexplorer.core.devices.nvml`, which never raises.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.devices import nvml

if TYPE_CHECKING:
    import torch

__all__ = [
    "DeviceInfo",
    "best_device",
    "collect_environment",
    "cpu_model",
    "cuda_available",
    "list_devices",
    "status_line",
    "total_ram",
]


@dataclass(frozen=True)
class DeviceInfo:
    """One entry of the device picker."""

    id: str  # "cpu", "cuda:0", ... (what torch.device accepts)
    label: str  # "cuda:0 · NVIDIA H100 80GB HBM3 · 79.1 GiB" / "CPU · AMD EPYC 7B13 · 23.4 GiB RAM"
    total_bytes: int  # device memory (CUDA) or physical RAM (CPU)
    kind: Literal["cpu", "cuda"]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` "model name"), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return " ".join(name.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def total_ram() -> int:
    """Physical memory in bytes."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return 0


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, never raising."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _cpu_info() -> DeviceInfo:
    ram = total_ram()
    return DeviceInfo("cpu", f"CPU · {cpu_model()} · {fmt_bytes(ram)} RAM", ram, "cpu")


def list_devices() -> list[DeviceInfo]:
    """The CPU, then every CUDA device torch sees (in CUDA ordinal order)."""
    devices = [_cpu_info()]
    if not cuda_available():
        return devices
    import torch

    try:
        count = torch.cuda.device_count()
    except Exception:
        count = 0
    for i in range(count):
        try:
            p = torch.cuda.get_device_properties(i)
        except Exception:
            continue
        total = int(p.total_memory)
        devices.append(DeviceInfo(f"cuda:{i}", f"cuda:{i} · {p.name} · {fmt_bytes(total)}", total, "cuda"))
    return devices


def best_device() -> str:
    """``"cuda:0"`` when a GPU is usable, else ``"cpu"``."""
    return "cuda:0" if cuda_available() else "cpu"


def status_line() -> str:
    """One line for the status bar: what will be measured, and whether NVML works."""
    if not cuda_available():
        try:
            import torch

            built = torch.version.cuda
        except Exception:
            built = None
        if built is None:
            return "No GPU: measuring on the CPU (torch built without CUDA)"
        ok, reason = nvml.nvml_status()
        why = "" if ok else f"; {reason}"
        return f"No GPU: measuring on the CPU (torch built with CUDA {built}, but no GPU is usable{why})"
    ok, reason = nvml.nvml_status()
    if ok:
        return f"NVML ok · {reason}"
    return f"NVML not available: {reason}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect_environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Versions and hardware behind a run on ``device`` (plain JSON-able data). Never raises for NVML."""
    import torch

    dev = torch.device(device)
    cudnn: int | None = None
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        cudnn = None
    nvml_ok, nvml_reason = nvml.nvml_status()
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "nvidia_ml_py": _version("nvidia-ml-py"),
        "cpu": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": _physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": total_ram(),
        "device": str(dev),
        "device_kind": dev.type,
        "nvml": {"available": nvml_ok, "reason": nvml_reason},
    }
    if dev.type == "cuda" and cuda_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        try:
            p = torch.cuda.get_device_properties(index)
            env.update(
                device_name=p.name,
                device_total_bytes=int(p.total_memory),
                compute_capability=f"{p.major}.{p.minor}",
                multiprocessors=int(p.multi_processor_count),
            )
        except Exception as exc:
            env["device_error"] = f"{type(exc).__name__}: {exc}"
        env["device_uuid"] = nvml.cuda_uuid(index)
        env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        dv = nvml.driver_version()
        env["driver"] = None if dv is nvml.NA else str(dv)
        found, why = nvml.device_for_torch(dev)
        if found is None:
            env["nvml_device"] = {"error": why}
        else:
            index_nvml = None if found.index is nvml.NA else found.index
            env["nvml_device"] = {"name": str(found.name), "uuid": found.uuid, "index": index_nvml}
    elif dev.type == "cuda":
        env["device_error"] = "CUDA not available in this process"
    return env


def _physical_cores() -> int | None:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        return int(n) if n else None
    except Exception:
        return None
