"""The run stage: a RunConfig in, a measured RunResult out — on the CPU or a CUDA GPU.

``engine`` is the one run generator (``run_iter``/``run``) that the GUI's child process, the CLI and the
tests drive; it runs ``execution.execute`` — the step program of ``program`` (model, inputs, optimizer,
forward, loss, backward, step, zero_grad) under the ``tracer`` (live tensor storages by module, phase and
category) — on a worker thread, with the allocator level (``allocator_level``: the CPU profiler's memory
events, or CUDA's memory history replayed in block bytes) and the device sampler (``sampler``: NVML or
RSS) on the same clock; ``attribution`` turns what they saw into a RunResult; ``hygiene`` gives memory back
after a run. The child processes live here too: ``child`` (spawn, the fork server, the one
terminate/kill ladder), ``entries`` (what the GUI starts in them), ``forkprep`` (what the fork server
preloads), ``progress`` and ``accumulate`` (live partial results). Torch is imported by the modules that
run, never by this package's ``__init__``; nothing here imports Qt.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "attribution": ["build_result"],
        "engine": ["run", "run_iter"],
        "execution": ["Execution", "execute", "resolve_device"],
        "progress": ["Progress"],
        "tracer": ["FailAt", "Tracer"],
    },
)
