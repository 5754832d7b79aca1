"""Shape inference and validation messages (meta tensors only)."""

from __future__ import annotations

import pytest

from vggexplorer.core.model.head import layer, preset
from vggexplorer.core.model.shapes import infer_shapes


@pytest.mark.parametrize(
    ("name", "size", "out"),
    [
        ("fc", 224, (4, 1000)),
        ("fc", 384, (4, 1000)),
        ("fcn", 224, (4, 1000, 1, 1)),
        ("fcn", 384, (4, 1000, 6, 6)),
        ("fcn", 512, (4, 1000, 10, 10)),
        ("fcn-pooled", 224, (4, 1000, 1, 1)),
        ("fcn-pooled", 384, (4, 1000, 1, 1)),
        ("gap", 224, (4, 1000)),
        ("gap", 384, (4, 1000)),
    ],
)
def test_preset_output_shapes(name: str, size: int, out: tuple[int, ...]) -> None:
    r = infer_shapes(preset(name), 4, (size, size))
    assert r.ok, r.issue
    assert r.output_shape == out
    assert r.backbone is not None and r.backbone.output_shape == (4, 512, size // 32, size // 32)


def test_rows_carry_params_and_bytes() -> None:
    r = infer_shapes(preset("fcn"), 2, (384, 384))
    conv = r.layers[0]
    assert conv.name == "classifier.0" and conv.params == 512 * 4096 * 49 + 4096
    assert conv.output_shape == (2, 4096, 6, 6) and conv.output_bytes == 2 * 4096 * 36 * 4
    fc = infer_shapes(preset("fc"), 1, (224, 224))
    assert [x.name for x in fc.layers][:3] == ["avgpool", "flatten", "classifier.0"]
    assert fc.total_params == 132_863_336


def test_rectangular_input() -> None:
    r = infer_shapes(preset("fcn"), 1, (384, 256))
    assert r.output_shape == (1, 1000, 6, 2)


def test_kernel_larger_than_map_names_the_fix() -> None:
    r = infer_shapes(preset("fcn"), 1, (160, 160))
    assert not r.ok and r.issue is not None and r.issue.index == 0
    assert r.issue.message == "kernel 7×7 is larger than the 5×5 map at input 160"
    assert r.issue.fix == "keep AdaptiveAvgPool2d(7) before it or use input ≥ 224"


def test_linear_in_features_mismatch() -> None:
    r = infer_shapes(preset("fc").update(2, in_features=4096))
    assert r.issue is not None and r.issue.index == 2
    assert "Linear expects in_features=4096 but receives 25088" in r.issue.message
    assert "pooled map" in r.issue.message
    assert r.issue.fix == "set in_features=25088"


def test_linear_on_a_map_suggests_flatten() -> None:
    r = infer_shapes(preset("fc").remove(1))
    assert r.issue is not None and r.issue.index == 1
    assert r.issue.fix.startswith("insert Flatten before it")


def test_conv_after_flatten_suggests_removing_it() -> None:
    spec = preset("fc").insert(3, layer("Conv2d", in_channels=4096, out_channels=8, kernel_size=1))
    r = infer_shapes(spec)
    assert r.issue is not None and r.issue.index == 3
    assert "needs an N×C×H×W map" in r.issue.message and r.issue.fix == "remove the Flatten above it"


def test_channel_and_batchnorm_mismatches() -> None:
    r = infer_shapes(preset("fcn").update(3, in_channels=512))
    assert r.issue is not None and r.issue.fix == "set in_channels=4096"
    r = infer_shapes(preset("fc").insert(3, layer("BatchNorm2d", num_features=4096)))
    assert r.issue is not None and r.issue.fix == "use BatchNorm1d here"
    r = infer_shapes(preset("fc").insert(3, layer("BatchNorm1d", num_features=10)))
    assert r.issue is not None and r.issue.fix == "set num_features=4096"


def test_input_too_small_for_backbone() -> None:
    r = infer_shapes(preset("gap"), 1, (16, 16))
    assert r.issue is not None and r.issue.index == -1 and r.issue.fix == "use input ≥ 32×32"


def test_batchnorm_single_value_warning() -> None:
    r = infer_shapes(preset("gap").insert(3, layer("BatchNorm1d", num_features=1000)), 1)
    assert r.ok and any("more than 1 value per channel" in w for w in r.warnings)


@pytest.mark.parametrize("backbone", ["vgg11", "vgg11_bn", "vgg13", "vgg16_bn", "vgg19"])
def test_other_backbones_same_output(backbone: str) -> None:
    r = infer_shapes(preset("fc").with_backbone(backbone), 1, (224, 224))
    assert r.ok and r.output_shape == (1, 1000)
