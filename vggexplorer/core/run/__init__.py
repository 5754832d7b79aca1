"""The run stage: the engine, the tracer, the samplers, allocator-level sources, attribution."""
