"""The run settings the GUI holds (what the run controls show) and the ONE mapping from them to RunConfig.

``RunSettings`` is plain data: the run controls report it, the session keeps the current one, the app's
settings file stores it. :func:`run_config` is the only place that turns it into the engine's
:class:`RunConfig` — for a run and, with ``device="cpu"``, for a prediction's trace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.model.config import RunConfig, device_dtype_problem
from vggexplorer.core.model.head import PRESET_NAMES, HeadSpec, preset
from vggexplorer.core.results.wording import fmt_hw

__all__ = ["RunSettings", "blocked_reason", "head_label", "preset_of", "run_config", "settings_label"]


@dataclass(frozen=True)
class RunSettings:
    """What the run controls hold. ``preset`` and ``backbone`` describe the head (which the run gets as a
    :class:`HeadSpec`); the rest are :class:`RunConfig` fields."""

    preset: str = "fc"
    backbone: str = "vgg11"
    device: str = "cpu"
    batch: int = 8
    input_hw: tuple[int, int] = (224, 224)
    dtype: str = "float32"
    mode: str = "train-step"
    optimizer: str = "adam"
    iterations: int = 3

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        return d


def run_config(settings: RunSettings, head: HeadSpec, *, device: str | None = None) -> RunConfig:
    """The run these settings ask for with ``head``; ``device`` overrides the settings' device (a
    prediction traces on ``"cpu"`` and maps to CUDA). Fields the GUI does not set keep RunConfig's
    defaults. Raises ConfigError for values RunConfig rejects."""
    return RunConfig(
        head=head,
        device=settings.device if device is None else device,
        batch=settings.batch,
        input_hw=(int(settings.input_hw[0]), int(settings.input_hw[1])),
        dtype=settings.dtype,
        mode=settings.mode,
        optimizer=settings.optimizer,
        iterations=settings.iterations,
    )


def blocked_reason(settings: RunSettings, head_issue: object | None = None) -> str:
    """Why these settings cannot run (empty: they can): the head's own issue first, then the device's."""
    if head_issue is not None:
        return str(head_issue)
    return device_dtype_problem(settings.device, settings.dtype) or ""


def settings_label(s: RunSettings, head_name: str) -> str:
    """``fc · b8 · 224 · cpu · train`` — the default run name."""
    bits = [head_name or "custom", f"b{s.batch}", fmt_hw(s.input_hw), s.device]
    if s.backbone != "vgg11":
        bits.insert(0, s.backbone)
    if s.mode != "train-step":
        bits.append(s.mode)
    if s.dtype != "float32":
        bits.append(s.dtype)
    return " · ".join(bits)


@cache
def _preset_spec(name: str, backbone: str) -> HeadSpec:
    return preset(name, backbone)


def preset_of(spec: HeadSpec) -> str | None:
    """The preset this head is (unmodified), else None."""
    if spec.name in PRESET_NAMES:
        try:
            if _preset_spec(spec.name, spec.backbone) == spec:
                return spec.name
        except VGGExplorerError:
            return None
    return None


def head_label(spec: HeadSpec) -> str:
    """``fc`` (a preset as shipped), ``fc (edited)``, or ``custom`` (a head with no name)."""
    p = preset_of(spec)
    if p:
        return p
    return f"{spec.name} (edited)" if spec.name else "custom"
