"""NVML, wrapped once: lazy, lock-guarded init; every query returns a value or ``NA``; nothing raises.

The idea follows nvitop (``nvitop/api/libnvml.py``: one query function with ``default=NA``;
``nvitop/api/utils.py``: ``NA`` is a string that reads "N/A" and computes as NaN). The code is ours.

- ``pynvml`` (package ``nvidia-ml-py``) is imported and ``nvmlInit`` called on first use, never at import
  time; the first thread to need NVML initialises it under a lock; ``nvmlShutdown`` runs at interpreter exit.
- Every query returns its value or ``NA`` (and, where a user needs to know why, a reason string). NVML
  errors, a missing library, a GPU that falls off the bus mid-run: none of it raises into callers.
- Devices are matched to CUDA devices by UUID, never by index: NVML numbers all GPUs of the machine,
  CUDA only those in ``CUDA_VISIBLE_DEVICES``, in its own order.
- Per-process memory comes from ``nvmlDeviceGetComputeRunningProcesses`` (``_v3``, ``_v2``, then v1). NVML
  reports host PIDs: in a container without ``--pid=host`` our ``os.getpid()`` is not in its list, and we say
  so instead of returning 0.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

if TYPE_CHECKING:
    import torch

__all__ = [
    "NA",
    "MemoryInfo",
    "NaType",
    "NvmlDevice",
    "ProcessMemory",
    "cuda_uuid",
    "device_count",
    "device_for_torch",
    "device_name",
    "driver_version",
    "find_device",
    "is_na",
    "memory_info",
    "nvml_status",
    "process_memory",
    "reset",
    "shutdown",
]


# --- NA: "not available", reads as N/A, computes as NaN ---------------------------------------------------


@final
class NaType(str):
    """The singleton ``NA``: a ``str`` equal to ``"N/A"`` that turns into NaN in arithmetic.

    ``f"{NA}"`` and ``f"{NA:>8.1f}"`` give ``N/A``; ``NA + 1``, ``NA / 2**20``, ``float(NA)`` give NaN;
    ``bool(NA)`` is False. ``int(NA)`` raises (there is no honest integer for "not available").
    Comparisons with numbers are False, like NaN's.
    """

    __slots__ = ()
    _instance: ClassVar[NaType | None] = None

    def __new__(cls) -> NaType:
        if cls._instance is None:
            cls._instance = super().__new__(cls, "N/A")
        return cls._instance

    def __repr__(self) -> str:
        return "NA"

    def __reduce__(self) -> str:
        return "NA"  # pickles as the module global: stays a singleton

    def __bool__(self) -> bool:
        return False

    def __float__(self) -> float:
        return math.nan

    def __format__(self, spec: str) -> str:
        try:
            return super().__format__(spec)
        except ValueError:  # a numeric spec such as ">8.1f": keep the width, say N/A
            return "N/A".rjust(len(format(math.nan, spec)))

    @staticmethod
    def _nan_with(other: object) -> float | Any:
        return math.nan if isinstance(other, int | float) or other is NA else NotImplemented

    def __add__(self, other: object) -> Any:
        if isinstance(other, str) and other is not NA:
            return str.__add__(self, other)
        return self._nan_with(other)

    def __radd__(self, other: object) -> Any:
        return self._nan_with(other)

    def __sub__(self, other: object) -> Any:
        return self._nan_with(other)

    __rsub__ = __sub__
    __truediv__ = __sub__
    __rtruediv__ = __sub__
    __floordiv__ = __sub__
    __rfloordiv__ = __sub__

    def __mul__(self, other: object) -> Any:
        return self._nan_with(other)

    def __rmul__(self, other: object) -> Any:
        return self._nan_with(other)

    def __neg__(self) -> float:
        return math.nan

    __pos__ = __neg__
    __abs__ = __neg__

    def __lt__(self, other: object) -> bool:
        if isinstance(other, int | float):
            return False
        return str.__lt__(self, other)  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        if isinstance(other, int | float):
            return False
        return str.__le__(self, other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        if isinstance(other, int | float):
            return False
        return str.__gt__(self, other)  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        if isinstance(other, int | float):
            return False
        return str.__ge__(self, other)  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other) if isinstance(other, str) else False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return str.__hash__(self)


NA: Final[NaType] = NaType()


def is_na(value: object) -> bool:
    """True for ``NA`` (and for a float NaN that came out of arithmetic with it)."""
    return value is NA or (isinstance(value, float) and math.isnan(value))


# --- lazy, lock-guarded init ------------------------------------------------------------------------------

_lock = threading.RLock()
_pynvml: Any = None  # the module once imported
_ok: bool | None = None  # None: not tried yet
_reason = "NVML not initialised yet"
_driver = ""
_atexit_registered = False
_closed = False  # set by shutdown(): no re-init afterwards (a daemon thread may query during exit)
# Which call works on this driver, learned once: "_v3" / "_v2" / "" (v1); memory info version 2 or 1.
_proc_suffix: str | None = None
_mem_version: int | None = None


def _describe_init_error(nv: Any, exc: BaseException) -> str:
    def is_(name: str) -> bool:
        cls = getattr(nv, name, None)
        return isinstance(cls, type) and isinstance(exc, cls)

    if is_("NVMLError_LibraryNotFound"):
        return "NVML library not found (no NVIDIA driver)"
    if is_("NVMLError_DriverNotLoaded"):
        return "NVIDIA driver not loaded"
    if is_("NVMLError_NoPermission"):
        return "no permission to use NVML"
    if is_("NVMLError_FunctionNotFound"):
        return "NVML library too old (a function is missing)"
    return f"NVML init failed: {exc}"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _init() -> Any | None:
    """The pynvml module with NVML initialised, or None (then ``_reason`` says why). Never raises."""
    global _pynvml, _ok, _reason, _driver, _atexit_registered
    if _ok is not None:  # fast path, no lock: a bool read is atomic
        return _pynvml if _ok else None
    with _lock:
        if _ok is not None:
            return _pynvml if _ok else None
        if _closed:
            return None
        try:
            import pynvml as nv
        except Exception as exc:  # ImportError, or a broken install
            _ok, _reason = False, f"nvidia-ml-py not installed ({exc})"
            return None
        try:
            nv.nvmlInit()
        except Exception as exc:
            _ok, _reason = False, _describe_init_error(nv, exc)
            return None
        _pynvml = nv
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        try:
            _driver = _text(nv.nvmlSystemGetDriverVersion())
        except Exception:
            _driver = ""
        _reason = f"driver {_driver}" if _driver else "driver version unknown"
        _ok = True
        return nv


def _try(name: str, *args: Any, **kwargs: Any) -> tuple[Any, str, bool]:
    """``(value, "", False)`` or ``(NA, reason, missing)``; ``missing``: this driver/binding lacks the call.

    The function is looked up on the module at call time (so tests can monkeypatch it). Never raises.
    """
    nv = _init()
    if nv is None:
        return NA, _reason, False
    fn = getattr(nv, name, None)
    if fn is None:
        return NA, f"{name} is not in this nvidia-ml-py", True
    try:
        return fn(*args, **kwargs), "", False
    except Exception as exc:  # NVMLError (GPU lost, not supported, ...), ctypes errors
        kinds = ("NVMLError_FunctionNotFound", "NVMLError_NotSupported", "NVMLError_ArgumentVersionMismatch")
        missing = any(
            isinstance(c, type) and isinstance(exc, c) for c in (getattr(nv, k, None) for k in kinds)
        )
        return NA, f"{name}: {exc}", missing


def _call(name: str, *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """``(value, "")`` or ``(NA, reason)``."""
    value, reason, _ = _try(name, *args, **kwargs)
    return value, reason


def nvml_status() -> tuple[bool, str]:
    """``(True, "driver 580.65.06")`` or ``(False, "NVML library not found (no NVIDIA driver)")``.

    Initialises NVML on first call (lazily, once).
    """
    nv = _init()
    return nv is not None, _reason


def driver_version() -> str | NaType:
    return _driver if _init() is not None and _driver else NA


def device_count() -> int | NaType:
    value, _ = _call("nvmlDeviceGetCount")
    return NA if value is NA else int(value)


def shutdown() -> None:
    """Shut NVML down for good (runs at exit after a successful init). Later queries return NA."""
    global _ok, _reason, _closed
    with _lock:
        if _ok and _pynvml is not None:
            with contextlib.suppress(Exception):
                _pynvml.nvmlShutdown()
        _ok, _reason, _closed = False, "NVML shut down", True


def reset() -> None:
    """Shut down and forget everything learned; the next query initialises again. For tests."""
    global _pynvml, _ok, _reason, _driver, _proc_suffix, _mem_version, _closed
    with _lock:
        shutdown()
        _pynvml, _ok, _reason, _driver, _closed = None, None, "NVML not initialised yet", "", False
        _proc_suffix, _mem_version = None, None


# --- devices ----------------------------------------------------------------------------------------------


def _norm_uuid(uuid: str) -> str:
    u = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        if u.startswith(prefix):
            u = u[len(prefix) :]
    return u


@dataclass(frozen=True)
class NvmlDevice:
    """An NVML device handle with what identifies it. ``index`` is NVML's index (not the CUDA ordinal)."""

    handle: Any
    uuid: str  # as NVML reports it: "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    index: int | NaType
    name: str | NaType

    def label(self) -> str:
        return f"{self.name} ({self.uuid})"


