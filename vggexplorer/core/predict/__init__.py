"""Prediction without a GPU: fake traces, the predictor, its cache, GPU profiles."""
