"""The CUDA caching allocator model and allocator snapshots (parse, replay, export)."""