def device_name(handle: Any) -> str | NaType:
    value, _ = _call("nvmlDeviceGetName", handle)
    return NA if value is NA else _text(value)


def _device(handle: Any, uuid: str) -> NvmlDevice:
    index, _ = _call("nvmlDeviceGetIndex", handle)
    return NvmlDevice(handle, uuid, NA if index is NA else int(index), device_name(handle))


def find_device(uuid: str) -> tuple[NvmlDevice | None, str]:
    """The NVML device with this UUID (with or without the ``GPU-`` prefix), or ``(None, reason)``."""
    nv = _init()
    if nv is None:
        return None, _reason
    want = _norm_uuid(uuid)
    if not want:
        return None, "no UUID to look up"
    for candidate in (uuid.strip(), f"GPU-{want}", f"MIG-{want}"):
        handle, _ = _call("nvmlDeviceGetHandleByUUID", candidate)
        if handle is not NA:
            got, _ = _call("nvmlDeviceGetUUID", handle)
            return _device(handle, _text(got) if got is not NA else candidate), ""
    # Fall back to a scan: tolerant of prefix and case differences.
    count = device_count()
    if count is NA:
        return None, "NVML could not count devices"
    seen: list[str] = []
    for i in range(int(count)):
        handle, _ = _call("nvmlDeviceGetHandleByIndex", i)
        if handle is NA:
            continue
        got, _ = _call("nvmlDeviceGetUUID", handle)
        if got is NA:
            continue
        text = _text(got)
        seen.append(text)
        if _norm_uuid(text) == want:
            return _device(handle, text), ""
    return None, f"no NVML device has UUID {uuid} (NVML sees: {', '.join(seen) or 'none'})"


