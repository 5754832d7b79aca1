"""Native shortcuts for ops whose meta kernels are Python, used by fake traces on meta tensors.

On meta tensors nothing is computed: an op's only effect a trace can see is the tensors it returns. A few
ops that dominate a training step's trace have meta kernels written in Python (``torch/_meta_registrations``,
``torch/_refs``, ``torch/_decomp``): the optimizer's in-place foreach updates, ``zeros_like``, the
out-of-place foreach ops and ReLU's ``threshold_backward`` — about half of a VGG11 train-step trace
(measured: 17 of 37 ms). Their outputs are known without running those kernels:

- an in-place foreach op (``_foreach_<name>_``) updates its inputs and returns nothing: nothing to run;
- ``zeros_like`` allocates exactly what ``empty_like`` with the same arguments allocates;
- an out-of-place foreach op of a listed elementwise kind over tensors of one dtype returns one new tensor
  like each tensor of its first list (when every input is contiguous);
- ``threshold_backward(grad, self, threshold)`` with ``grad`` and ``self`` of one shape, dtype and
  contiguous layout returns a tensor like ``grad``.

``empty_like`` here is torch's native meta kernel (called inside the dispatch mode, so the tracer sees only
the shortcut op and its output, as it would the original). Anything outside these conditions runs the real
meta kernel. ``tests/test_faketrace.py`` checks that traces with and without the shortcuts are identical,
row for row, for every preset, mode and optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["shortcut"]

_aten = torch.ops.aten
#: elementwise foreach kinds whose out-of-place results are shaped and typed like their first list
_FOREACH_LIKE = frozenset(
    {
        "_foreach_abs",
        "_foreach_add",
        "_foreach_addcdiv",
        "_foreach_addcmul",
        "_foreach_div",
        "_foreach_exp",
        "_foreach_lerp",
        "_foreach_maximum",
        "_foreach_minimum",
        "_foreach_mul",
        "_foreach_neg",
        "_foreach_reciprocal",
        "_foreach_sign",
        "_foreach_sqrt",
        "_foreach_sub",
    }
)
_NOT_HANDLED = (False, None)


def _plain_meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta" and t.is_contiguous()


def _tensor_lists(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[list[Any]] | None:
    """The tensor-list arguments, or None if any argument holds something a shortcut does not expect."""
    lists: list[list[Any]] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, list | tuple) and a and isinstance(a[0], torch.Tensor):
            lists.append(list(a))
        elif isinstance(a, torch.Tensor):
            return None  # a tensor operand (e.g. a tensor scalar): type promotion may differ
    return lists


def _foreach(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    lists = _tensor_lists(args, kwargs)
    if not lists:
        return _NOT_HANDLED
    first = lists[0]
    dtype = first[0].dtype
    if not dtype.is_floating_point:
        return _NOT_HANDLED
    for lst in lists:
        if len(lst) != len(first):
            return _NOT_HANDLED
        for t, ref in zip(lst, first, strict=True):
            if not _plain_meta(t) or t.dtype != dtype or t.shape != ref.shape:
                return _NOT_HANDLED
    if name.endswith("_"):
        return True, None  # in place: the inputs are the outputs, nothing is allocated
    if name not in _FOREACH_LIKE:
        return _NOT_HANDLED
    return True, [torch.empty_like(t) for t in first]


def _threshold_backward(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    if kwargs or len(args) != 3:
        return _NOT_HANDLED
    grad, inp = args[0], args[1]
    if not (_plain_meta(grad) and _plain_meta(inp)) or grad.shape != inp.shape or grad.dtype != inp.dtype:
        return _NOT_HANDLED
    return True, torch.empty_like(grad)


def _zeros_like(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    if not args or not isinstance(args[0], torch.Tensor) or args[0].device.type != "meta":
        return _NOT_HANDLED
    if kwargs.get("device") not in (None, args[0].device):
        return _NOT_HANDLED
    return True, torch.empty_like(*args, **kwargs)


_BY_OVERLOAD: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], tuple[bool, Any]]] = {
    _aten.threshold_backward.default: _threshold_backward,
    _aten.zeros_like.default: _zeros_like,
}


def shortcut(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, outputs)`` when ``func(*args, **kwargs)`` on meta tensors has a shortcut, else
    ``(False, None)`` (then run ``func`` itself)."""
    fn = _BY_OVERLOAD.get(func)
    if fn is not None:
        return fn(args, kwargs)
    name = func.overloadpacket.__name__
    if name.startswith("_foreach_"):
        return _foreach(name, args, kwargs)
    return _NOT_HANDLED
