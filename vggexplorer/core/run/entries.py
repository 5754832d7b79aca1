"""What runs in a run's child process: the targets the GUI names to ``child.subprocess_iter``/``_call``.

``engine_run_iter`` is a run (the engine's generator, its results made plain data); ``discover_devices``
asks NVML and CUDA which devices there are. Both import torch only when called (in the child), so naming
them imports nothing heavy; ``plain_result`` makes a result safe to unpickle where torch is not imported
(the prediction service uses it too).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator
from typing import Any

from vggexplorer.core.run.progress import Progress


def engine_run_iter(config: dict[str, Any], cancel: threading.Event) -> Generator[Progress, None, Any]:
    """Child side of a run: the engine's own generator for ``RunConfig.from_dict(config)``, re-yielded with
    any result in it made plain (``plain_result``)."""
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.run.engine import run_iter
    from vggexplorer.core.run.tracer import FailAt

    config = dict(config)
    fail = config.pop("_fail_at", None)  # test hook: the engine's FailAt(module, phase)
    fail_at = FailAt(str(fail[0]), str(fail[1])) if fail else None
    gen = run_iter(RunConfig.from_dict(config), cancel, fail_at=fail_at)
    try:
        while True:
            p = next(gen)
            yield p if p.result is None else dataclasses.replace(p, result=plain_result(p.result))
    except StopIteration as stop:
        return plain_result(stop.value)
    finally:
        gen.close()


def _plain(v: Any) -> Any:
    """Builtin types only (``torch.__version__`` is a ``TorchVersion``, a str subclass whose unpickling
    imports torch)."""
    if isinstance(v, str):
        return str(v)
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        items = [_plain(x) for x in v]
        return tuple(items) if isinstance(v, tuple) else items
    return v


def plain_result(r: Any) -> Any:
    """``r`` (a RunResult, or None) with every value of its environment made a builtin type, in place.

    ``RunEnvironment.from_dict`` already turns its string fields into plain ``str``; what it keeps in
    ``extra`` (keys it does not know) and in its dict fields is whatever the child collected, which may hold a
    ``TorchVersion``. The config (``RunMeta``: a RunConfig and labels) holds builtins only.
    """
    env = getattr(r, "environment", None)
    if env is not None and dataclasses.is_dataclass(env) and not isinstance(env, type):
        plain = {f.name: _plain(getattr(env, f.name)) for f in dataclasses.fields(env)}
        r.environment = dataclasses.replace(env, **plain)
    return r


def discover_devices() -> tuple[list[Any], str, str]:
    """Child side of device discovery: (``list_devices()``, ``best_device()``, ``status_line()``)."""
    from vggexplorer.core.devices import environment

    return environment.list_devices(), environment.best_device(), environment.status_line()
