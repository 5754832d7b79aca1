"""What a run records about itself: :class:`RunMeta` (its config and labels) and :class:`RunEnvironment`.

Both are frozen, typed and torch-free; every writer (engine, predictor, GUI, synthetic runs) builds them and
every reader (run files, comparisons, plots, the runs list) reads their fields, so no reader guesses keys.

``RunMeta.to_dict`` is ``RunConfig.to_dict()`` plus ``resolved_device``, ``fake``, ``head_label`` and
``preset`` (the ``config`` object of a ``vggexplorer.run/2`` file). ``RunEnvironment.to_dict`` is the
``environment`` object: the names :func:`vggexplorer.core.devices.environment.collect_environment` uses
(``device_total_bytes``, ``device_name``, …), the only set.

``from_dict(..., legacy=True)`` reads what ``vggexplorer.run/1`` files hold: the GUI's ``preset``/``backbone``
keys (and a ``head`` label string), ``input``/``input_size`` for ``input_hw``, a predicted run's
``predicted:<GPU>`` device, and the environment's old ``total_memory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from vggexplorer.core.model.config import ConfigError, RunConfig
from vggexplorer.core.model.head import PRESET_NAMES, preset

__all__ = ["RunEnvironment", "RunMeta"]


@dataclass(frozen=True)
class RunMeta:
    """A run's config and the labels it is shown with.

    ``run`` is the RunConfig as asked (``device`` may be ``auto``); ``device`` is where it ran (``cpu``,
    ``cuda:0``, ``predicted:<GPU name>``; "" when unknown). ``head_label`` is the GUI's name of the head
    (``fc``, ``fc (edited)``, ``custom``; "" = none given); ``preset`` the preset the head is, unmodified,
    else None. The backbone is the head's (``backbone``), never stored twice.
    """

    run: RunConfig
    device: str = ""
    fake: bool = False
    head_label: str = ""
    preset: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.run, RunConfig):
            raise ConfigError("a run's metadata needs a RunConfig")
        if self.preset is not None and self.preset not in PRESET_NAMES:
            raise ConfigError(
                f"preset must be one of {', '.join(PRESET_NAMES)} or null, got {self.preset!r:.40}"
            )

    @property
    def backbone(self) -> str:
        return self.run.head.backbone

    @property
    def ran_on(self) -> str:
        """Where the run ran, else the device it asked for."""
        return self.device or self.run.device

    @property
    def label(self) -> str:
        """The head's name for people: the GUI's label, else the preset, else the head's own name."""
        return self.head_label or self.preset or self.run.head.name or "custom head"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.run.to_dict(),
            "resolved_device": self.device,
            "fake": self.fake,
            "head_label": self.head_label,
            "preset": self.preset,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], *, legacy: bool = False) -> RunMeta:
        """The inverse of :meth:`to_dict`; ``legacy`` maps a ``vggexplorer.run/1`` config (see the module).
        Raises ConfigError (or HeadError) saying what is wrong."""
        if not isinstance(d, Mapping):
            raise ConfigError("a run config must be an object")
        kw: dict[str, Any] = dict(d)
        device = kw.pop("resolved_device", "")
        fake = kw.pop("fake", False)
        label = kw.pop("head_label", "")
        name = kw.pop("preset", None)
        if legacy:
            label, name, device = _legacy(kw, label, name, device)
        for key, v, typ in (
            ("resolved_device", device, str),
            ("head_label", label, str),
            ("fake", fake, bool),
        ):
            if not isinstance(v, typ):
                raise ConfigError(f"{key} must be {'true or false' if typ is bool else 'a string'}")
        if name is not None and not isinstance(name, str):
            raise ConfigError("preset must be a string or null")
        return RunMeta(RunConfig.from_dict(kw), device, fake, label, name)


