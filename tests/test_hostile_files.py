"""Hostile files: a corpus of bad head files, run files and snapshot pickles, opened through the CLI and the
loaders. Each is refused with a one-line message and exit code 2; nothing crashes, nothing is written, no
code from a file runs (pickles that would write a marker file), and a refused load changes no state.

Big files are sparse (``truncate``), so the corpus costs no disk; each is just over its loader's limit.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vggexplorer.cli import main
from vggexplorer.core.allocator.snapshot import MAX_SNAPSHOT_BYTES, SnapshotError, load_snapshot
from vggexplorer.core.allocator.snapshot_export import export_snapshot
from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.model.head import MAX_HEAD_FILE_BYTES, HeadDocument, HeadError, HeadSpec, preset
from vggexplorer.core.results.runfile import (
    MAX_RUN_FILE_BYTES,
    RunFileError,
    load_run,
    result_to_dict,
    save_run,
)
from vggexplorer.core.results.synthetic import synthetic_run

DEEP = 100_000


def garbage(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


# --------------------------------------------------------------------------------------------- corpus


def _w(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _dir(p: Path, *_: Path) -> Path:
    p.mkdir()
    return p


def _fifo(p: Path, *_: Path) -> Path:
    os.mkfifo(p)  # no writer: a plain open() would block forever
    return p


GOOD_HEAD = preset("fcn").to_json()


def _head(**changes: Any) -> bytes:
    d = json.loads(GOOD_HEAD)
    d.update(changes)
    return json.dumps(d).encode()


def _head_layer(layer: dict[str, Any]) -> bytes:
    d = json.loads(GOOD_HEAD)
    d["layers"][0] = layer
    return json.dumps(d).encode()


HEADS: dict[str, Callable[[Path], Path]] = {
    "empty": lambda p: _w(p, b""),
    "truncated": lambda p: _w(p, GOOD_HEAD.encode()[: len(GOOD_HEAD) // 2]),
    "binary-garbage": lambda p: _w(p, garbage(4096, 1)),
    "nul-bytes": lambda p: _w(p, b"\x00" * 1000),
    "utf16-garbage": lambda p: _w(p, "{\u00e9\u4e2d: ".encode("utf-16")),
    "utf8-invalid": lambda p: _w(p, b'{"format": "\xff\xfe\xfa"}'),
    "top-level-list": lambda p: _w(p, b"[1, 2, 3]"),
    "top-level-string": lambda p: _w(p, b'"vgg11"'),
    "wrong-format-version": lambda p: _w(p, _head(format="vggexplorer.head/99")),
    "other-format": lambda p: _w(p, _head(format="keras.model")),
    "layers-not-a-list": lambda p: _w(p, _head(layers="Conv2d")),
    "layer-type-number": lambda p: _w(p, _head_layer({"type": 5})),
    "layer-unknown-type": lambda p: _w(p, _head_layer({"type": "os.system"})),
    "kernel-size-string": lambda p: _w(
        p, _head_layer({"type": "Conv2d", "in_channels": 512, "out_channels": 8, "kernel_size": "7"})
    ),
    "nan": lambda p: _w(p, GOOD_HEAD.replace('"out_channels": 4096', '"out_channels": NaN', 1).encode()),
    "infinity": lambda p: _w(
        p, GOOD_HEAD.replace('"out_channels": 4096', '"out_channels": Infinity', 1).encode()
    ),
    "float-overflow-1e400": lambda p: _w(
        p, GOOD_HEAD.replace('"out_channels": 4096', '"out_channels": 1e400', 1).encode()
    ),
    "huge-int": lambda p: _w(
        p, GOOD_HEAD.replace('"out_channels": 4096', '"out_channels": ' + "9" * 4000, 1).encode()
    ),
    "absurd-size": lambda p: _w(
        p, GOOD_HEAD.replace('"out_channels": 4096', '"out_channels": 1000000000', 1).encode()
    ),
    "bool-as-int": lambda p: _w(
        p, GOOD_HEAD.replace('"out_channels": 4096', '"out_channels": true', 1).encode()
    ),
    "too-many-layers": lambda p: _w(p, _head(layers=[{"type": "ReLU"}] * 10_000)),
    "deep-lists": lambda p: _w(p, b"[" * DEEP + b"]" * DEEP),
    "deep-objects": lambda p: _w(p, b'{"a":' * DEEP + b"1" + b"}" * DEEP),
    "deep-inside-a-layer": lambda p: _w(
        p,
        GOOD_HEAD.replace(
            '"out_channels": 4096', '"out_channels": ' + "[" * 50_000 + "]" * 50_000, 1
        ).encode(),
    ),
    "over-the-limit": lambda p: sparse(p, MAX_HEAD_FILE_BYTES + 1, b'{"format":'),
    "100-MB": lambda p: sparse(p, 100 * 1024 * 1024, GOOD_HEAD.encode()),
    "a-directory": _dir,
    "a-fifo": _fifo,
    "missing": lambda p: p,
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("good") / "run.json"
    save_run(synthetic_run(name="A", head="fc", input_hw=64, batch=1), p)
    return p


def _run_dict(good: Path) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(good.read_text())
    return d


def _mutated(good: Path, fn: Callable[[dict[str, Any]], None]) -> bytes:
    d = _run_dict(good)
    fn(d)
    return json.dumps(d, allow_nan=True).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for k in parents:
            d = d[k]
        d[last] = value

    return f


RUNS: dict[str, Callable[[Path, Path], Path]] = {
    "empty": lambda p, g: _w(p, b""),
    "truncated": lambda p, g: _w(p, g.read_bytes()[: g.stat().st_size // 2]),
    "binary-garbage": lambda p, g: _w(p, garbage(8192, 2)),
    "utf16-garbage": lambda p, g: _w(p, "{\u00e9: [".encode("utf-16")),
    "top-level-list": lambda p, g: _w(p, b"[]"),
    "wrong-format-version": lambda p, g: _w(p, _mutated(g, _set("format", "vggexplorer.run/3"))),
    "config-unknown-key": lambda p, g: _w(p, _mutated(g, _set("config.colour", "red"))),
    "config-head-not-a-head": lambda p, g: _w(p, _mutated(g, _set("config.head", "fc"))),
    "config-preset-unknown": lambda p, g: _w(p, _mutated(g, _set("config.preset", "resnet"))),
    "environment-wrong-type": lambda p, g: _w(p, _mutated(g, _set("environment.ram_bytes", "lots"))),
    "other-format": lambda p, g: _w(p, _mutated(g, _set("format", "chrome.trace"))),
    "no-format": lambda p, g: _w(p, _mutated(g, lambda d: d.pop("format"))),
    "status-wrong-type": lambda p, g: _w(p, _mutated(g, _set("status", 5))),
    "status-unknown": lambda p, g: _w(p, _mutated(g, _set("status", "exploded"))),
    "summary-string": lambda p, g: _w(p, _mutated(g, _set("summary.peak_allocated_bytes", "1 GiB"))),
    "summary-nan": lambda p, g: _w(p, _mutated(g, _set("summary.peak_time_s", float("nan")))),
    "summary-infinity": lambda p, g: _w(p, _mutated(g, _set("summary.peak_time_s", float("inf")))),
    "summary-1e400": lambda p, g: _w(
        p, g.read_bytes().replace(b'"peak_time_s":', b'"peak_time_s":1e400,"x_":', 1)
    ),
    "column-nan": lambda p, g: _w(p, _mutated(g, _set("timelines.device.achieved_hz", float("nan")))),
    "layer-time-1e400": lambda p, g: _w(
        p, g.read_bytes().replace(b'"forward_s":', b'"forward_s":1e400,"x_":', 1)
    ),
    "span-time-1e400": lambda p, g: _w(
        p,
        _mutated(g, lambda d: d["spans"].update(t0=[1e300] * len(d["spans"]["t0"]))).replace(
            b"1e+300", b"1e400"
        ),
    ),
    "columns-differ": lambda p, g: _w(p, _mutated(g, lambda d: d["timelines"]["tensor"].update(phase=[0]))),
    "phase-out-of-range": lambda p, g: _w(
        p,
        _mutated(
            g,
            lambda d: d["timelines"]["tensor"].update(
                phase={"dtype": "<i1", "b64": "fw=="},
                t=[0.0],
                delta=[1],
                total=[1],
                category=[0],
                op=[-1],
                module=[-1],
                iteration=[0],
                storage=[0],
            ),
        ),
    ),
    "bad-base64": lambda p, g: _w(
        p, _mutated(g, lambda d: d["timelines"]["tensor"].update(t={"dtype": "<f8", "b64": "!!!not base64"}))
    ),
    "huge-int": lambda p, g: _w(p, _mutated(g, _set("summary.param_bytes", 10**400))),
    "strings-not-strings": lambda p, g: _w(p, _mutated(g, _set("strings", [1, 2, 3]))),
    "deep-lists": lambda p, g: _w(p, b"[" * DEEP + b"]" * DEEP),
    "deep-in-config": lambda p, g: _w(
        p, _mutated(g, _set("config.x", "DEEP")).replace(b'"DEEP"', b"[" * DEEP + b"]" * DEEP)
    ),
    "over-the-limit": lambda p, g: sparse(p, MAX_RUN_FILE_BYTES + 1, b'{"format":"vggexplorer.run/1"'),
    "100-MB-of-zeros": lambda p, g: sparse(p, 100 * 1024 * 1024),
    "a-directory": _dir,
    "a-fifo": _fifo,
    "missing": lambda p, g: p,
}


# pickles ----------------------------------------------------------------------------------------------


class _Reduce:
    """Unpickles by calling ``fn(*args)``: every one of these would write the marker file."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


