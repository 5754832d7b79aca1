"""``vggexplorer.run/1`` files (written by the code before run files were typed; tests/data/run1/README.md
says how each was made) open with their legacy keys mapped onto RunMeta/RunEnvironment, re-save as
``vggexplorer.run/2`` and re-open equal; a /2 file round-trips its metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vggexplorer.core.model.config import ConfigError, RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.results.compare import compare
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import RUN_FORMAT, RUN_FORMAT_V1, RunResult
from vggexplorer.core.results.runfile import RunFileError, load_run, loads_run, result_to_dict, save_run
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.core.results.wording import run_label

DATA = Path(__file__).parent / "data" / "run1"
FIXTURES = ("cli", "gui", "predict")


def _raw(name: str) -> dict[str, object]:
    d: dict[str, object] = json.loads((DATA / f"{name}.run.json").read_text())
    return d


@pytest.mark.parametrize("name", FIXTURES)
def test_the_fixtures_are_v1_files(name: str) -> None:
    assert _raw(name)["format"] == RUN_FORMAT_V1 != RUN_FORMAT


def test_cli_file_maps_to_typed_fields() -> None:
    r = load_run(DATA / "cli.run.json")
    m = r.config
    assert m.run == RunConfig(preset("fc"), device="cpu", batch=1, input_hw=(32, 32), mode="train")
    assert (m.device, m.fake, m.head_label, m.preset, m.backbone) == ("cpu", False, "", None, "vgg11")
    assert m.label == "fc"  # no label in the file: the head's own name
    r.name = ""
    assert run_label(r) == "fc at 32"
    e = r.environment
    assert (e.device, e.device_kind, e.predicted, e.device_total_bytes) == ("cpu", "cpu", False, None)
    assert e.torch is not None and e.torch.startswith("2.") and e.ram_bytes and e.ram_bytes > 0
    assert e.nvml is not None and e.nvml["available"] is False and e.extra == {}


def test_gui_file_maps_preset_and_backbone() -> None:
    raw = _raw("gui")["config"]
    assert isinstance(raw, dict) and raw["preset"] == "fc" and raw["backbone"] == "vgg11"  # the GUI's keys
    with pytest.raises(ConfigError, match="unknown config keys"):
        RunConfig.from_dict(raw)  # why /1 GUI files need mapping
    r = load_run(DATA / "gui.run.json")
    m = r.config
    assert m.preset == "fc" and m.head_label == "fc" and m.backbone == "vgg11" and m.label == "fc"
    assert m.run.head == preset("fc") and m.run.optimizer == "adam" and m.run.input_hw == (32, 32)
    assert m.run.batch == 1 and m.run.mode == "train" and m.device == "cpu"
    assert r.name == "fc · b1 · 32 · cpu · train" and r.status == "ok"


def test_predict_file_maps_device_and_total_memory() -> None:
    raw = _raw("predict")
    env_raw = raw["environment"]
    assert isinstance(env_raw, dict) and "total_memory" in env_raw and "device_total_bytes" not in env_raw
    r = load_run(DATA / "predict.run.json")
    m, e = r.config, r.environment
    assert r.predicted and m.device == "predicted:NVIDIA GeForce RTX 3060" and m.run.device == "cpu"
    assert m.ran_on == m.device and m.run.head == preset("fc") and m.run.input_hw == (32, 32)
    assert e.predicted and e.device_total_bytes == env_raw["total_memory"] == 12626952192
    assert e.device_name == "NVIDIA GeForce RTX 3060 (PREDICTED)" and "total_memory" not in e.extra
    assert e.gpu_profile is not None and e.gpu_profile["name"] == "NVIDIA GeForce RTX 3060"
    assert e.cuda_mapping_rules == {"optimizer-foreach": 0, "dropout-bool-mask": 2}


@pytest.mark.parametrize("name", FIXTURES)
def test_v1_resaves_as_v2_and_reopens_equal(name: str, tmp_path: Path) -> None:
    r = load_run(DATA / f"{name}.run.json")
    p = tmp_path / "run.json"
    save_run(r, p)
    d = json.loads(p.read_text())
    assert d["format"] == RUN_FORMAT
    assert "backbone" not in d["config"] and "total_memory" not in d["environment"]
    back = load_run(p)
    assert back.config == r.config and back.environment == r.environment
    assert back.summary == r.summary and back.layers == r.layers and back.spans == r.spans
    assert np.array_equal(back.allocator.total, r.allocator.total) and back.notes == r.notes
    assert result_to_dict(back) == d  # nothing lost on the way


def test_v2_round_trip_keeps_labels_and_environment(tmp_path: Path) -> None:
    r = synthetic_run(name="A", head="fcn", input_hw=64, batch=2, cuda=True)
    labelled = RunMeta(r.config.run, device="cuda:0", fake=False, head_label="fcn (edited)", preset=None)
    env = RunEnvironment(
        device="cuda:0",
        device_kind="cuda",
        device_name="GPU X",
        device_total_bytes=80 << 30,
        extra={"k": [1]},
    )
    r.config, r.environment = labelled, env
    p = tmp_path / "run.json"
    save_run(r, p)
    back = load_run(p)
    assert back.config == labelled and back.environment == env
    assert back.config.label == "fcn (edited)" and back.config.backbone == "vgg11"
    assert json.loads(p.read_text())["environment"]["device_total_bytes"] == 80 << 30


def test_v1_legacy_config_variants() -> None:
    """Keys main's readers guessed at: ``input``/``input_size``, a head label string, ``head_name``."""
    d = result_to_dict(synthetic_run(name="A", head="gap", input_hw=32, batch=1))
    d["format"] = RUN_FORMAT_V1
    cfg = d["config"]
    for k in ("input_hw", "head_label", "preset", "resolved_device", "fake"):
        cfg.pop(k)
    cfg.update(head="gap", backbone="vgg13", input_size=48, head_name="mine")
    m = loads_run(json.dumps(d)).config
    assert m.run.head == preset("gap", "vgg13") and m.run.input_hw == (48, 48) and m.head_label == "gap"
    cfg.pop("input_size")
    cfg.update(input=[40, 56], head=preset("gap").to_dict(), preset="gap (edited)")
    m = loads_run(json.dumps(d)).config
    assert m.run.input_hw == (40, 56) and m.preset is None and m.head_label == "gap (edited)"
    cfg["head"] = "my head"
    with pytest.raises(RunFileError, match=r"run\.config: head 'my head' is a label"):
        loads_run(json.dumps(d))
    d["format"] = RUN_FORMAT  # /2 maps nothing: the same file is refused
    cfg["head"] = preset("gap").to_dict()
    with pytest.raises(RunFileError, match="unknown config keys"):
        loads_run(json.dumps(d))


