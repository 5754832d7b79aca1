"""run.json round trip and refusal of bad files; memory.csv readable."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vggexplorer.core.results.runfile as runfile
from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.results.result import RUN_FORMAT, RunResult
from vggexplorer.core.results.runfile import (
    RunFileError,
    load_run,
    loads_run,
    result_to_dict,
    save_run,
    write_csv,
)
from vggexplorer.core.run.engine import run
from vggexplorer.core.run.tracer import FailAt


@pytest.fixture(scope="module")
def result() -> RunResult:
    cfg = RunConfig(head=preset("gap"), device="cpu", input_hw=(32, 32), mode="train-step", sample_hz=200.0)
    return run(cfg)


def test_round_trip(result: RunResult, tmp_path: Path) -> None:
    p = tmp_path / "run.json"
    save_run(result, p)
    back = load_run(p)
    assert back.summary == result.summary
    assert back.layers == result.layers
    assert back.spans == result.spans
    assert back.strings == result.strings and back.status == "ok" and back.fault is None
    for name in ("tensor", "allocator"):
        a, b = getattr(result, name), getattr(back, name)
        for col in ("t", "delta", "total", "phase", "category", "op", "module", "iteration"):
            assert np.array_equal(getattr(a, col), getattr(b, col)), (name, col)
    assert np.array_equal(back.tensor.storage, result.tensor.storage)  # type: ignore[arg-type]
    assert np.array_equal(back.device.process, result.device.process)
    assert back.config == result.config and back.config.run.head == preset("gap")
    assert back.environment == result.environment
    assert back.config.device == "cpu" and not back.config.fake
    d = json.loads(p.read_text())
    assert d["format"] == RUN_FORMAT and "at_peak" in d["categories"]


def test_large_columns_are_packed(result: RunResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runfile, "B64_MIN", 8)
    p = tmp_path / "run.json"
    save_run(result, p)
    d = json.loads(p.read_text())
    assert isinstance(d["timelines"]["tensor"]["delta"], dict)
    back = load_run(p)
    assert np.array_equal(back.allocator.total, result.allocator.total)


def test_oom_result_round_trips_with_its_fault(tmp_path: Path) -> None:
    r = run(
        RunConfig(head=preset("gap"), device="cpu", input_hw=(32, 32), sample_hz=0),
        fail_at=FailAt("features.0", "backward"),
    )
    save_run(r, tmp_path / "run.json")
    back = load_run(tmp_path / "run.json")
    assert back.status == "oom" and back.fault == r.fault


Mutator = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutator:
    def f(d: dict[str, Any]) -> None:
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return f


def _del(path: str) -> Mutator:
    def f(d: dict[str, Any]) -> None:
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return f


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("format", "vggexplorer.run/3"), "unsupported run file version"),
        (_set("config.colour", "red"), r"run\.config: unknown config keys \['colour'\]"),
        (_set("config.backbone", "vgg11"), "unknown config keys"),  # a /1 GUI key, not part of /2
        (_set("config.preset", "resnet"), "run.config: preset must be one of"),
        (_set("config.fake", "no"), "run.config: fake must be true or false"),
        (_set("config.batch", 0), "run.config: batch must be between"),
        (_del("config.head"), "run.config: a run config needs a 'head'"),
        (_set("config", []), "run.config must be dict"),
        (
            _set("environment.device_total_bytes", "lots"),
            "run.environment: device_total_bytes must be a whole",
        ),
        (_set("environment.predicted", 1), "run.environment: predicted must be true or false"),
        (_set("format", "something/1"), "not a vggexplorer run file"),
        (_del("summary"), "missing key 'summary'"),
        (_del("timelines.tensor.delta"), "missing column 'delta'"),
        (_set("summary.param_bytes", "many"), "must be int"),
        (_set("summary.param_bytes", True), "wrong type"),
        (_set("status", "fine"), "status"),
        (_set("timelines.tensor.delta", [1, 2]), "has 2 values"),
        (_set("timelines.tensor.phase", None), "list of numbers"),
        (_set("strings", [1]), "list of strings"),
        (_set("layers", [{"name": "x"}]), "missing key 'type'"),
        (_set("timelines.allocator.t", {"dtype": "<f8", "b64": "!!"}), "invalid base64"),
    ],
)
def test_bad_files_are_refused(result: RunResult, tmp_path: Path, mutate: Mutator, message: str) -> None:
    d = result_to_dict(result)
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(RunFileError, match=message):
        load_run(p)


def test_bad_phase_index_and_nan_and_nesting_are_refused(result: RunResult) -> None:
    d = result_to_dict(result)
    n = len(result.tensor)
    d["timelines"]["tensor"]["phase"] = (
        [99] * n if n <= runfile.B64_MIN else d["timelines"]["tensor"]["phase"]
    )
    with pytest.raises(RunFileError, match="out of range"):
        loads_run(json.dumps(d))
    text = json.dumps(result_to_dict(result)).replace('"peak_time_s":', '"peak_time_s":NaN,"x":', 1)
    with pytest.raises(RunFileError, match="NaN"):
        loads_run(text)
    with pytest.raises(RunFileError, match="nested"):
        loads_run('{"format": "vggexplorer.run/1", "notes": ' + "[" * 100 + "]" * 100 + "}")
    with pytest.raises(RunFileError, match="not valid JSON"):
        loads_run("{")


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.json"
    p.write_text("{}" + " " * 100)
    monkeypatch.setattr(runfile, "MAX_RUN_FILE_BYTES", 50)
    with pytest.raises(RunFileError, match="at most"):
        load_run(p)
    with pytest.raises(RunFileError, match="cannot read"):
        load_run(tmp_path / "missing.json")


def test_csv_is_readable(result: RunResult, tmp_path: Path) -> None:
    p = tmp_path / "memory.csv"
    write_csv(result, p)
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(runfile.CSV_COLUMNS)
    levels = {r["level"] for r in rows}
    assert {"tensor", "allocator", "process"} <= levels
    tensor = [r for r in rows if r["level"] == "tensor"]
    assert len(tensor) == len(result.tensor)
    assert max(int(r["total_bytes"]) for r in tensor) == result.summary.peak_tensor_bytes
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times)
    assert {r["phase"] for r in tensor} >= {"setup", "forward", "backward", "optimizer"}
    assert any(r["module"] == "features.0" for r in tensor)
