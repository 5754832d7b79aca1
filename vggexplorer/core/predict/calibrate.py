"""Calibrate a GPU profile on a real card: the CUDA context, lazily loaded kernels, cuBLAS, cuDNN."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vggexplorer.core.predict.gpus import GpuProfile


class CalibrationError(RuntimeError):
    """Calibration needs a CUDA GPU (and NVML for the context size)."""


def backward_grad_for(y: Any) -> Any:
    """A contiguous, materialised output gradient for ``y.backward(grad)`` (allocated by the caller's clock).

    ``y.sum().backward()`` passes ``grad.expand(y.shape)`` (stride 0, tools/autograd/derivatives.yaml ``sum``)
    to ``y``'s backward; convolution backward makes it contiguous, allocating a y-sized copy while it runs.
    """
    import torch

    return torch.ones_like(y, memory_format=torch.contiguous_format)


def calibrate(device: int = 0, *, save: bool = True) -> GpuProfile:
    """Measure, on the GPU at hand, what the trace cannot see; save it as a calibrated profile.

    One short run in this process (call it in a fresh process, before anything else touched CUDA):

    - CUDA context: NVML process used − ``memory_reserved`` after CUDA init and a 1-element tensor.
    - cuBLAS (and cuBLASLt) workspace: ``memory_allocated`` growth at the first ``mm`` (first ``addmm`` with a
      bias and 4 rows) minus the output blocks.
    - cuDNN convolution workspaces: ``max_memory_allocated`` during VGG-like convolutions (3×3 and a 7×7 with
      4096 outputs, forward and backward) minus the tensors alive around the call; the largest ratio to the
      input bytes becomes ``conv_workspace.fraction_of_input`` (cap: the largest workspace seen × 2).
    - lazily loaded kernels: NVML process used − context − reserved after those calls.

    Saved to ``user_profile_dir()/<name>.json`` with ``estimated: false``.
    """
    import re

    import torch

    from vggexplorer.core.devices import nvml
    from vggexplorer.core.predict.gpus import ConvWorkspacePolicy, user_profile_dir

    if not torch.cuda.is_available():
        raise CalibrationError("calibration needs a CUDA GPU: torch.cuda.is_available() is False here")
    dev = torch.device("cuda", device)
    props = torch.cuda.get_device_properties(dev)
    nv, why = nvml.device_for_torch(dev)

    def process_used() -> int | None:
        if nv is None:
            return None
        pm = nvml.process_memory(nv.handle)
        return None if nvml.is_na(pm.used) else int(pm.used)

    torch.cuda.synchronize(dev)
    one = torch.empty(1, device=dev)
    torch.cuda.synchronize(dev)
    used0 = process_used()
    reserved0 = torch.cuda.memory_reserved(dev)
    context = (used0 - reserved0) if used0 is not None else None

    def alloc_growth(fn: Any) -> int:
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        grown = torch.cuda.memory_allocated(dev) - before
        out_bytes = sum(
            ((t.untyped_storage().nbytes() + 511) // 512) * 512
            for t in (out if isinstance(out, tuple) else (out,))
        )
        del out
        return max(grown - out_bytes, 0)

    a = torch.randn(4, 8, device=dev)
    w = torch.randn(8, 8, device=dev)
    bias = torch.randn(8, device=dev)
    cublas = alloc_growth(lambda: a @ w)
    cublaslt = alloc_growth(lambda: torch.addmm(bias, a, w))

    fractions: list[float] = []
    biggest = 0
    torch.backends.cudnn.benchmark = False
    for n, cin, cout, hw, k in ((8, 64, 64, 112, 3), (8, 256, 256, 56, 3), (4, 512, 4096, 12, 7)):
        x = torch.randn(n, cin, hw, hw, device=dev, requires_grad=True)
        conv = torch.nn.Conv2d(cin, cout, k).to(dev)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        y = conv(x)
        torch.cuda.synchronize(dev)
        fwd_ws = torch.cuda.max_memory_allocated(dev) - torch.cuda.memory_allocated(dev)
        # the output gradient exists before the window: y.sum().backward() would hand convolution_backward
        # an expanded stride-0 gradient (tools/autograd/derivatives.yaml, ``sum``: ``grad.expand(...)``),
        # which cuDNN's backward copies contiguous inside the window — a y-sized block counted as workspace
        grad = backward_grad_for(y)
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        y.backward(grad)
        torch.cuda.synchronize(dev)
        bwd_ws = torch.cuda.max_memory_allocated(dev) - max(torch.cuda.memory_allocated(dev), base)
        ws = max(fwd_ws, bwd_ws, 0)
        in_bytes = x.numel() * x.element_size()
        fractions.append(ws / in_bytes)
        biggest = max(biggest, ws)
        del x, conv, y, grad
    # autograd's device thread gets its own cuBLAS workspace at its first matmul (handles are per thread,
    # CublasHandlePool.cpp ``getCurrentCUDABlasHandle``): measured as the growth of a backward through an mm
    # minus the gradient it returns; the predictor inserts one of ``cublas_workspace`` size per thread
    a2 = torch.randn(4, 8, device=dev, requires_grad=True)
    out2 = a2 @ w
    g2 = backward_grad_for(out2)
    torch.cuda.synchronize(dev)
    before_bwd = torch.cuda.memory_allocated(dev)
    out2.backward(g2)
    torch.cuda.synchronize(dev)
    grad_block = ((a2.grad.untyped_storage().nbytes() + 511) // 512) * 512 if a2.grad is not None else 0
    cublas_bwd = max(torch.cuda.memory_allocated(dev) - before_bwd - grad_block, 0)
    del a2, out2, g2
    torch.cuda.synchronize(dev)
    used1 = process_used()
    kernels = (used1 - (context or 0) - torch.cuda.memory_reserved(dev)) if used1 is not None else None
    del one
    cc = (int(props.major), int(props.minor))
    sources = [
        f"calibrated on this machine with torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()} by vggexplorer calibrate",
    ]
    if context is None:
        sources.append(f"CUDA context not measured ({why}); default estimate kept")
    if cublas_bwd != cublas:
        sources.append(
            f"cuBLAS workspace of autograd's device thread measured {cublas_bwd:,} B, main thread "
            f"{cublas:,} B: the predictor uses the main thread's size for both"
        )
    profile = GpuProfile(
        name=str(props.name),
        total_memory_bytes=int(props.total_memory),
        compute_capability=cc,
        cuda_context_bytes=int(context) if context is not None and context > 0 else 400 * 1024 * 1024,
        lazy_kernels_bytes=int(kernels) if kernels is not None and kernels > 0 else 0,
        cublas_workspace=int(cublas),
        cublaslt_workspace=int(cublaslt),
        conv_workspace=ConvWorkspacePolicy(max(fractions, default=0.0), max(2 * biggest, 1), True, True),
        aliases=(),
        estimated=context is None,
        sources=tuple(sources),
    )
    if save:
        slug = re.sub(r"[^a-z0-9]+", "-", profile.name.lower()).strip("-") or "gpu"
        path = user_profile_dir() / f"{slug}.json"
        profile.save(path)
        profile = replace(profile, path=str(path))
    return profile