def _evil_payloads(marker: Path) -> dict[str, Any]:
    m = str(marker)
    return {
        "os.system": _Reduce(os.system, f"touch {m}"),
        "builtins.exec": _Reduce(builtins.exec, f"open({m!r}, 'w').close()"),
        "builtins.eval": _Reduce(builtins.eval, f"open({m!r}, 'w').close()"),
        "builtins.open": _Reduce(builtins.open, m, "w"),
        "subprocess.call": _Reduce(subprocess.call, ["touch", m]),
    }


def _wrapped(x: Any) -> Any:
    """Hidden inside an otherwise valid snapshot."""
    return {"segments": [], "device_traces": [[{"action": "alloc", "addr": x, "size": 512}]]}


def _inst_opcode(marker: Path) -> bytes:
    """Protocol 0 INST: ``i`` module\\n name\\n with a MARK'd argument tuple — no class object needed."""
    return b"\x80\x02(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."


def _nested_lists(n: int) -> bytes:
    return b"\x80\x04" + b"]" * n + b"a" * (n - 1) + b"."


SNAPSHOTS: dict[str, Callable[[Path, Path], bytes | Path]] = {
    "empty": lambda p, good: b"",
    "truncated": lambda p, good: good.read_bytes()[: good.stat().st_size // 2],
    "truncated-one-byte": lambda p, good: good.read_bytes()[:-1],
    "trailing-bytes": lambda p, good: good.read_bytes() + b"extra",
    "binary-garbage": lambda p, good: garbage(4096, 3),
    "pickle-marker-then-garbage": lambda p, good: b"\x80\x04" + garbage(4096, 4),
    "json-not-pickle": lambda p, good: b'{"segments": []}',
    "utf16-text": lambda p, good: "segments".encode("utf-16"),
    "wrong-structure-set": lambda p, good: pickle.dumps({1, 2, 3}, protocol=4),
    "wrong-structure-no-segments": lambda p, good: pickle.dumps({"device_traces": []}, protocol=4),
    "segments-not-list": lambda p, good: pickle.dumps({"segments": "all"}, protocol=4),
    "nan-size": lambda p, good: pickle.dumps(
        {"segments": [{"address": 0, "total_size": float("nan"), "blocks": []}]}, protocol=4
    ),
    "huge-int": lambda p, good: pickle.dumps(
        {"segments": [], "device_traces": [[{"action": "alloc", "addr": 1 << 4000, "size": 512}]]}, protocol=4
    ),
    "deep-nesting": lambda p, good: _nested_lists(DEEP),
    "persistent-id": lambda p, good: b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94Q.",
    "ext-code": lambda p, good: b"\x80\x02\x82\x01.",
    "inst-os-system": lambda p, good: _inst_opcode(p.parent / "ran"),
    "over-the-limit": lambda p, good: sparse(p, MAX_SNAPSHOT_BYTES + 1, b"\x80\x04"),
    "a-directory": _dir,
    "a-fifo": _fifo,
}


@pytest.fixture(scope="module")
def good_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("snap") / "good.pickle"
    export_snapshot(
        [("alloc", 0x7F0000000000, 1024, 1, ""), ("free_completed", 0x7F0000000000, 1024, 2, "")], p
    )
    return p


def _materialise(tmp: Path, name: str, make: Callable[..., bytes | Path], *extra: Path) -> Path:
    p = tmp / name
    out = make(p, *extra)
    if isinstance(out, bytes):
        p.write_bytes(out)
        return p
    return out


# Known bugs: strict xfails, so each turns into a failure once it is fixed and the mark must go.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def corpus(kind: str, names: dict[str, Any]) -> list[Any]:
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(kind, n)]))
        if (kind, n) in KNOWN_BUGS
        else n
        for n in sorted(names)
    ]


