"""core.results.wording: run labels, GPU names and the one run summary sentence."""

from __future__ import annotations

from dataclasses import replace

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.results.result import Fault
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.core.results.wording import (
    describe_run,
    measures_text,
    prediction_gpu,
    run_label,
    run_summary,
    short_gpu_name,
)


def test_run_label_and_description() -> None:
    r = synthetic_run(head="fcn", input_hw=384, batch=8, cuda=True)
    assert run_label(r) == "fcn at 384"
    assert run_label(synthetic_run(name="mine", predicted=True)) == "mine (predicted)"
    d = describe_run(r)
    assert d.startswith("fcn at 384 · vgg11 · batch 8 · train · float32") and "Synthetic GPU" in d


def test_short_gpu_names() -> None:
    assert short_gpu_name("NVIDIA GeForce RTX 3060") == "RTX 3060"
    assert short_gpu_name("NVIDIA H100 80GB HBM3") == "H100 80GB HBM3"
    r = synthetic_run(cuda=True, predicted=True)
    r.environment = replace(r.environment, gpu_profile={"name": "NVIDIA GeForce RTX 4090"})
    assert prediction_gpu(r) == "RTX 4090"


def test_run_summary_sentence() -> None:
    r = synthetic_run(head="fc", input_hw=64, batch=1, cuda=True)
    s = r.summary
    alloc, ten = fmt_bytes(s.peak_allocated_bytes), fmt_bytes(s.peak_tensor_bytes)
    assert s.peak_reserved_bytes is not None and s.peak_device_bytes is not None
    full = (
        f"peak allocator {alloc} · tensors {ten} · reserved {fmt_bytes(s.peak_reserved_bytes)} · "
        f"process {fmt_bytes(s.peak_device_bytes)}"
    )
    assert run_summary(r) == full
    assert (
        run_summary(r, outcome=True, full=False, sep=", ") == f"done: peak allocator {alloc}, tensors {ten}"
    )
    assert f"params {fmt_bytes(s.param_bytes)}, reserved" in run_summary(r, params=True, sep=", ")
    r.status = "oom"
    r.fault = Fault("oom", "CUDA out of memory", "features.3", "forward", 0)
    assert run_summary(r, outcome=True, full=False).startswith("out of memory at features.3 (forward): peak")
    r.fault = replace(r.fault, layer="")
    assert run_summary(r, outcome=True).startswith("out of memory at - (forward): ")


def test_measures_text_gives_each_curve_its_rate_and_cuda_span_meaning() -> None:
    """The plot's provenance line: on CUDA the NVML process series is read at a lower rate than the device
    series (each curve says its own), and layer spans are host enqueue times (kernels run asynchronously)."""
    cuda = synthetic_run(cuda=True)
    assert cuda.device.device_used is not None and len(cuda.device)
    cuda.device = replace(cuda.device, achieved_hz=1000.0, process_hz=100.0)
    text = measures_text([cuda])
    assert "device 1000 Hz, process 100 Hz" in text and "host enqueue times" in text
    cpu = synthetic_run(cuda=False)
    cpu.device = replace(cpu.device, achieved_hz=990.0, process_hz=0.0)
    text = measures_text([cpu])
    assert "990 Hz" in text and "process " not in text.split("sampled at")[1]
    assert "host enqueue" not in text
    predicted = synthetic_run(cuda=True, predicted=True)
    assert "host enqueue" not in measures_text([predicted])