def _legacy(kw: dict[str, Any], label: Any, name: Any, device: Any) -> tuple[Any, Any, Any]:
    """Map a /1 config in place (``kw`` becomes RunConfig keys); returns (head_label, preset, device)."""
    backbone = kw.pop("backbone", None)
    head_name = kw.pop("head_name", None)
    for alias in ("input", "input_size"):
        if alias in kw:
            v = kw.pop(alias)
            kw.setdefault("input_hw", [v, v] if isinstance(v, int) and not isinstance(v, bool) else v)
    if isinstance(kw.get("head"), str):  # a GUI label where the head spec should be: only presets rebuild
        label = label or kw["head"]
        if kw["head"] not in PRESET_NAMES:
            raise ConfigError(f"head {kw['head']!r:.40} is a label, not a head, and no preset")
        kw["head"] = preset(kw["head"], backbone if isinstance(backbone, str) else "vgg11").to_dict()
    dev = kw.get("device")
    if isinstance(dev, str) and dev.startswith("predicted:"):
        device = device or dev
        kw["device"] = "cpu"  # what a prediction traces on (the file kept only the GPU it stood for)
    if isinstance(name, str) and name not in PRESET_NAMES:  # /1 GUI files put the label under "preset"
        label, name = label or name, None
    elif isinstance(name, str):
        label = label or name
    if not label and isinstance(head_name, str):
        label = head_name
    return label, name, device


@dataclass(frozen=True)
class RunEnvironment:
    """The machine, versions and device behind a run (measured), or the GPU profile (predicted).

    Names are those of ``collect_environment``; keys it does not know are kept in ``extra`` so nothing a
    file holds is lost. None where not known or not applicable (CUDA fields on a CPU run).
    """

    device: str = ""  # cpu | cuda:N | predicted:<GPU name>
    device_kind: str = ""  # cpu | cuda
    device_name: str | None = None
    device_total_bytes: int | None = None  # CUDA memory (get_device_properties total) / the GPU profile's
    compute_capability: str | None = None
    multiprocessors: int | None = None
    device_uuid: str | None = None
    device_error: str | None = None
    driver: str | None = None
    cuda_visible_devices: str | None = None
    nvml: dict[str, Any] | None = None  # {"available": bool, "reason": str}
    nvml_device: dict[str, Any] | None = None  # {"name", "uuid", "index"} or {"error"}
    python: str | None = None
    platform: str | None = None
    torch: str | None = None
    cuda: str | None = None
    cudnn: int | None = None
    nvidia_ml_py: str | None = None
    cpu: str | None = None
    cpu_cores_logical: int | None = None
    cpu_cores_physical: int | None = None
    torch_threads: int | None = None
    ram_bytes: int | None = None
    predicted: bool = False
    gpu_profile: dict[str, Any] | None = None
    cuda_mapping_rules: dict[str, Any] | None = None
    synthetic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d.update(self.extra)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any], *, legacy: bool = False) -> RunEnvironment:
        """Checked: a field of the wrong type raises ConfigError naming it. ``legacy`` maps /1 names."""
        if not isinstance(d, Mapping):
            raise ConfigError("an environment must be an object")
        src = dict(d)
        if legacy and "total_memory" in src:
            src.setdefault("device_total_bytes", src.pop("total_memory"))
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in src.items():
            typ = _ENV_TYPES.get(str(k))
            if typ is None:
                extra[str(k)] = v
                continue
            if v is None:
                if typ is not bool and k not in ("device", "device_kind"):
                    kw[k] = None
                continue
            if isinstance(v, bool) != (typ is bool) or not isinstance(v, typ):
                raise ConfigError(f"{k} must be {_TYPE_WORDS[typ]}, got {type(v).__name__}")
            kw[k] = str(v) if typ is str else v  # plain str (torch.__version__ is a str subclass)
        return RunEnvironment(**kw, extra=extra)


def _base_type(t: Any) -> type:
    """``str`` for ``str | None``, ``dict`` for ``dict[str, Any] | None``."""
    if get_origin(t) in (Union, UnionType):
        t = next(a for a in get_args(t) if a is not type(None))
    base = get_origin(t) or t
    assert isinstance(base, type)
    return base


_ENV_TYPES: dict[str, type] = {
    name: _base_type(t) for name, t in get_type_hints(RunEnvironment).items() if name != "extra"
}
_TYPE_WORDS: dict[type, str] = {
    str: "a string",
    bool: "true or false",
    int: "a whole number",
    dict: "an object",
}
