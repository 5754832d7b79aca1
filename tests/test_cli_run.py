"""``vggexplorer run``: files written, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from vggexplorer.cli import main
from vggexplorer.core.results.runfile import load_run

FAST = ["--head", "gap", "--input", "32", "--device", "cpu", "--no-plots", "--quiet"]


def test_run_writes_json_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", *FAST, "--mode", "train-step", "--optimizer", "adam", "--out", str(out)]) == 0
    r = load_run(out / "run.json")
    assert r.status == "ok" and r.config.run.mode == "train-step" and r.config.run.optimizer == "adam"
    with (out / "memory.csv").open(newline="") as f:
        assert sum(1 for _ in csv.reader(f)) > len(r.tensor)
    assert not (out / "memory.png").exists()
    err = capsys.readouterr().err
    assert "done: peak allocator " in err and ", params " in err and f"→ {out}" in err


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o")
    assert main(["run", *FAST, "--input", "16", "--out", out]) == 2
    assert "too small" in capsys.readouterr().err
    missing = str(tmp_path / "nope.json")
    assert main(["run", "--head", missing, "--device", "cpu", "--out", out]) == 2
    assert main(["run", *FAST, "--dtype", "float16", "--out", out]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "vggexplorer.head/1", "layers": [{"type": "Nope"}]}))
    assert main(["run", "--head", str(bad), "--device", "cpu", "--out", out]) == 2
    with pytest.raises(SystemExit) as e:
        main(["run", *FAST, "--iterations", "0", "--out", out])
    assert e.value.code == 2


def test_oom_exits_3_and_still_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "oom"
    code = main(["run", *FAST, "--mode", "train", "--inject-oom", "features.3:backward", "--out", str(out)])
    assert code == 3
    assert "out of memory in features.3 during backward" in capsys.readouterr().err
    r = load_run(out / "run.json")
    assert r.status == "oom" and r.fault is not None and r.fault.layer == "features.3"
    assert (out / "memory.csv").stat().st_size > 0


def test_plots_are_skipped_or_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p"
    args = [a for a in FAST if a != "--no-plots"]
    assert main(["run", *args, "--mode", "eval", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    png = out / "memory.png"
    assert png.exists() or "plots" in err
    if png.exists():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
