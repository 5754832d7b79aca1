"""The head: the ordered layers after VGG's ``features`` (the ``avgpool`` included), as pure data.

``HeadSpec`` is immutable; edits (insert, remove, move, replace, update) are pure functions returning a new
spec. ``HeadDocument`` holds the current spec and is the only mutator the GUI uses: every edit is one call,
one event for listeners, and one undo step (the GUI wraps each call in a ``QUndoCommand``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model.backbone import BACKBONES
from vggexplorer.core.model.layers import LAYER_TYPES, describe, normalize_params, param_count

HEAD_FORMAT = "vggexplorer.head/1"
MAX_HEAD_FILE_BYTES = 1024 * 1024
MAX_LAYERS = 256
PRESET_NAMES = ("fc", "fcn", "fcn-pooled", "gap")
RESOURCES = Path(__file__).resolve().parents[3] / "resources"


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class LayerSpec:
    """One head layer: a ``torch.nn`` class name and its full, validated constructor kwargs."""

    type: str
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def make(type: str, index: int | None = None, **params: Any) -> LayerSpec:
        """Validate and build (missing optional kwargs get their defaults)."""
        norm = normalize_params(type, params, index)
        return LayerSpec(type, tuple((k, _freeze(v)) for k, v in norm.items()))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def get(self, name: str) -> Any:
        return self.kwargs[name]

    def with_params(self, index: int | None = None, **changes: Any) -> LayerSpec:
        kw = self.kwargs
        kw.update(changes)
        return LayerSpec.make(self.type, index, **kw)

    @property
    def param_count(self) -> int:
        return param_count(self.type, self.kwargs)

    def describe(self) -> str:
        return describe(self.type, self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for k, v in self.params:
            d[k] = list(v) if isinstance(v, tuple) else v
        return d

    @staticmethod
    def from_dict(d: object, index: int | None = None) -> LayerSpec:
        if not isinstance(d, Mapping):
            raise HeadError(f'a layer must be an object like {{"type": "ReLU"}}, got {d!r:.60}', layer=index)
        if "type" not in d:
            raise HeadError("a layer needs a 'type' (a torch.nn class name)", layer=index, field="type")
        params = {k: v for k, v in d.items() if k != "type"}
        return LayerSpec.make(d["type"], index, **params)


def layer(type: str, **params: Any) -> LayerSpec:
    """Shorthand: ``layer("Conv2d", in_channels=512, out_channels=4096, kernel_size=7)``."""
    return LayerSpec.make(type, None, **params)


def default_layer(type_name: str) -> LayerSpec:
    """A layer of ``type_name`` with sensible values for a VGG head (what a palette drop creates)."""
    defaults: dict[str, dict[str, Any]] = {
        "AdaptiveAvgPool2d": {"output_size": 7},
        "AdaptiveMaxPool2d": {"output_size": 7},
        "AvgPool2d": {"kernel_size": 2},
        "MaxPool2d": {"kernel_size": 2},
        "Linear": {"in_features": 4096, "out_features": 4096},
        "Conv2d": {"in_channels": 512, "out_channels": 512, "kernel_size": 3, "padding": 1},
        "BatchNorm1d": {"num_features": 4096},
        "BatchNorm2d": {"num_features": 512},
    }
    if type_name not in LAYER_TYPES:
        raise HeadError(f"unknown layer type {type_name!r}", field="type")
    return LayerSpec.make(type_name, None, **defaults.get(type_name, {}))


@dataclass(frozen=True)
class HeadSpec:
    """A complete head for a backbone. Immutable; compare with ``==``."""

    layers: tuple[LayerSpec, ...] = ()
    backbone: str = "vgg11"
    name: str = ""

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise HeadError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}", field="backbone"
            )
        if len(self.layers) > MAX_LAYERS:
            raise HeadError(f"a head may hold at most {MAX_LAYERS} layers, got {len(self.layers)}")

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def param_count(self) -> int:
        return sum(lay.param_count for lay in self.layers)

    # --- edits: each returns a new spec --------------------------------------------------------------
    def insert(self, index: int, lay: LayerSpec) -> HeadSpec:
        _check_index(index, len(self.layers) + 1, "insert at")
        return self._with((*self.layers[:index], lay, *self.layers[index:]))

    def remove(self, index: int) -> HeadSpec:
        _check_index(index, len(self.layers), "remove")
        return self._with(self.layers[:index] + self.layers[index + 1 :])

    def move(self, src: int, dst: int) -> HeadSpec:
        """Move the layer at ``src`` so that it ends up at index ``dst`` (indices of the result)."""
        _check_index(src, len(self.layers), "move")
        _check_index(dst, len(self.layers), "move to")
        lst = list(self.layers)
        lay = lst.pop(src)
        lst.insert(dst, lay)
        return self._with(tuple(lst))

    def replace(self, index: int, lay: LayerSpec) -> HeadSpec:
        _check_index(index, len(self.layers), "replace")
        return self._with((*self.layers[:index], lay, *self.layers[index + 1 :]))

    def update(self, index: int, **changes: Any) -> HeadSpec:
        _check_index(index, len(self.layers), "update")
        return self.replace(index, self.layers[index].with_params(index, **changes))

    def with_backbone(self, backbone: str) -> HeadSpec:
        return HeadSpec(self.layers, backbone, self.name)

    def _with(self, layers: tuple[LayerSpec, ...]) -> HeadSpec:
        return HeadSpec(layers, self.backbone, self.name)

    # --- JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": HEAD_FORMAT, "backbone": self.backbone}
        if self.name:
            d["name"] = self.name
        d["layers"] = [lay.to_dict() for lay in self.layers]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @staticmethod
    def from_dict(d: object) -> HeadSpec:
        if not isinstance(d, Mapping):
            raise HeadError("a head file must hold a JSON object with 'format', 'backbone' and 'layers'")
        fmt = d.get("format")
        if fmt != HEAD_FORMAT:
            raise HeadError(f"unsupported format {fmt!r}; expected {HEAD_FORMAT!r}", field="format")
        unknown = set(d) - {"format", "backbone", "layers", "name"}
        if unknown:
            raise HeadError(
                f"unknown keys {sorted(map(str, unknown))}", field=str(sorted(map(str, unknown))[0])
            )
        backbone = d.get("backbone", "vgg11")
        if not isinstance(backbone, str):
            raise HeadError(f"'backbone' must be a name like 'vgg11', got {backbone!r:.40}", field="backbone")
        name = d.get("name", "")
        if not isinstance(name, str):
            raise HeadError("'name' must be a string", field="name")
        layers = d.get("layers")
        if not isinstance(layers, list):
            raise HeadError("'layers' must be a list of layer objects", field="layers")
        if len(layers) > MAX_LAYERS:
            raise HeadError(f"a head may hold at most {MAX_LAYERS} layers, got {len(layers)}", field="layers")
        return HeadSpec(tuple(LayerSpec.from_dict(x, i) for i, x in enumerate(layers)), backbone, name[:200])

    @staticmethod
    def from_json(text: str | bytes) -> HeadSpec:
        if len(text) > MAX_HEAD_FILE_BYTES:
            raise HeadError(f"head file is {len(text):,} bytes; the limit is {MAX_HEAD_FILE_BYTES:,} (1 MiB)")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise HeadError("head file is nested too deeply to be a head") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise HeadError(f"not valid JSON: {e}") from None
        return HeadSpec.from_dict(data)

    @staticmethod
    def load(path: str | Path) -> HeadSpec:
        from vggexplorer.core.base.fileio import read_bounded

        p = Path(path)
        raw = read_bounded(p, MAX_HEAD_FILE_BYTES, "head file", HeadError)
        try:
            return HeadSpec.from_json(raw)
        except HeadError as e:
            raise HeadError(f"{p.name}: {e}", layer=None) from None

    def save(self, path: str | Path) -> None:
        from vggexplorer.core.base.fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json())


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in a head file")


def _check_index(index: object, n: int, what: str) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < max(n, 0):
        raise HeadError(f"cannot {what} position {index!r}: valid positions are 0..{n - 1}")


def preset(name: str, backbone: str = "vgg11") -> HeadSpec:
    """One of the shipped presets (JSON files in ``resources/presets``)."""
    if name not in PRESET_NAMES:
        raise HeadError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    spec = HeadSpec.load(RESOURCES / "presets" / f"{name}.json")
    return HeadSpec(spec.layers, backbone, name)


def load_head(arg: str, backbone: str | None = None) -> HeadSpec:
    """A preset name or a path to a head JSON file (the CLI's ``--head``)."""
    spec = preset(arg) if arg in PRESET_NAMES else HeadSpec.load(arg)
    if backbone is not None:
        spec = spec.with_backbone(backbone)
    return spec


# --- the evented document the GUI edits ------------------------------------------------------------------

EditKind = Literal["insert", "remove", "move", "replace", "update", "reset"]


@dataclass(frozen=True)
class Edit:
    """What changed: ``kind`` and the indices involved (``index``; ``dst`` for moves)."""

    kind: EditKind
    index: int = -1
    dst: int = -1
    text: str = ""


@dataclass
class HeadDocument:
    """The current head; edits are its only mutators and each notifies the listeners once.

    Listeners are plain callables ``(edit, old_spec, new_spec)``; the Qt list model bridges them to
    ``beginInsertRows``/``beginMoveRows``... Undo is done by the caller setting the previous spec back
    through the inverse edit.
    """

    spec: HeadSpec = field(default_factory=lambda: preset("fc"))
    _listeners: list[Callable[[Edit, HeadSpec, HeadSpec], None]] = field(default_factory=list, repr=False)

    def subscribe(self, fn: Callable[[Edit, HeadSpec, HeadSpec], None]) -> None:
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[Edit, HeadSpec, HeadSpec], None]) -> None:
        self._listeners.remove(fn)

    def _apply(self, new: HeadSpec, edit: Edit) -> None:
        old, self.spec = self.spec, new
        for fn in list(self._listeners):
            fn(edit, old, new)

    def insert(self, index: int, lay: LayerSpec) -> None:
        self._apply(self.spec.insert(index, lay), Edit("insert", index, text=f"Insert {lay.type}"))

    def remove(self, index: int) -> LayerSpec:
        lay = self.spec.layers[index] if 0 <= index < len(self.spec) else None
        self._apply(self.spec.remove(index), Edit("remove", index, text=f"Remove {lay.type if lay else ''}"))
        assert lay is not None
        return lay

    def move(self, src: int, dst: int) -> None:
        lay = self.spec.layers[src] if 0 <= src < len(self.spec) else None
        new = self.spec.move(src, dst)
        self._apply(new, Edit("move", src, dst, text=f"Move {lay.type if lay else ''}"))

    def replace(self, index: int, lay: LayerSpec) -> None:
        self._apply(self.spec.replace(index, lay), Edit("replace", index, text=f"Replace with {lay.type}"))

    def update(self, index: int, **changes: Any) -> None:
        new = self.spec.update(index, **changes)
        names = ", ".join(changes)
        self._apply(new, Edit("update", index, text=f"Set {names} of {new.layers[index].type}"))

    def reset(self, spec: HeadSpec, text: str = "Load head") -> None:
        self._apply(spec, Edit("reset", text=text))