# --------------------------------------------------------------------------------------------- checks


def one_line_error(capsys: pytest.CaptureFixture[str], prefix: str = "vggexplorer: error:") -> str:
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err[-2000:]
    assert lines[0].startswith(prefix), lines[0]
    assert len(lines[0]) < 600, len(lines[0])
    assert "Traceback" not in cap.err and cap.out == ""
    return lines[0]


def cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return int(e.code or 0)


# ---------------------------------------------------------------------------------------------- heads


@pytest.mark.parametrize("name", corpus("head", HEADS))
def test_hostile_head_files(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _materialise(tmp_path, f"{name}.json", HEADS[name])
    before = sorted(tmp_path.iterdir())
    with pytest.raises(HeadError) as info:
        HeadSpec.load(p)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    # refused through the document: state unchanged, no listener called
    doc = HeadDocument(preset("fc"))
    calls: list[object] = []
    doc.subscribe(lambda *a: calls.append(a))
    with pytest.raises(HeadError):
        doc.reset(HeadSpec.load(p))
    assert doc.spec == preset("fc") and calls == []
    # and through the CLI
    assert cli(["shapes", "--head", str(p)]) == 2
    msg = one_line_error(capsys)
    assert p.name in msg or name in ("missing",) or str(p) in msg
    assert (
        cli(["run", "--head", str(p), "--device", "cpu", "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    )
    one_line_error(capsys)
    assert not (tmp_path / "out").exists()
    assert sorted(tmp_path.iterdir()) == before


def test_utf16_head_is_read_as_what_it_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON allows UTF-16/32 (RFC 8259 §8.1 requires UTF-8 only for exchange; Python detects them): a valid
    head saved as UTF-16 loads as exactly that head — or is refused in one line; never mis-read."""
    p = tmp_path / "u16.json"
    p.write_bytes(GOOD_HEAD.encode("utf-16"))
    try:
        spec = HeadSpec.load(p)
    except HeadError as e:
        assert "\n" not in str(e)
    else:
        assert spec == HeadSpec.from_json(GOOD_HEAD)
    assert cli(["shapes", "--head", str(p), "--input", "384"]) in (0, 2)


# ----------------------------------------------------------------------------------------------- runs


@pytest.mark.parametrize("name", corpus("run", RUNS))
def test_hostile_run_files(
    name: str, good_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _materialise(tmp_path, f"{name}.json", RUNS[name], good_run)
    with pytest.raises(RunFileError) as info:
        load_run(p)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600
    out = tmp_path / "out"
    assert cli(["export", str(p), "--csv", "--out", str(out)]) == 2
    one_line_error(capsys)
    assert cli(["export", str(p), "--out", str(out)]) == 2
    one_line_error(capsys)
    assert cli(["compare", str(good_run), str(p), "--out", str(out), "--no-plots"]) == 2
    one_line_error(capsys)
    assert cli(["compare", str(p), str(good_run), "--out", str(out)]) == 2
    one_line_error(capsys)
    assert not out.exists()  # refused before anything was written


def test_the_run_corpus_starts_from_a_file_that_loads(
    good_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control: the mutations, not the base file, are what the loaders refuse."""
    r = load_run(good_run)
    assert r.name == "A" and len(r.tensor) > 0
    assert load_run(good_run).summary == r.summary
    assert json.loads(json.dumps(result_to_dict(r))) == json.loads(good_run.read_text())


def test_run_json_on_a_device_that_never_ends(tmp_path: Path) -> None:
    """/dev/zero says it is 0 bytes long and never ends. Reading it must stop at the limit, in a child
    process capped at 1 GiB of address space beyond the interpreter's (run, export and head paths)."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero on this system")
    code = (
        "import resource, sys\n"
        "from vggexplorer.cli import main\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "import psutil; vms = psutil.Process().memory_info().vms\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vms + (1 << 30), hard))\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for argv in (
        ["export", "/dev/zero", "--csv", "--out", str(tmp_path / "o")],
        ["shapes", "--head", "/dev/zero"],
    ):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (argv, r.returncode, r.stderr[-1500:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vggexplorer: error:"), r.stderr[-1500:]


# ------------------------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("name", corpus("snapshot", SNAPSHOTS))
def test_hostile_snapshots(
    name: str, good_snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _materialise(tmp_path, f"{name}.pickle", SNAPSHOTS[name], good_snapshot)
    with pytest.raises(SnapshotError) as info:
        load_snapshot(p)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    if p.is_file() and p.stat().st_size < MAX_SNAPSHOT_BYTES:
        with pytest.raises(SnapshotError):
            load_snapshot(p.read_bytes())
    assert cli(["replay", str(p)]) == 2
    one_line_error(capsys, prefix="error:")
    assert cli(["replay", str(p), "--json"]) == 2
    out = capsys.readouterr().out
    d = json.loads(out)
    assert d["ok"] is False and d["refused"] is True
    assert not (tmp_path / "ran").exists()


def test_the_good_snapshot_replays(good_snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["replay", str(good_snapshot)]) in (0, 1)
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "inside-a-snapshot"])
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize(
    "kind", ["os.system", "builtins.exec", "builtins.eval", "builtins.open", "subprocess.call"]
)
def test_code_in_pickles_never_runs(
    kind: str, protocol: int, wrap: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    payload = _evil_payloads(marker)[kind]
    data = pickle.dumps(_wrapped(payload) if wrap else payload, protocol=protocol)
    if protocol == 0:
        data = b"\x80\x02" + data  # protocol 0 has no marker; make it pass the first check
    p = tmp_path / "evil.pickle"
    p.write_bytes(data)
    with pytest.raises(SnapshotError, match="refused"):
        load_snapshot(p)
    assert cli(["replay", str(p)]) == 2
    msg = one_line_error(capsys, prefix="error:")
    assert not marker.exists(), "code from the file ran"
    assert kind.split(".")[-1] in msg or "persistent" in msg or "refused" in msg


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.open", "subprocess.call"])
def test_the_evil_payloads_are_live(kind: str, tmp_path: Path) -> None:
    """Control: the plain unpickler, in a child process, does write the marker."""
    marker = tmp_path / "ran"
    p = tmp_path / "evil.pickle"
    p.write_bytes(pickle.dumps(_evil_payloads(marker)[kind], protocol=4))
    code = "import pickle, sys; r = pickle.load(open(sys.argv[1], 'rb')); getattr(r, 'close', lambda: 0)()"
    subprocess.run([sys.executable, "-c", code, str(p)], check=False, timeout=60, capture_output=True)
    assert marker.exists()


def test_inst_opcode_payload_is_live(tmp_path: Path) -> None:
    p = tmp_path / "x.pickle"
    p.write_bytes(_inst_opcode(tmp_path / "ran"))
    subprocess.run(
        [sys.executable, "-c", "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))", str(p)],
        check=False,
        timeout=60,
        capture_output=True,
    )
    assert (tmp_path / "ran").exists()


def test_every_loader_error_is_one_family() -> None:
    for e in (HeadError, RunFileError, SnapshotError):
        assert issubclass(e, VGGExplorerError)
