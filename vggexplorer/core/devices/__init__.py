"""The machine: devices and what runs on them, read without ever raising into a caller.

``nvml`` wraps NVML once (lazy, lock-guarded init; every query returns a value or ``NA``), which the run
stage's device sampler polls for the nvidia-smi-level curves; ``environment`` lists the devices a run can
use and records the environment of a run (torch, CUDA, cuDNN, driver, GPU, CPU, memory).
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "environment": ["DeviceInfo", "best_device", "collect_environment", "list_devices", "status_line"],
        "nvml": ["NA", "MemoryInfo", "ProcessMemory", "is_na", "memory_info", "process_memory"],
    },
)
