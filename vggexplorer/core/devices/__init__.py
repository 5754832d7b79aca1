"""Devices: NVML wrapped once, and the environment record (torch, CUDA, driver, GPUs)."""