def cuda_uuid(index: int) -> str | None:
    """The UUID of CUDA device ``index`` as NVML writes it (``GPU-…``), or None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        raw = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:
        return None
    raw = raw.strip()
    if raw.upper().startswith(("GPU-", "MIG-")):
        return raw
    return f"GPU-{raw}" if raw else None


def device_for_torch(device: torch.device | str) -> tuple[NvmlDevice | None, str]:
    """The NVML device behind a CUDA ``torch.device``, matched by UUID; ``(None, reason)`` otherwise."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None, f"{dev} is not a CUDA device"
    index = dev.index if dev.index is not None else 0
    uuid = cuda_uuid(index)
    if uuid is None:
        return None, f"no UUID for {dev} (CUDA not available)"
    return find_device(uuid)


# --- memory -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryInfo:
    """Device memory as NVML reports it. Bytes or NA.

    ``reserved`` (driver/firmware) comes from ``nvmlDeviceGetMemoryInfo_v2`` only (``version`` = 2); with
    the v1 fallback it is NA. Whether v2's ``used`` includes ``reserved`` differs between the header's
    notes and drivers, so both are kept raw and never added together here.
    """

    total: int | NaType
    free: int | NaType
    used: int | NaType
    reserved: int | NaType
    version: int  # 2, 1, or 0 when nothing could be read
    reason: str = ""


