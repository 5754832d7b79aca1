"""The model stage: layer types, HeadSpec, backbones, building the nn.Module, shapes, and RunConfig."""
