"""The step program: what one run does, op by op, under the tracer.

``program`` builds the model (seeded), the inputs and the optimizer, then runs the iterations: zero_grad
where the config puts it, forward, loss, backward, optimizer step; it marks what each tensor is for
(parameters, inputs, activations, gradients, optimizer state) and sets the tracer's phase. The same program
runs measured (``execute``) and fake (meta or FakeTensorMode tensors, for predictions), so a prediction
traces exactly what a run does.

Loss: cross-entropy against random (seeded) class targets. A head that outputs a score map (N×C×h×w, e.g.
``fcn`` at 384 gives 6×6) is scored on the spatially averaged logits (``mean`` over h, w), the usual way to
train a fully convolutional classifier on whole images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vggexplorer.core.model.backbone import build_model
from vggexplorer.core.model.config import (
    RunConfig,
)
from vggexplorer.core.model.head import HeadSpec
from vggexplorer.core.run.tracer import Tracer


@dataclass
class _State:
    """References the program holds, so that a fault can drop them all at once."""

    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    out: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    output_shape: tuple[int, ...] | None = None

    def clear(self) -> None:
        self.model = self.optimizer = self.x = self.y = self.out = self.loss = None


@dataclass
class LayerInfo:
    """Static facts about a leaf module, collected while the model is alive."""

    name: str
    type: str
    head_index: int
    param_bytes: int
    grad_bytes: int
    output_shape: tuple[int, ...] = ()
    output_bytes: int = 0


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; a score map N×C×h×w is averaged over h, w first (see the module docstring)."""
    logits = out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1) if out.dim() > 2 else out
    return torch.nn.functional.cross_entropy(logits.float(), y)


def _make_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.AdamW(params, lr=cfg.lr)


def _num_classes(spec: HeadSpec) -> int:
    for lay in reversed(spec.layers):
        kw = lay.kwargs
        if lay.type == "Linear":
            return int(kw["out_features"])
        if lay.type == "Conv2d":
            return int(kw["out_channels"])
    return 512


def _leaf_order(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def _program(
    cfg: RunConfig,
    dev: torch.device,
    tr: Tracer,
    st: _State,
    on_iteration: Callable[[int], None] | None,
    optimizer_options: Mapping[str, Any] | None = None,
) -> None:
    tr.set_phase("setup", -1)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.head, device=dev, init=True)
    if cfg.channels_last:  # like model.to(memory_format=...), which FakeTensorMode cannot do ("swap")
        with torch.no_grad():
            for prm in model.parameters():
                if prm.dim() == 4:
                    prm.data = prm.data.contiguous(memory_format=torch.channels_last)
    st.model = model
    tr.set_model(model)
    params = list(model.parameters())
    tr.mark(params, "parameters")
    tr.mark(model.buffers(), "buffers")
    n, (h, w) = cfg.batch, cfg.input_hw
    x = torch.randn(n, 3, h, w, device=dev)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, _num_classes(cfg.head), (n,), device=dev)
    st.x, st.y = x, y
    tr.mark([x, y], "inputs")
    model.train(cfg.train)
    if cfg.mode == "train-step":
        st.optimizer = _make_optimizer(cfg, params)
        if optimizer_options:  # e.g. foreach=True: what the optimizer would default to for CUDA params
            for group in st.optimizer.param_groups:
                group.update(optimizer_options)
            st.optimizer.defaults.update(optimizer_options)
    amp: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if cfg.dtype != "float32":
        amp = torch.autocast(device_type=dev.type, dtype=getattr(torch, cfg.dtype))
    for i in range(cfg.warmup + cfg.iterations):
        if cfg.train and cfg.zero_grad == "before-forward":
            tr.set_phase("zero_grad", i)
            if st.optimizer is not None:
                st.optimizer.zero_grad(set_to_none=cfg.set_to_none)
            else:
                model.zero_grad(set_to_none=cfg.set_to_none)
        tr.set_phase("forward", i)
        grad: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if cfg.train else torch.no_grad()
        )
        with grad, amp:
            st.out = model(x)
        st.output_shape = tuple(st.out.shape)
        tr.mark([st.out], "outputs")
        tr.classify_live("forward", i, "activations")
        if cfg.train:
            tr.set_phase("loss", i)
            with amp:
                st.loss = _loss(st.out, y)
            tr.mark([st.loss], "outputs")
            tr.classify_live("loss", i, "activations")
            tr.set_phase("backward", i)
            st.loss.backward()
            tr.mark((p.grad for p in params), "gradients")
            if st.optimizer is not None:
                tr.set_phase("optimizer", i)
                st.optimizer.step()
                tr.mark(_optimizer_tensors(st.optimizer), "optimizer_state")
                if cfg.zero_grad == "after-step":
                    tr.set_phase("zero_grad", i)
                    st.optimizer.zero_grad(set_to_none=cfg.set_to_none)
            elif cfg.zero_grad == "after-step":
                tr.set_phase("zero_grad", i)
                model.zero_grad(set_to_none=cfg.set_to_none)
        # the iteration's output and loss are dropped before the next one starts
        tr.set_phase("idle", i)
        st.out = st.loss = None
        if on_iteration is not None:
            on_iteration(i)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                yield v


def _collect_layers(model: torch.nn.Module, cfg: RunConfig) -> list[LayerInfo]:
    from vggexplorer.core.model.backbone import head_module_names

    head_names = {name: i for i, name in enumerate(head_module_names(cfg.head))}
    out: list[LayerInfo] = []
    for name, m in _leaf_order(model):
        pb = sum(p.untyped_storage().nbytes() for p in m.parameters(recurse=False))
        gb = sum(p.grad.untyped_storage().nbytes() for p in m.parameters(recurse=False) if p.grad is not None)
        out.append(LayerInfo(name, type(m).__name__, head_names.get(name, -1), pb, gb))
    return out
