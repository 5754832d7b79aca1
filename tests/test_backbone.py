"""VGG backbones match torchvision (names, parameter counts) and fc weights convert to fcn."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vggexplorer.core.model.backbone import BACKBONES, build_model, fc_to_fcn_state_dict, head_module_names
from vggexplorer.core.model.head import preset

# torchvision.models.vgg parameter counts (weights=None), for every variant.
TORCHVISION_PARAMS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_parameter_counts_match_torchvision(name: str) -> None:
    model = build_model(preset("fc").with_backbone(name), device="meta")
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_vgg11_features_count_and_names() -> None:
    model = build_model(preset("fc"), device="meta")
    assert sum(p.numel() for p in model.features.parameters()) == 9_220_480
    assert BACKBONES["vgg11"].param_count == 9_220_480
    keys = list(model.state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"]
    assert keys[-6:] == [
        "classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias",
        "classifier.6.weight", "classifier.6.bias",
    ]  # fmt: skip


def test_head_module_names() -> None:
    assert head_module_names(preset("fcn"))[0] == "classifier.0"
    assert head_module_names(preset("fcn-pooled"))[:2] == ["avgpool", "classifier.0"]
    assert head_module_names(preset("gap")) == ["avgpool", "flatten", "classifier.0"]


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_state_dict_loads_strict() -> None:  # pragma: no cover - optional extra
    import torchvision

    tv = torchvision.models.vgg11(weights=None)
    ours = build_model(preset("fc"), init=False)
    ours.load_state_dict(tv.state_dict(), strict=True)


def test_fc_weights_converted_to_fcn_agree_at_224() -> None:
    torch.manual_seed(0)
    fc = build_model(preset("fc")).eval()
    fcn = build_model(preset("fcn"), init=False).eval()
    fcn.load_state_dict(fc_to_fcn_state_dict(fc.state_dict()), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a = fc(x)
        b = fcn(x)
    assert b.shape == (1, 1000, 1, 1)
    torch.testing.assert_close(b.flatten(1), a, rtol=1e-4, atol=1e-5)
