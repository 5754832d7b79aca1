"""Hostile files opened through the window's own File → Open Head… / Open Run… actions.

``QFileDialog.getOpenFileName`` is patched to return the file and the *action* is triggered, as a user would.
Each file must be refused with a visible, non-modal message naming it; the head, the undo stack, the runs
list and the plot stay exactly as they were; no modal dialog opens (``QMessageBox`` is patched to record
any); no exception escapes a slot (pytest-qt fails the test on one). A pickle whose unpickling would write a
marker file is offered as a head and as a run: the window never unpickles, so the marker never appears.

The window has no "open snapshot" path (memory_viz snapshot pickles are read by the CLI only), so snapshot
pickles are covered here only as files offered to the head and run openers.

Also: ``python main.py`` without a display prints a clear message and exits non-zero instead of Qt's abort.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QFileDialog, QMessageBox
from pytestqt.qtbot import QtBot

from vggexplorer.core.model.head import HEAD_FORMAT, MAX_HEAD_FILE_BYTES, preset
from vggexplorer.core.results.runfile import result_to_dict, save_run
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.qt.main_window import MainWindow
from vggexplorer.qt.settings import AppSettings

REPO = Path(__file__).resolve().parent.parent


class Marker:
    """Unpickling this runs ``Path(marker).write_text("pwned")``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "pwned"))


