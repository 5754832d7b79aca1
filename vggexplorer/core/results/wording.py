"""Run wording, Qt-free: what a run is and what it measured, in the few words the GUI, the plots, the
comparison and the CLI show.

``run_label`` (``fcn at 384``), ``device_description``, ``describe_run`` (the one-line caption),
``curve_name`` and ``measures_text`` (what each plotted curve is), ``short_gpu_name`` and
``prediction_gpu`` (``RTX 3060``), and ``run_summary``: the one sentence of a run's peaks that the engine's
last progress message, the GUI's status bar and the CLI print.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.results.result import RunResult

#: The word for each run status at the head of ``run_summary(..., outcome=True)``.
STATUS_WORDS: dict[str, str] = {
    "ok": "done",
    "oom": "out of memory",
    "cancelled": "cancelled",
    "error": "failed",
}


# --------------------------------------------------------------------------------------------------------
# What a run is, in a few words


def is_cuda(r: RunResult) -> bool:
    """A CUDA run (measured or predicted): the allocator timeline has reserved bytes, or the config says."""
    dev = r.environment.device or r.config.ran_on
    return r.allocator.reserved is not None or dev.startswith("cuda")


def input_hw(r: RunResult) -> tuple[int, int]:
    """The run's input height and width."""
    return r.config.run.input_hw


def fmt_hw(hw: tuple[int, int] | None) -> str:
    """``384`` for a square input, ``384×512`` otherwise, ``?`` when unknown."""
    if hw is None:
        return "?"
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}×{hw[1]}"


def run_label(r: RunResult) -> str:
    """``fcn at 384`` (or the run's own name); predicted runs say so."""
    label = r.name or f"{r.config.label} at {fmt_hw(input_hw(r))}"
    if r.predicted and "predicted" not in label:
        label = f"{label} (predicted)"
    return label


def _cfg(r: RunResult, *keys: str) -> Any:
    for k in keys:
        v = getattr(r.config, k) if k in ("backbone", "head_label", "preset") else getattr(r.config.run, k)
        if v not in (None, ""):
            return v
    return None


def device_description(r: RunResult) -> str:
    env = r.environment
    dev = env.device or r.config.ran_on or ("cuda" if is_cuda(r) else "cpu")
    name = env.device_name or env.cpu
    return f"{dev} {name}" if name and str(name) not in str(dev) else str(dev)


def describe_run(r: RunResult) -> str:
    """``fc at 224 · vgg11 · batch 8 · train · float32 · cuda:0 NVIDIA H100`` (+ predicted / status)."""
    parts = [run_label(r)]
    for keys, fmt in (
        ()
        if r.name
        else (
            (("backbone",), "{}"),
            (("batch",), "batch {}"),
            (("mode",), "{}"),
            (("dtype",), "{}"),
            (("optimizer",), "{}"),
        )
    ):
        v = _cfg(r, *keys)
        if v is not None:
            parts.append(fmt.format(v))
    parts.append(device_description(r))
    text = " · ".join(parts)
    if r.predicted:
        text += " · PREDICTED (allocator model, not measured)"
    if r.status != "ok":
        f = r.fault
        where = f" in {f.layer} ({f.phase})" if f and f.layer else ""
        text += f" · {r.status.upper()}{where}"
    return text


def curve_name(kind: str, r: RunResult, several: bool) -> str:
    """The legend name of a curve: what it measures, ``predicted …`` for a model replay."""
    cuda = is_cuda(r)
    names = {
        "allocated": "allocated (CUDA caching allocator)" if cuda else "CPU allocator total",
        "reserved": "reserved (CUDA caching allocator)",
        "tensors": "live tensors",
        "device_used": "NVML device used (whole GPU)",
        "process": "NVML this process" if cuda else "process RSS",
    }
    name = names[kind]
    if r.predicted and kind in ("allocated", "reserved", "tensors"):
        name = f"predicted {name}"
    return f"{run_label(r)}: {name}" if several else name


