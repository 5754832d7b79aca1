"""The CUDA caching allocator, as a model and as the snapshots the real one writes.

``caching`` is :class:`CachingAllocatorModel`, a faithful model of ``c10/cuda/CUDACachingAllocator.cpp``
(rounding, pools, segment sizes, best fit, splitting, merging, the free-and-retry path) that the predictor
replays fake traces through; ``snapshot`` reads ``torch.cuda.memory._snapshot()`` pickles with an unpickler
that refuses every class; ``snapshot_replay`` replays a real trace through the model and checks every
address; ``snapshot_export`` writes runs as snapshots pytorch.org/memory_viz opens. Pure Python and numpy:
no torch, so snapshots open anywhere.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "caching": ["AllocatorEvent", "AllocatorOOM", "CachingAllocatorModel", "SegmentInfo", "round_size"],
        "snapshot": ["Snapshot", "SnapshotError", "load_snapshot", "parse_snapshot"],
        "snapshot_export": ["export_model_snapshot", "export_snapshot"],
        "snapshot_replay": ["ReplayReport", "replay"],
    },
)
