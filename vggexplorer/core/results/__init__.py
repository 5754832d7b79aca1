"""Results: what a run (measured or predicted) leaves behind, and everything that only reads it.

``result`` holds :class:`RunResult` (tensor-level and allocator-level timelines, device samples, layers,
spans, the summary, the run's metadata) as plain numpy data that crosses processes; ``runfile`` reads and
writes run files and CSV; ``analysis`` is the shared analysis every view and comparison uses (the one
step-function lookup, categories at any time, phases, alignment of runs); ``compare`` explains the
difference between two runs by category and by layer; ``wording`` says runs, devices and summaries in words;
``synthetic`` builds deterministic runs for tests and benchmarks. Results never import the run or predict
stages, nor torch.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "analysis": ["categories_at_peak", "category_levels_at", "level_at", "step_at"],
        "compare": ["Comparison", "comparison_to_rows", "explain"],
        "result": ["DeviceSamples", "Fault", "LayerStats", "RunResult", "Span", "Summary", "Timeline"],
        "runfile": ["RunFileError", "load_run", "save_run", "write_csv"],
        "synthetic": ["synthetic_run"],
        "wording": ["describe_run", "run_label", "run_summary", "short_gpu_name"],
    },
)