def test_comparison_reads_typed_fields() -> None:
    a = load_run(DATA / "cli.run.json")
    b: RunResult = synthetic_run(name="B", head="fcn", input_hw=64, batch=1)
    c = compare(a, b)
    assert c.config_changes["input_hw"] == ([32, 32], [64, 64])
    assert "optimizer" not in c.config_changes and c.config_changes["preset"] == (None, "fcn")
    p = load_run(DATA / "predict.run.json")
    assert compare(a, p).config_changes["device"] == ("cpu", "predicted:NVIDIA GeForce RTX 3060")


def test_collect_environment_uses_the_record_names() -> None:
    """One set of names: every key collect_environment writes is a RunEnvironment field."""
    from vggexplorer.core.devices.environment import collect_environment

    raw = collect_environment("cpu")
    env = RunEnvironment.from_dict(raw)
    assert env.extra == {} and env.to_dict() | raw == env.to_dict()
    assert env.device == "cpu" and env.cpu_cores_logical == raw["cpu_cores_logical"]


def test_environment_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match="ram_bytes must be a whole number, got str"):
        RunEnvironment.from_dict({"ram_bytes": "8 GiB"})
    with pytest.raises(ConfigError, match="predicted must be true or false"):
        RunEnvironment.from_dict({"predicted": 1})
    assert RunEnvironment.from_dict({"total_memory": 5}).extra == {"total_memory": 5}  # /2: not renamed
    assert RunEnvironment.from_dict({"total_memory": 5}, legacy=True).device_total_bytes == 5
