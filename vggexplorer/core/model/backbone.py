"""VGG backbones identical to torchvision's, and the full model = features + an editable head.

Module names follow torchvision (``features.N``, ``avgpool``, ``classifier.N``) so a torchvision state_dict
loads with ``strict=True`` into the ``fc`` preset. The head maps onto them like this: a leading pooling layer
becomes ``avgpool`` (else ``avgpool`` is an ``Identity``), a Flatten right after it becomes ``flatten``
(parameter-free, so absent from state_dicts, like torchvision's ``torch.flatten`` call), and the remaining
layers are ``classifier.0, 1, ...``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vggexplorer.core.model.head import HeadSpec, LayerSpec

# torchvision/models/vgg.py cfgs: numbers are conv output channels (3×3, padding 1), "M" a 2×2 max pool.
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


@dataclass(frozen=True)
class Backbone:
    name: str
    cfg: str
    batch_norm: bool

    @property
    def layers(self) -> list[int | str]:
        return CFGS[self.cfg]

    @property
    def out_channels(self) -> int:
        return [c for c in self.layers if isinstance(c, int)][-1]

    @property
    def n_pools(self) -> int:
        return sum(1 for c in self.layers if c == "M")

    @property
    def param_count(self) -> int:
        n, cin = 0, 3
        for c in self.layers:
            if isinstance(c, int):
                n += c * cin * 9 + c + (2 * c if self.batch_norm else 0)
                cin = c
        return n

    def label(self) -> str:
        return self.name.upper().replace("_BN", " + BN")


BACKBONES: dict[str, Backbone] = {
    name: Backbone(name, cfg, bn)
    for name, cfg, bn in (
        ("vgg11", "A", False),
        ("vgg11_bn", "A", True),
        ("vgg13", "B", False),
        ("vgg13_bn", "B", True),
        ("vgg16", "D", False),
        ("vgg16_bn", "D", True),
        ("vgg19", "E", False),
        ("vgg19_bn", "E", True),
    )
}


def head_module_names(spec: HeadSpec) -> list[str]:
    """The module path each head layer gets in the built model (see the module docstring)."""
    names: list[str] = []
    i = 0
    layers = spec.layers
    if layers and layers[0].type in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d"):
        names.append("avgpool")
        i = 1
        if len(layers) > 1 and layers[1].type == "Flatten":
            names.append("flatten")
            i = 2
    names.extend(f"classifier.{k}" for k in range(len(layers) - i))
    return names


@functools.cache
def _takes_device(cls: type) -> bool:
    return "device" in inspect.signature(cls).parameters


def build_layer(lay: LayerSpec, device: torch.device | None = None) -> nn.Module:
    """Instantiate one head layer as its ``torch.nn`` class (on ``device``, else the default device).

    The device goes to the constructor (``factory_kwargs``), not through a ``with torch.device(...)``
    context: in torch 2.13 that context's first use imports ``torch._dynamo`` (about 1.5 s here).
    """
    from torch import nn

    cls = getattr(nn, lay.type)
    kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in lay.params}
    if device is not None and _takes_device(cls):
        kw["device"] = device
    module: nn.Module = cls(**kw)
    return module


def make_features(backbone: Backbone, device: torch.device | None = None) -> nn.Sequential:
    from torch import nn

    mods: list[nn.Module] = []
    cin = 3
    for c in backbone.layers:
        if c == "M":
            mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(c, int)
            mods.append(nn.Conv2d(cin, c, kernel_size=3, padding=1, device=device))
            if backbone.batch_norm:
                mods.append(nn.BatchNorm2d(c, device=device))
            mods.append(nn.ReLU(inplace=True))
            cin = c
    return nn.Sequential(*mods)


def _model_class() -> type[nn.Module]:
    from torch import nn

    class VGGWithHead(nn.Module):
        """``features`` → ``avgpool`` → ``flatten`` → ``classifier``, named like torchvision's VGG."""

        def __init__(self, features: nn.Sequential, head: list[nn.Module], names: list[str]) -> None:
            super().__init__()
            self.features = features
            self.avgpool: nn.Module = nn.Identity()
            self.flatten: nn.Module = nn.Identity()
            rest: list[nn.Module] = []
            for name, mod in zip(names, head, strict=True):
                if name == "avgpool":
                    self.avgpool = mod
                elif name == "flatten":
                    self.flatten = mod
                else:
                    rest.append(mod)
            self.classifier = nn.Sequential(*rest)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = self.avgpool(x)
            x = self.flatten(x)
            out: torch.Tensor = self.classifier(x)
            return out

    return VGGWithHead


def init_weights(model: nn.Module) -> None:
    """torchvision's VGG initialisation (kaiming for convs, N(0, 0.01) for linears, BN to 1/0)."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and m.affine:
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def build_model(spec: HeadSpec, *, device: str | torch.device | None = None, init: bool = True) -> nn.Module:
    """Build the whole network for ``spec`` on ``device`` (``"meta"`` builds without memory).

    ``init=False`` skips the torchvision initialisation (weights keep torch's default init), which is
    what shape inference and tracing want.
    """
    import torch

    backbone = BACKBONES[spec.backbone]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    features = make_features(backbone, dev)
    head = [build_layer(lay, dev) for lay in spec.layers]
    model = _model_class()(features, head, head_module_names(spec))
    if init and dev.type != "meta":
        with torch.no_grad():
            init_weights(model)
    return model


def fc_to_fcn_state_dict(fc_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert the ``fc`` preset's weights to ``fcn``/``fcn-pooled``: Linear weights viewed as conv kernels.

    fc6 (4096×25088) becomes a 4096×512×7×7 kernel, fc7 and fc8 become 1×1 kernels; biases are unchanged.
    The features are copied as they are.
    """
    out: dict[str, torch.Tensor] = {}
    shapes = {"classifier.0": (512, 7, 7), "classifier.3": (4096, 1, 1), "classifier.6": (4096, 1, 1)}
    for key, t in fc_state.items():
        mod = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and mod in shapes:
            out[key] = t.reshape(t.shape[0], *shapes[mod])
        else:
            out[key] = t
    return out