def memory_info(handle: Any) -> MemoryInfo:
    """Memory info v2 (with ``reserved``), falling back to v1 where the driver lacks v2."""
    global _mem_version
    nv = _init()
    if nv is None:
        return MemoryInfo(NA, NA, NA, NA, 0, _reason)
    reason = ""
    if _mem_version in (None, 2) and hasattr(nv, "nvmlMemory_v2"):
        m, reason, missing = _try("nvmlDeviceGetMemoryInfo", handle, version=nv.nvmlMemory_v2)
        if m is not NA:
            _mem_version = 2
            return MemoryInfo(int(m.total), int(m.free), int(m.used), int(m.reserved), 2)
        if not missing:
            return MemoryInfo(NA, NA, NA, NA, 0, reason)  # a real failure (GPU lost): v1 would fail too
    m, reason1 = _call("nvmlDeviceGetMemoryInfo", handle)
    if m is NA:
        return MemoryInfo(NA, NA, NA, NA, 0, reason1 or reason)
    _mem_version = 1
    return MemoryInfo(int(m.total), int(m.free), int(m.used), NA, 1)


@dataclass(frozen=True)
class ProcessMemory:
    """One process's used GPU memory (bytes) or NA with a reason; ``pids`` = the PIDs NVML listed."""

    used: int | NaType
    reason: str = ""
    pids: tuple[int, ...] = ()
    #: NVML answered with an empty process list (no process has a context on the device yet)
    no_processes: bool = False


_PROC_SUFFIXES: Final = ("_v3", "_v2", "")


def _running_processes(handle: Any) -> tuple[Any, str]:
    """``(list, "")`` or ``(NA, reason)``, trying ``_v3``, ``_v2``, v1 once and remembering what works."""
    global _proc_suffix
    if _proc_suffix is not None:
        return _call("nvmlDeviceGetComputeRunningProcesses" + _proc_suffix, handle)
    reason = ""
    for suffix in _PROC_SUFFIXES:
        procs, reason, missing = _try("nvmlDeviceGetComputeRunningProcesses" + suffix, handle)
        if procs is not NA:
            _proc_suffix = suffix
            return procs, ""
        if not missing:
            return NA, reason  # a real failure: an older version will not do better
    return NA, reason


def process_memory(handle: Any, pid: int | None = None) -> ProcessMemory:
    """GPU memory NVML attributes to ``pid`` (default: this process) on the device, or NA and why."""
    pid = os.getpid() if pid is None else pid
    procs, reason = _running_processes(handle)
    if procs is NA:
        return ProcessMemory(NA, reason)
    pids = tuple(int(p.pid) for p in procs)
    for p in procs:
        if int(p.pid) == pid:
            used = p.usedGpuMemory
            if used is None:  # NVML_VALUE_NOT_AVAILABLE, pynvml maps it to None (Windows WDDM)
                return ProcessMemory(NA, "NVML does not report per-process memory here (Windows WDDM?)", pids)
            return ProcessMemory(int(used), "", pids)
    if not pids:
        return ProcessMemory(
            NA, f"NVML lists no compute process on this device (PID {pid} has no CUDA context?)", (), True
        )
    return ProcessMemory(
        NA,
        f"PID {pid} is not among NVML's compute processes ({', '.join(map(str, pids[:8]))}): NVML reports "
        "host PIDs, so in a container without --pid=host this process cannot be matched",
        pids,
    )
