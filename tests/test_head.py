"""Head model: presets, JSON round trip, edits, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model.head import (
    HEAD_FORMAT,
    PRESET_NAMES,
    Edit,
    HeadDocument,
    HeadSpec,
    LayerSpec,
    default_layer,
    layer,
    load_head,
    preset,
)
from vggexplorer.core.model.layers import LAYER_TYPES
from vggexplorer.core.model.shapes import fix_chain

REQUIRED_TYPES = {
    "AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d", "Flatten", "Linear", "Conv2d", "ReLU", "LeakyReLU",
    "GELU", "Dropout", "Dropout2d", "BatchNorm1d", "BatchNorm2d", "Identity",
}  # fmt: skip


def test_supported_types_cover_the_issue() -> None:
    assert set(LAYER_TYPES) >= REQUIRED_TYPES


def test_fc_preset_is_torchvisions_head() -> None:
    fc = preset("fc")
    assert [x.type for x in fc.layers] == [
        "AdaptiveAvgPool2d", "Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear",
    ]  # fmt: skip
    assert fc.layers[0].get("output_size") == 7
    assert fc.layers[2].kwargs == {"in_features": 25088, "out_features": 4096, "bias": True}
    assert fc.layers[8].get("out_features") == 1000
    assert fc.param_count == 123_642_856


def test_fcn_presets() -> None:
    fcn, pooled = preset("fcn"), preset("fcn-pooled")
    assert fcn.layers[0].kwargs["kernel_size"] == 7 and fcn.layers[0].kwargs["in_channels"] == 512
    assert pooled.layers[0].type == "AdaptiveAvgPool2d"
    assert pooled.layers[1:] == fcn.layers
    # Conv2d(512, 4096, 7) has exactly fc6's parameter count
    assert fcn.param_count == preset("fc").param_count
    assert preset("gap").param_count == 512 * 1000 + 1000


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_json_round_trip(name: str, tmp_path: Path) -> None:
    spec = preset(name)
    path = tmp_path / "head.json"
    spec.save(path)
    again = HeadSpec.load(path)
    assert again == spec
    data = json.loads(path.read_text())
    assert data["format"] == HEAD_FORMAT and data["backbone"] == "vgg11"
    assert HeadSpec.from_dict(data) == spec


def test_edits_are_pure_and_invertible() -> None:
    fc = preset("fc")
    conv = layer("Conv2d", in_channels=512, out_channels=256, kernel_size=1)
    ins = fc.insert(1, conv)
    assert ins.layers[1] == conv and len(ins) == len(fc) + 1 and len(fc) == 9
    assert ins.remove(1) == fc
    moved = fc.move(3, 5)
    assert [x.type for x in moved.layers][3:6] == ["Dropout", "Linear", "ReLU"]
    assert moved.move(5, 3) == fc
    rep = fc.replace(3, layer("GELU"))
    assert rep.layers[3].type == "GELU" and rep.replace(3, fc.layers[3]) == fc
    upd = fc.update(2, out_features=1024)
    assert upd.layers[2].get("out_features") == 1024 and upd.layers[2].get("in_features") == 25088


def test_document_notifies_once_per_edit() -> None:
    doc = HeadDocument(preset("gap"))
    seen: list[Edit] = []
    doc.subscribe(lambda e, old, new: seen.append(e))
    doc.insert(3, default_layer("ReLU"))
    doc.move(3, 0)
    doc.update(3, out_features=10)
    doc.replace(0, default_layer("Identity"))
    doc.remove(0)
    doc.reset(preset("fc"))
    assert [e.kind for e in seen] == ["insert", "move", "update", "replace", "remove", "reset"]
    assert seen[2].text == "Set out_features of Linear"
    assert doc.spec == preset("fc")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "vggexplorer.head/2", "layers": []}', "unsupported format"),
        ('{"format": "vggexplorer.head/1", "layers": [{"type": "Transformer"}]}', "unknown layer type"),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "Linear", "in_features": 3}]}',
            "needs 'out_features'",
        ),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "ReLU", "inplce": true}]}',
            "no parameter 'inplce'",
        ),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "Linear", "in_features": "8",'
            ' "out_features": 2}]}',
            "must be an integer",
        ),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "Linear", "in_features": 0,'
            ' "out_features": 2}]}',
            "must be ≥ 1",
        ),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "Conv2d", "in_channels": -3,'
            ' "out_channels": 2,'
            ' "kernel_size": 3}]}',
            "must be ≥ 1",
        ),
        ('{"format": "vggexplorer.head/1", "layers": [{"type": "Dropout", "p": NaN}]}', "not allowed"),
        ('{"format": "vggexplorer.head/1", "layers": [{"type": "Dropout", "p": 1.5}]}', "must be ≤ 1"),
        ('{"format": "vggexplorer.head/1", "layers": [{"type": "ReLU", "inplace": 1}]}', "true or false"),
        ('{"format": "vggexplorer.head/1", "backbone": "resnet50", "layers": []}', "unknown backbone"),
        ('{"format": "vggexplorer.head/1", "layers": {"type": "ReLU"}}', "'layers' must be a list"),
        ('["format"]', "JSON object"),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "Linear", "in_features": 1000000,'
            ' "out_features": 1000000}]}',
            "over the 64 GiB limit",
        ),
        (
            '{"format": "vggexplorer.head/1", "layers": [{"type": "Conv2d", "in_channels": 6,'
            ' "out_channels": 4,'
            ' "kernel_size": 3, "groups": 4}]}',
            "not divisible by groups",
        ),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_bad_head_files_get_clear_errors(text: str, needle: str) -> None:
    with pytest.raises(HeadError) as info:
        HeadSpec.from_json(text)
    assert needle in str(info.value)


def test_errors_name_the_layer_and_field() -> None:
    text = json.dumps(
        {
            "format": HEAD_FORMAT,
            "layers": [{"type": "ReLU"}, {"type": "Linear", "in_features": -1, "out_features": 2}],
        }
    )
    with pytest.raises(HeadError) as info:
        HeadSpec.from_json(text)
    assert info.value.layer == 1 and info.value.field == "in_features"
    assert "layer 1, field 'in_features'" in str(info.value)


def test_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(" " * (1024 * 1024 + 1))
    with pytest.raises(HeadError, match="at most 1,048,576"):
        HeadSpec.load(big)


def test_absurd_layer_is_refused_before_allocation() -> None:
    # 2^24 × 2^24 weights = 1 PiB in float32: refused by arithmetic, nothing is built.
    with pytest.raises(HeadError, match="64 GiB"):
        layer("Linear", in_features=1 << 24, out_features=1 << 24)
    with pytest.raises(HeadError, match="must be ≤"):
        layer("Linear", in_features=1 << 40, out_features=1)


def test_load_head_accepts_presets_and_paths(tmp_path: Path) -> None:
    p = tmp_path / "mine.json"
    preset("gap").save(p)
    assert load_head("gap") == preset("gap")
    assert load_head(str(p)).layers == preset("gap").layers
    assert load_head("gap", "vgg16").backbone == "vgg16"
    with pytest.raises(HeadError, match="cannot read"):
        load_head(str(tmp_path / "missing.json"))


def test_fix_chain_after_insert_and_removal() -> None:
    fc = preset("fc")
    # Insert Linear(4096→1024) after fc7: fc8 now receives 1024 features.
    spec = fc.insert(6, layer("Linear", in_features=4096, out_features=1024))
    fixed, changes = fix_chain(spec)
    assert fixed.layers[9].get("in_features") == 1024
    assert changes == ["layer 9 Linear: in_features 4096 → 1024"]
    # Remove the adaptive pool: at 224 the map is still 7×7, so nothing to fix.
    assert fix_chain(fc.remove(0))[1] == []
    # GAP instead of 7×7: fc6 must take 512 features.
    fixed, changes = fix_chain(fc.update(0, output_size=1))
    assert fixed.layers[2].get("in_features") == 512
    # Conv chain: BatchNorm2d after a conv with other channels.
    spec = preset("fcn").insert(1, layer("BatchNorm2d", num_features=64))
    fixed, _ = fix_chain(spec)
    assert fixed.layers[1].get("num_features") == 4096


def test_layer_spec_defaults_and_describe() -> None:
    conv = LayerSpec.make("Conv2d", in_channels=512, out_channels=4096, kernel_size=7)
    assert conv.get("stride") == 1 and conv.get("padding") == 0 and conv.get("bias") is True
    assert conv.describe() == "Conv2d(512→4096, 7×7)"
    assert layer("MaxPool2d", kernel_size=[2, 3]).get("kernel_size") == (2, 3)
    assert layer("MaxPool2d", kernel_size=[2, 2]).get("kernel_size") == 2
    for name in LAYER_TYPES:
        default_layer(name)
