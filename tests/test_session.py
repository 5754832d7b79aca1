"""The session model without Qt: each mutator emits one event (none when nothing changes), the selection
follows added and removed runs, and the one mapping from GUI settings (and CLI args) to RunConfig."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from vggexplorer.core.model.config import RunConfig, device_dtype_problem
from vggexplorer.core.model.head import preset
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.results.synthetic import synthetic_run
from vggexplorer.core.session import Event, RunsChange, Selection, SessionModel
from vggexplorer.core.session.settings import RunSettings, blocked_reason, run_config, settings_label


class Recorder:
    """Every event of a session, in order, as (event name, payload)."""

    def __init__(self, session: SessionModel) -> None:
        self.seen: list[tuple[str, Any]] = []
        ev = session.events
        for name, event in (
            ("runs", ev.runs),
            ("selection", ev.selection),
            ("settings", ev.settings),
            ("prediction", ev.prediction),
        ):
            event.connect(lambda value, n=name: self.seen.append((n, value)))

    def take(self) -> list[tuple[str, Any]]:
        out, self.seen = self.seen, []
        return out


def run(name: str = "") -> RunResult:
    return synthetic_run(name=name, head="fc", input_hw=64, batch=1)


def test_event_connect_disconnect_emit_order() -> None:
    ev: Event[int] = Event("x")
    got: list[tuple[str, int]] = []

    def a(v: int) -> None:
        got.append(("a", v))
        if b in ev:
            ev.disconnect(b)  # during an emit: b still gets this one, not the next

    def b(v: int) -> None:
        got.append(("b", v))

    assert ev.connect(a) is a
    ev.connect(b)
    ev.connect(a)  # once only
    assert len(ev) == 2 and a in ev
    ev.emit(1)
    ev.emit(2)
    assert got == [("a", 1), ("b", 1), ("a", 2)]
    ev.disconnect(a)
    ev.emit(3)
    assert got[-1] == ("a", 2) and len(ev) == 0
    with pytest.raises(ValueError):
        ev.disconnect(a)


def test_add_run_ticks_and_makes_current_in_one_event() -> None:
    s = SessionModel()
    rec = Recorder(s)
    r1, r2 = run("A"), run()
    i1 = s.add_run(r1)
    i2 = s.add_run(r2, ticked=False, current=False)
    assert r2.name == "run 2"  # unnamed runs get a name
    assert rec.take() == [
        ("runs", RunsChange("added", i1, 0, Selection((i1,), i1))),
        ("runs", RunsChange("added", i2, 1, Selection((i1,), i1))),
    ]
    assert s.runs() == [r1, r2] and s.run(i2) is r2 and s.id_of(r2) == i2 and s.id_of(run()) is None
    assert s.ticked() == [r1] and s.current() is r1


def test_selection_changes_emit_once_and_only_when_changed() -> None:
    s = SessionModel()
    ids = [s.add_run(run(n), ticked=False, current=False) for n in "ABC"]
    rec = Recorder(s)
    s.set_selection([ids[2], ids[0]], current=ids[1])
    assert rec.take() == [("selection", Selection((ids[0], ids[2]), ids[1]))]  # ticked in list order
    assert [r.name for r in s.ticked()] == ["A", "C"]
    s.set_ticked(ids[0], True)  # already ticked
    s.set_current(ids[1])  # already current
    assert rec.take() == []
    s.set_ticked(ids[0], False)
    s.set_current(None)
    assert rec.take() == [
        ("selection", Selection((ids[2],), ids[1])),
        ("selection", Selection((ids[2],), None)),
    ]
    with pytest.raises(KeyError):
        s.set_current(999)
    with pytest.raises(KeyError):
        s.set_selection([999])
    assert s.selection == Selection((ids[2],), None) and rec.take() == []


def test_remove_run_moves_current_to_the_row_below_else_above() -> None:
    s = SessionModel()
    a, b, c = (s.add_run(run(n)) for n in "ABC")
    s.set_current(b)
    rec = Recorder(s)
    s.remove_run(b)
    assert rec.take() == [("runs", RunsChange("removed", b, 1, Selection((a, c), c)))]
    s.remove_run(c)  # the last row: the one above becomes current
    assert s.selection == Selection((a,), a)
    s.remove_run(a)
    assert s.selection == Selection((), None) and s.runs() == []
    with pytest.raises(ValueError):
        s.remove_run(a)
    assert len(rec.take()) == 2


def test_rename_and_unique_names() -> None:
    s = SessionModel()
    a = s.add_run(run("fc · b1"))
    rec = Recorder(s)
    assert not s.rename_run(a, "   ") and not s.rename_run(a, " fc · b1 ")
    assert rec.take() == []
    assert s.rename_run(a, "  mine ")
    assert s.run(a).name == "mine"
    assert rec.take() == [("runs", RunsChange("renamed", a, 0, Selection((a,), a)))]
    assert s.unique_name("fresh") == "fresh"
    assert s.unique_name("mine") == "mine #2"
    s.add_run(run("mine #2"))
    assert s.unique_name("mine") == "mine #3"


def test_settings_and_prediction_events() -> None:
    s = SessionModel()
    rec = Recorder(s)
    s.set_settings(RunSettings())  # the default it starts with: no change
    new = RunSettings(batch=4, dtype="bfloat16")
    s.set_settings(new)
    s.set_settings(RunSettings(batch=4, dtype="bfloat16"))  # equal
    answer = object()
    s.set_prediction(answer)
    s.set_prediction(answer)
    s.set_prediction(None)
    assert rec.take() == [("settings", new), ("prediction", answer), ("prediction", None)]
    assert s.settings is new and s.prediction is None


def test_run_config_is_the_one_mapping_from_gui_settings() -> None:
    head = preset("gap")
    st = RunSettings(
        preset="gap",
        backbone="vgg11",
        device="cuda:0",
        batch=4,
        input_hw=(96, 128),
        dtype="bfloat16",
        mode="train",
        optimizer="adamw",
        iterations=2,
    )
    cfg = run_config(st, head)
    assert cfg == RunConfig(
        head=head,
        device="cuda:0",
        batch=4,
        input_hw=(96, 128),
        dtype="bfloat16",
        mode="train",
        optimizer="adamw",
        iterations=2,
    )
    assert run_config(st, head, device="cpu").device == "cpu"
    # what crosses to the child process reads back as the same config
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert settings_label(st, "gap") == "gap · b4 · 96×128 · cuda:0 · train · bfloat16"


def test_float16_on_the_cpu_has_one_rule() -> None:
    assert device_dtype_problem("cpu", "float16") is not None
    for device, dtype in (
        ("cuda", "float16"),
        ("cuda:1", "float16"),
        ("cpu", "bfloat16"),
        ("auto", "float16"),
    ):
        assert device_dtype_problem(device, dtype) is None
    st = RunSettings(device="cpu", dtype="float16")
    assert blocked_reason(st) == device_dtype_problem("cpu", "float16")
    assert "bfloat16" in blocked_reason(st)
    assert blocked_reason(st, "head does not fit") == "head does not fit"  # the head's issue first
    assert blocked_reason(RunSettings(device="cuda:0", dtype="float16")) == ""


def _parse(argv: list[str]) -> argparse.Namespace:
    from vggexplorer.cli import build_parser

    return build_parser().parse_args(argv)


def test_cli_args_map_to_run_config_in_one_place() -> None:
    from vggexplorer.commands.common import run_config_from_args

    head = preset("fcn")
    argv = "run --head fcn --device cpu --batch 3 --input 96x64 --dtype bfloat16 --mode train-step"
    argv += " --optimizer adam --iterations 2 --warmup 1 --zero-grad after-step --channels-last --seed 5"
    args = _parse([*argv.split(), "--out", "x"])
    cfg = run_config_from_args(args, head)
    assert (cfg.device, cfg.batch, cfg.input_hw, cfg.dtype, cfg.mode, cfg.optimizer) == (
        "cpu",
        3,
        (96, 64),
        "bfloat16",
        "train-step",
        "adam",
    )
    assert (cfg.iterations, cfg.warmup, cfg.zero_grad, cfg.channels_last, cfg.seed) == (
        2,
        1,
        "after-step",
        True,
        5,
    )
    assert cfg.allocator_level and cfg.sample_hz > 0 and not cfg.cudnn_benchmark
    p = _parse(["predict", "--head", "fcn", "--batch", "2", "--mode", "eval", "--gpu", "h100"])
    pc = run_config_from_args(p, head, device="cpu", allocator_level=False, sample_hz=0.0)
    assert pc == RunConfig(
        head=head, device="cpu", batch=2, mode="eval", allocator_level=False, sample_hz=0.0
    )


def test_head_labels_name_presets_edits_and_custom_heads() -> None:
    from dataclasses import replace

    from vggexplorer.core.session.settings import head_label, preset_of

    fc = preset("fc")
    assert preset_of(fc) == "fc" and head_label(fc) == "fc"
    edited = replace(fc, layers=fc.layers[:-1])
    assert preset_of(edited) is None and head_label(edited) == "fc (edited)"
    assert head_label(replace(edited, name="")) == "custom"
    assert preset_of(replace(fc, name="not-a-preset")) is None