def measures_text(results: Sequence[RunResult]) -> str:
    """One line saying what each curve measures, from the runs' own provenance."""
    cuda = any(is_cuda(r) for r in results)
    cpu = any(not is_cuda(r) for r in results)
    bits = []
    if cuda:
        bits.append("allocated/reserved: CUDA caching-allocator counters at every allocation and free")
    if cpu:
        bits.append(
            "CPU allocator total: bytes the c10 CPU allocator has handed out (tensors, kernel buffers)"
        )
    bits.append("live tensors: bytes of live tensor storages")
    if any(r.predicted for r in results):
        bits.append("predicted: replayed through the caching-allocator model, not measured")
    sources = sorted({r.device.source for r in results if r.device.source})
    lower = "lower plot: " + ("NVML device used and this process" if cuda else "process RSS")
    if cuda and cpu:
        lower = "lower plot: NVML (CUDA runs), process RSS (CPU runs)"
    if sources:
        lower += f" ({'; '.join(sources)})"
    rates = sorted({_sample_rates(r) for r in results if len(r.device) and not r.predicted} - {""})
    if rates:
        lower += f", sampled at {'; '.join(rates)}"
    bits.append(lower)
    if any(is_cuda(r) and not r.predicted for r in results):
        bits.append("layer spans on CUDA: host enqueue times, not kernel completion")
    return " · ".join(bits)


def _sample_rates(r: RunResult) -> str:
    """``device 1000 Hz, process 100 Hz`` for a CUDA run (NVML's process list is read less often than the
    device's memory), ``1000 Hz`` where both series have one rate."""
    d = r.device
    if d.achieved_hz <= 0:
        return ""
    if d.device_used is not None and 0 < d.process_hz < d.achieved_hz:
        return f"device {d.achieved_hz:.0f} Hz, process {d.process_hz:.0f} Hz"
    return f"{d.achieved_hz:.0f} Hz"


def short_gpu_name(name: str) -> str:
    """``RTX 3060`` for ``NVIDIA GeForce RTX 3060``."""
    for junk in ("NVIDIA ", "GeForce ", " (PREDICTED)"):
        name = name.replace(junk, "")
    return name.strip()


def prediction_gpu(r: RunResult) -> str:
    """``RTX 3060`` for a prediction on ``NVIDIA GeForce RTX 3060``."""
    prof = r.environment.gpu_profile
    name = prof.get("name") if isinstance(prof, dict) else None
    return short_gpu_name(str(name or r.environment.device_name or "GPU"))


def run_summary(
    r: RunResult, *, outcome: bool = False, params: bool = False, full: bool = True, sep: str = " · "
) -> str:
    """The run's peaks in one sentence: ``peak allocator 1.2 GiB · tensors 1.1 GiB · reserved 1.3 GiB ·
    process 1.8 GiB``.

    ``outcome``: led by what became of the run (``done: …``, ``out of memory at features.3 (forward): …``);
    ``params``: with the parameter bytes; ``full``: with reserved and process peaks where the run has them.
    """
    s = r.summary
    bits = [
        f"peak allocator {fmt_bytes(s.peak_allocated_bytes)}",
        f"tensors {fmt_bytes(s.peak_tensor_bytes)}",
    ]
    if params:
        bits.append(f"params {fmt_bytes(s.param_bytes)}")
    if full and s.peak_reserved_bytes is not None:
        bits.append(f"reserved {fmt_bytes(s.peak_reserved_bytes)}")
    if full and s.peak_device_bytes is not None:
        bits.append(f"process {fmt_bytes(s.peak_device_bytes)}")
    text = sep.join(bits)
    if not outcome:
        return text
    f = r.fault
    where = f" at {f.layer or '-'} ({f.phase})" if f is not None and r.status != "ok" else ""
    return f"{STATUS_WORDS[r.status]}{where}: {text}"