class SystemCall:
    """A pickle naming ``os.system`` (the classic): unpickling would run a shell command writing a marker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"echo pwned > {self.path}",))


# --- head corpus -----------------------------------------------------------------------------------------


def _head(**over: Any) -> bytes:
    d: dict[str, Any] = {"format": HEAD_FORMAT, "backbone": "vgg11", "layers": [{"type": "ReLU"}]}
    d.update(over)
    return json.dumps(d).encode()


HEADS: dict[str, Callable[[Path], bytes]] = {
    "empty": lambda m: b"",
    "whitespace": lambda m: b"   \n\t ",
    "malformed": lambda m: b'{"format": "vggexplorer.head/1", "layers": [',
    "truncated": lambda m: _head()[:-7],
    "binary": lambda m: bytes(range(256)) * 64,
    "not_an_object": lambda m: b"[1, 2, 3]",
    "null": lambda m: b"null",
    "wrong_format": lambda m: _head(format="vggexplorer.run/1"),
    "future_version": lambda m: _head(format="vggexplorer.head/99"),
    "no_format": lambda m: json.dumps({"backbone": "vgg11", "layers": []}).encode(),
    "unknown_key": lambda m: _head(evil=True),
    "unknown_backbone": lambda m: _head(backbone="resnet50"),
    "backbone_not_str": lambda m: _head(backbone=["vgg11"]),
    "layers_not_list": lambda m: _head(layers={"type": "ReLU"}),
    "layer_not_object": lambda m: _head(layers=["ReLU"]),
    "unknown_type": lambda m: _head(layers=[{"type": "os.system"}]),
    "type_not_str": lambda m: _head(layers=[{"type": 7}]),
    "unknown_kwarg": lambda m: _head(layers=[{"type": "ReLU", "__class__": "x"}]),
    "nan": lambda m: _head().replace(b'"ReLU"}', b'"Dropout", "p": NaN}'),
    "infinity": lambda m: _head().replace(b'"ReLU"}', b'"Dropout", "p": Infinity}'),
    "huge_int": lambda m: _head(layers=[{"type": "Linear", "in_features": 10**400, "out_features": 1}]),
    "absurd_layer": lambda m: _head(
        layers=[{"type": "Linear", "in_features": 1 << 24, "out_features": 1 << 24}]
    ),
    "negative": lambda m: _head(layers=[{"type": "Linear", "in_features": -1, "out_features": 1}]),
    "too_many_layers": lambda m: _head(layers=[{"type": "ReLU"}] * 300),
    "deep_nesting": lambda m: b"[" * 100_000 + b"]" * 100_000,
    "deep_object": lambda m: b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "over_1MiB": lambda m: _head() + b" " * (MAX_HEAD_FILE_BYTES + 1),
    "pickle_marker": lambda m: pickle.dumps(Marker(m)),
    "pickle_os_system": lambda m: pickle.dumps(SystemCall(m)),
}

# --- run corpus ------------------------------------------------------------------------------------------


def _run_dict() -> dict[str, Any]:
    return result_to_dict(synthetic_run(head="gap", input_hw=32, batch=1))


def _run(mutate: Callable[[dict[str, Any]], object]) -> Callable[[Path], bytes]:
    def make(marker: Path) -> bytes:
        d = _run_dict()
        mutate(d)
        return json.dumps(d).encode()

    return make


def _drop_last(d: dict[str, Any]) -> None:
    d["timelines"]["tensor"]["total"].pop()


def _nan_total(d: dict[str, Any]) -> None:
    d["timelines"]["tensor"]["total"][3] = float("nan")  # json.dumps writes NaN


def _inf_time(d: dict[str, Any]) -> None:
    d["timelines"]["tensor"]["t"][0] = float("inf")


RUNS: dict[str, Callable[[Path], bytes]] = {
    "empty": lambda m: b"",
    "truncated": lambda m: json.dumps(_run_dict()).encode()[:5000],
    "binary": lambda m: bytes(range(256)) * 64,
    "head_file": lambda m: preset("fc").to_json().encode(),
    "wrong_version": _run(lambda d: d.update(format="vggexplorer.run/3")),
    "config_unknown_key": _run(lambda d: d["config"].update(colour="red")),
    "config_legacy_key_in_v2": _run(lambda d: d["config"].update(backbone="vgg11")),
    "config_bad_preset": _run(lambda d: d["config"].update(preset=5)),
    "environment_wrong_type": _run(lambda d: d["environment"].update(device_total_bytes="lots")),
    "old_format": _run(lambda d: d.update(format="vggexplorer.run/0")),
    "no_format": _run(lambda d: d.pop("format")),
    "column_lengths": _run(_drop_last),
    "nan": _run(_nan_total),
    "infinity": _run(_inf_time),
    "bad_status": _run(lambda d: d.update(status="rm -rf /")),
    "timelines_wrong_type": _run(lambda d: d.update(timelines=[1, 2])),
    "missing_summary": _run(lambda d: d.pop("summary")),
    "phase_out_of_range": _run(lambda d: d["timelines"]["tensor"]["phase"].__setitem__(0, 99)),
    "string_index_out_of_range": _run(lambda d: d["timelines"]["tensor"]["op"].__setitem__(0, 10**6)),
    "bad_base64": _run(lambda d: d["timelines"]["tensor"].update(t={"dtype": "<f8", "b64": "!!!not base64"})),
    "deep_nesting": lambda m: b"[" * 100_000 + b"]" * 100_000,
    "deep_in_run": _run(lambda d: d.update(notes=[json.loads("[" * 200 + "]" * 200)])),
    "pickle_marker": lambda m: pickle.dumps(Marker(m)),
    "pickle_os_system": lambda m: pickle.dumps(SystemCall(m)),
    "real_snapshot_pickle": lambda m: (
        REPO / "tests" / "data" / "real_snapshot_small_cnn.pickle"
    ).read_bytes(),
}


# --- the window ------------------------------------------------------------------------------------------


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MainWindow]:
    modals: list[str] = []

    def record(name: str) -> Callable[..., Any]:
        def f(*a: Any, **k: Any) -> Any:
            modals.append(f"{name}: {a[2] if len(a) > 2 else a}")
            return QMessageBox.StandardButton.Ok

        return f

    for name in ("critical", "warning", "information", "question", "about"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(record(name)))

    def exec_(self: QMessageBox) -> int:
        modals.append(f"exec: {self.text()}")
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    w = MainWindow(AppSettings.at(str(tmp_path / "settings.ini")), discover=False)
    qtbot.addWidget(w, before_close_func=lambda win: win.shutdown())
    w.show()
    qtbot.waitExposed(w)
    w.modals = modals  # type: ignore[attr-defined]
    yield w
    w.shutdown()


def _state(w: MainWindow) -> tuple[Any, ...]:
    runs = w.runs_panel.runs()
    return (
        w.doc.spec,
        w.head_model.rowCount(),
        w.undo_stack.count(),
        w.undo_stack.index(),
        w.undo_action.text(),
        [id(r) for r in runs],
        [r.name for r in runs],
        [id(r) for r in w.plot.results],
        w.windowTitle(),
    )


def _prepare(w: MainWindow, tmp_path: Path) -> None:
    """Some state worth protecting: an edited head with undo history and one run in the list."""
    w.load_preset("gap")
    w.head_model.push_insert_type(2, "ReLU")
    good = tmp_path / "good.json"
    save_run(synthetic_run(name="good", head="gap", input_hw=32, batch=1), good)
    assert w.open_run(good) is not None
    w.flush_updates()
    w.message_bar.hide()


def _open_through_menu(w: MainWindow, action: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    action.trigger()
    w.flush_updates()


def _check_refused(w: MainWindow, before: tuple[Any, ...], path: Path, marker: Path) -> None:
    bar = w.message_bar
    assert bar.isVisible() and bar.level == "error", f"{path.name} was not refused visibly"
    assert path.name in bar.text.text(), bar.text.text()
    assert len(bar.text.text()) < 2000  # a message, not a dump of the file
    assert _state(w) == before, f"{path.name} changed the app state"
    assert w.modals == []  # type: ignore[attr-defined]
    assert not marker.exists(), "a pickle was unpickled"


@pytest.mark.parametrize("case", sorted(HEADS))
def test_hostile_head_files_are_refused(
    window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    w = window
    _prepare(w, tmp_path)
    marker = tmp_path / "PWNED"
    path = tmp_path / f"{case}.json"
    path.write_bytes(HEADS[case](marker))
    before = _state(w)
    _open_through_menu(w, w.open_head_action, path, monkeypatch)
    _check_refused(w, before, path, marker)
    # still usable: a good head opens through the same action as one undo step
    good = tmp_path / "ok.json"
    preset("fcn").save(good)
    _open_through_menu(w, w.open_head_action, good, monkeypatch)
    assert w.doc.spec == preset("fcn").__class__.load(good) and w.undo_stack.count() == before[2] + 1


@pytest.mark.parametrize("case", sorted(RUNS))
def test_hostile_run_files_are_refused(
    window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    w = window
    _prepare(w, tmp_path)
    marker = tmp_path / "PWNED"
    path = tmp_path / f"{case}.json"
    path.write_bytes(RUNS[case](marker))
    before = _state(w)
    _open_through_menu(w, w.open_run_action, path, monkeypatch)
    _check_refused(w, before, path, marker)


def test_oversized_and_odd_paths(window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 600 MiB run file (sparse: refused by size before reading), a directory, a missing file."""
    w = window
    _prepare(w, tmp_path)
    marker = tmp_path / "PWNED"
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(600 * 1024**2)
    big_head = tmp_path / "big_head.json"
    with big_head.open("wb") as f:
        f.truncate(100 * 1024**2)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    missing = tmp_path / "missing.json"
    for action, path in (
        (w.open_run_action, big),
        (w.open_head_action, big_head),
        (w.open_run_action, folder),
        (w.open_head_action, folder),
        (w.open_run_action, missing),
        (w.open_head_action, missing),
    ):
        w.message_bar.hide()
        before = _state(w)
        _open_through_menu(w, action, path, monkeypatch)
        _check_refused(w, before, path, marker)


