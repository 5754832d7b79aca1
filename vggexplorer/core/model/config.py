"""What a run depends on: :class:`RunConfig` (frozen, validated, files) — importable without torch.

The engine re-exports everything here; the predictor's command imports it from here so that a prediction
answered from the on-disk cache never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.model.head import HeadSpec

__all__ = [
    "DTYPES",
    "MAX_ITERATIONS",
    "MODES",
    "OPTIMIZERS",
    "ZERO_GRAD",
    "ConfigError",
    "RunConfig",
    "device_dtype_problem",
]

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("eval", "train", "train-step")
OPTIMIZERS = ("sgd", "adam", "adamw")
ZERO_GRAD = ("before-forward", "after-step")
MAX_ITERATIONS = 1000


class ConfigError(VGGExplorerError):
    """A run configuration that cannot run (bad value, device not present, head does not fit the input)."""


def device_dtype_problem(device: str, dtype: str) -> str | None:
    """Why ``dtype`` cannot run on ``device`` (``cpu``, ``cuda``, ``cuda:N``), or None when it can.

    float16 autocast is a CUDA setting: the CPU runs bfloat16 autocast, not float16. ``auto`` is a device
    not chosen yet; callers that resolve it ask again with the device it became.
    """
    if dtype == "float16" and device.partition(":")[0] == "cpu":
        return "float16 autocast is a CUDA setting; on the CPU use bfloat16 or float32"
    return None


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on. Frozen; ``to_dict``/``from_dict`` for files."""

    head: HeadSpec
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    batch: int = 1
    input_hw: tuple[int, int] = (224, 224)
    dtype: str = "float32"  # float16/bfloat16: autocast (CUDA); bfloat16 autocast on CPU
    mode: str = "train"  # eval | train | train-step
    optimizer: str = "sgd"  # sgd (momentum 0.9) | adam | adamw; used by train-step
    lr: float = 0.01
    warmup: int = 0
    iterations: int = 1
    zero_grad: str = "before-forward"  # before-forward | after-step
    set_to_none: bool = True
    cudnn_benchmark: bool = False
    channels_last: bool = False
    seed: int = 0
    allocator_level: bool = True  # CPU: profiler memory events; CUDA: memory history
    sample_hz: float = 1000.0  # device sampler rate; 0 = off

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if not isinstance(self.head, HeadSpec):
            bad("head must be a HeadSpec")
        dev = self.device
        if not (dev in ("cpu", "cuda", "auto") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            bad(f"device must be cpu, cuda, cuda:N or auto, got {dev!r}")
        for name in ("batch", "warmup", "iterations", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(f"{name} must be a whole number, got {v!r}")
        if not 1 <= self.batch <= 1 << 16:
            bad(f"batch must be between 1 and 65536, got {self.batch}")
        if not 1 <= self.iterations <= MAX_ITERATIONS or not 0 <= self.warmup <= MAX_ITERATIONS:
            bad(f"iterations must be 1..{MAX_ITERATIONS} and warmup 0..{MAX_ITERATIONS}")
        hw = self.input_hw
        if (
            not isinstance(hw, tuple)
            or len(hw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8192 for v in hw)
        ):
            bad(f"input must be (H, W) with 1 ≤ H, W ≤ 8192, got {hw!r}")
        if self.dtype not in DTYPES:
            bad(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.mode not in MODES:
            bad(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.optimizer not in OPTIMIZERS:
            bad(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.zero_grad not in ZERO_GRAD:
            bad(f"zero_grad must be one of {', '.join(ZERO_GRAD)}, got {self.zero_grad!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            bad(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.sample_hz, int | float) and 0 <= self.sample_hz <= 100_000):
            bad(f"sample_hz must be 0..100000, got {self.sample_hz!r}")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head.to_dict(),
            "device": self.device,
            "batch": self.batch,
            "input_hw": list(self.input_hw),
            "dtype": self.dtype,
            "mode": self.mode,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "warmup": self.warmup,
            "iterations": self.iterations,
            "zero_grad": self.zero_grad,
            "set_to_none": self.set_to_none,
            "cudnn_benchmark": self.cudnn_benchmark,
            "channels_last": self.channels_last,
            "seed": self.seed,
            "allocator_level": self.allocator_level,
            "sample_hz": self.sample_hz,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> RunConfig:
        if not isinstance(d, Mapping):
            raise ConfigError("a run config must be an object")
        known = {f for f in RunConfig.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(map(str, unknown))}")
        if "head" not in d:
            raise ConfigError("a run config needs a 'head'")
        kw: dict[str, Any] = dict(d)
        kw["head"] = HeadSpec.from_dict(d["head"])
        if "input_hw" in kw:
            hw = kw["input_hw"]
            if not isinstance(hw, list | tuple) or len(hw) != 2:
                raise ConfigError(f"input_hw must be [H, W], got {hw!r:.40}")
            kw["input_hw"] = (hw[0], hw[1])
        for b in ("set_to_none", "cudnn_benchmark", "channels_last", "allocator_level"):
            if b in kw and not isinstance(kw[b], bool):
                raise ConfigError(f"{b} must be true or false")
        try:
            return RunConfig(**kw)
        except TypeError as e:
            raise ConfigError(str(e)) from None

    @property
    def train(self) -> bool:
        return self.mode != "eval"

    def trace_key(self) -> RunConfig:
        """This config as a fake trace sees it: the device, the allocator level and device sampling change
        nothing in the tensors the step program makes, so traces (and predictions) are keyed without them."""
        return replace(self, device="cpu", allocator_level=False, sample_hz=0.0)

    def label(self) -> str:
        h, w = self.input_hw
        name = self.head.name or "custom"
        return f"{self.head.backbone} · {name} · b{self.batch} · {h}×{w} · {self.dtype} · {self.mode}"
