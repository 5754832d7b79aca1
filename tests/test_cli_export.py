"""``vggexplorer export`` and ``vggexplorer compare`` on saved runs (synthetic runs written with save_run)."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vggexplorer.cli import main
from vggexplorer.core.results.runfile import load_run, save_run
from vggexplorer.core.results.synthetic import synthetic_run


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "fc224" / "run.json"
    b = tmp_path / "fcn384" / "run.json"
    a.parent.mkdir()
    b.parent.mkdir()
    save_run(synthetic_run(head="fc", input_hw=224, batch=4, optimizer=False), a)
    save_run(synthetic_run(head="fcn", input_hw=384, batch=4, optimizer=False, workspace_bytes=2**28), b)
    return a, b


def test_export_writes_png_svg_csv(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["export", str(runs[0]), "--png", "--svg", "--csv", "--out", str(out), "--size", "800x600"]) == 0
    )
    assert (out / "memory.png").read_bytes()[:4] == b"\x89PNG"
    ET.parse(out / "memory.svg")
    rows = list(csv.reader((out / "memory.csv").read_text().splitlines()))
    assert rows[0][0] == "time_s" and len(rows) > 10
    printed = capsys.readouterr().out.split()
    assert str(out / "memory.png") in printed


def test_export_defaults_to_plots_next_to_the_run(runs: tuple[Path, Path]) -> None:
    assert main(["export", str(runs[1])]) == 0
    assert (runs[1].parent / "memory.png").exists() and (runs[1].parent / "memory.svg").exists()


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"format": "something else"}'])
def test_export_rejects_a_bad_file_in_one_line(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    assert main(["export", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vggexplorer: error:")
    assert not (tmp_path / "o" / "memory.png").exists()


def test_export_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_compare_writes_tables_plots_and_explains(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fcn384 vs fc224:" in text  # runs without a name are named after their folder
    assert "peak allocated" in text and "2.9× the pixels (384² vs 224²)" in text
    md = (out / "compare.md").read_text()
    assert md.startswith("# fcn384 vs fc224") and "## Layers (metrics that differ)" in md
    rows = list(csv.DictReader((out / "compare.csv").read_text().splitlines()))
    out0 = next(r for r in rows if r["name"] == "features.0" and r["metric"] == "output_bytes")
    assert int(out0["delta_bytes"]) == 64 * 4 * 4 * (384**2 - 224**2)
    assert {r["section"] for r in rows} == {"summary", "category", "layer"}
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    svg = (out / "compare.svg").read_text()
    ET.fromstring(svg)
    assert "fc224: CPU allocator total" in svg and "fcn384: CPU allocator total" in svg
    assert load_run(runs[0]).name == ""  # the files themselves are not changed


def test_compare_needs_two_runs_and_good_files(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(runs[0]), "--out", str(tmp_path / "c")]) == 2
    assert "at least two" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["compare", str(runs[0]), str(bad), "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith("vggexplorer: error: bad.json")