def test_the_check_can_fail(window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A good head is not 'refused': the checks above tell refusal from success."""
    w = window
    _prepare(w, tmp_path)
    good = tmp_path / "good_head.json"
    preset("fcn").save(good)
    before = _state(w)
    _open_through_menu(w, w.open_head_action, good, monkeypatch)
    with pytest.raises(AssertionError):
        _check_refused(w, before, good, tmp_path / "PWNED")


_SPECIAL_FILE_CHILD = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
from PySide6.QtWidgets import QApplication
from vggexplorer.qt.main_window import MainWindow
from vggexplorer.qt.settings import AppSettings
app = QApplication([])
w = MainWindow(AppSettings.at(sys.argv[3]), discover=False)
ok = (w.open_head if sys.argv[1] == "head" else w.open_run)(Path(sys.argv[2]))
print("REFUSED" if not ok and w.message_bar.level == "error" else "ACCEPTED", w.message_bar.text.text())
w.shutdown()
"""


@pytest.mark.parametrize("kind", ["head", "run"])
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_special_files_are_refused_without_reading_forever(tmp_path: Path, kind: str, special: str) -> None:
    """Device files and FIFOs report size 0, so the size limit does not stop them: the loaders must not read
    them to the end (``/dev/zero`` has none: memory grows until MemoryError; a FIFO blocks the GUI thread
    for good). Run in a child under a 3 GiB address-space limit and a timeout: a failure stays contained."""
    path = special
    if special == "fifo":
        path = str(tmp_path / "pipe.json")
        os.mkfifo(path)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SPECIAL_FILE_CHILD, kind, path, str(tmp_path / "s.ini")],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"opening {special} as a {kind} hung the window for 20 s")
    assert proc.returncode == 0 and "REFUSED" in proc.stdout, (proc.stdout, proc.stderr[-2000:])


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "DISPLAY", "WAYLAND"))}
    env.pop("XDG_SESSION_TYPE", None)
    return env


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="a display is always there on Windows/macOS")
@pytest.mark.parametrize("argv", [["main.py"], ["-m", "vggexplorer"]])
def test_launch_without_a_display_explains_and_exits_nonzero(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=REPO
    )
    assert proc.returncode not in (0, -6, 134), proc  # not success, not Qt's abort (SIGABRT)
    assert proc.returncode == 2
    err = proc.stderr
    assert "cannot open a window" in err and "xvfb-run" in err and "QT_QPA_PLATFORM=offscreen" in err, err
    assert "Traceback" not in err and "qt.qpa" not in err
