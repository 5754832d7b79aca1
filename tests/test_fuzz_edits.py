"""Fuzzed edits through the GUI's own edit path: ``HeadListModel.push_*`` → ``QUndoCommand`` → document.

Hypothesis draws short sequences of edits (insert / remove / move / replace / update / duplicate / preset /
make-consistent, interleaved with undo and redo) with random layer types and parameters, absurd ones
included: huge and negative sizes, NaN, wrong types, unknown kwargs, unknown type names, indices out of range.
A shadow history mirrors ``QUndoStack``'s semantics, so after every step the test knows exactly which spec
the document must hold. After every step:

- the edit was applied and pushed as one undo step, or refused with ``HeadError`` and nothing changed
  (document, undo stack index and count); no other exception escapes;
- the Qt list model agrees with the document (row count, per-row ``LayerRole``) and a
  ``QAbstractItemModelTester`` attached to it reports no broken model contract (row signals);
- the shape report is for the current spec and is either ok or carries an issue; the spec survives a JSON
  round trip (every reachable state is a valid head file);
- no torch module was built (``build_layer``/``build_model``/``nn.Module.__init__`` counted): edits — refused
  ones above all — allocate nothing.

At the end the whole stack is undone step by step (each state == the recorded earlier one) and redone.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QMessageLogContext, QtMsgType, qInstallMessageHandler
from PySide6.QtTest import QAbstractItemModelTester
from PySide6.QtWidgets import QApplication

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model import backbone
from vggexplorer.core.model.head import PRESET_NAMES, HeadDocument, HeadSpec, LayerSpec, preset
from vggexplorer.core.model.layers import LAYER_TYPES, MAX_INT, ParamSpec
from vggexplorer.qt.head.head_model import HeadListModel, LayerRole
from vggexplorer.qt.head.undo import make_stack

# --- strategies ------------------------------------------------------------------------------------------

ABSURD: list[Any] = [
    None,
    "x",
    "",
    "same",
    -1,
    0,
    -(1 << 40),
    MAX_INT,
    MAX_INT + 1,
    1 << 40,
    10**30,
    2.5,
    -0.0,
    float("nan"),
    float("inf"),
    -float("inf"),
    True,
    [1, 2, 3],
    [],
    [1, "a"],
    [MAX_INT, MAX_INT],
    {"a": 1},
    (1, 2),
    b"\x00",
]

sizes = st.one_of(
    st.integers(-3, 5000), st.integers(-(1 << 62), 1 << 62), st.sampled_from([MAX_INT, 1 << 20])
)


def value_for(spec: ParamSpec) -> st.SearchStrategy[Any]:
    """Mostly plausible values of the right kind, often absurd or mistyped ones."""
    good: st.SearchStrategy[Any]
    if spec.kind == "bool":
        good = st.booleans()
    elif spec.kind == "int":
        good = sizes
    elif spec.kind == "float":
        good = st.floats(allow_nan=True, allow_infinity=True)
    elif spec.kind == "choice":
        good = st.sampled_from(spec.choices)
    else:
        good = st.one_of(sizes, st.tuples(st.integers(-2, 12), st.integers(-2, 12)), st.just("valid"))
    return st.one_of(good, good, st.sampled_from(ABSURD))


TYPE_NAMES = [*sorted(LAYER_TYPES), "Bogus", "", "os.system", "linear", "Sequential"]


@st.composite
def layer_recipes(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    """(type name — sometimes not a string —, constructor kwargs)."""
    name: Any = draw(st.one_of(st.sampled_from(TYPE_NAMES), st.sampled_from([None, 3, ["Linear"]])))
    params: dict[str, Any] = {}
    if isinstance(name, str) and name in LAYER_TYPES:
        for p in LAYER_TYPES[name].params:
            # optional ones half the time; required ones mostly, sometimes missing
            if (p.required or draw(st.booleans())) and draw(st.integers(0, 9)):
                params[p.name] = draw(value_for(p))
    if draw(st.integers(0, 12)) == 0:
        params[draw(st.sampled_from(["unknown_kw", "weight", "__class__", "device"]))] = draw(
            st.sampled_from(ABSURD)
        )
    return name, params


@st.composite
def update_changes(draw: st.DrawFn) -> dict[str, Any]:
    """Parameter changes for whatever layer ends up selected: names of any type, values of any kind."""
    names = sorted({p.name for t in LAYER_TYPES.values() for p in t.params})
    keys = draw(st.lists(st.sampled_from([*names, "unknown_kw"]), min_size=1, max_size=2, unique=True))
    out: dict[str, Any] = {}
    for k in keys:
        specs = [p for t in LAYER_TYPES.values() for p in t.params if p.name == k]
        out[k] = draw(value_for(specs[0]) if specs else st.sampled_from(ABSURD))
    return out


indices = st.one_of(st.integers(-2, 12), st.sampled_from([-(1 << 40), 1 << 40, True]))
#: update / duplicate pick an existing row (the GUI calls them for the selected row only; their handling of
#: rows out of range is pinned by ``test_push_update_out_of_range_row_is_refused_without_a_push`` below).
row_picks = st.integers(0, 1 << 16)

ops = st.one_of(
    st.tuples(st.just("insert"), indices, layer_recipes()),
    st.tuples(st.just("insert_type"), indices, st.sampled_from(TYPE_NAMES)),
    st.tuples(st.just("remove"), indices),
    st.tuples(st.just("move"), indices, indices),
    st.tuples(st.just("replace"), indices, layer_recipes()),
    st.tuples(st.just("replace_type"), indices, st.sampled_from(TYPE_NAMES)),
    st.tuples(st.just("update"), row_picks, update_changes()),
    st.tuples(st.just("duplicate"), row_picks),
    st.tuples(st.just("preset"), st.sampled_from(PRESET_NAMES)),
    st.tuples(st.just("fix")),
    st.tuples(st.just("context"), st.integers(1, 64), st.sampled_from([16, 32, 64, 160, 224, 384])),
    st.tuples(st.just("undo")),
    st.tuples(st.just("undo")),
    st.tuples(st.just("redo")),
)

# --- instrumentation -------------------------------------------------------------------------------------


class Counters:
    """Counts torch module construction while edits run; nothing may be built for an edit."""

    def __init__(self) -> None:
        self.build_layer = 0
        self.build_model = 0
        self.modules = 0

    def total(self) -> int:
        return self.build_layer + self.build_model + self.modules


@contextlib.contextmanager
def count_builds() -> Iterator[Counters]:
    import torch

    c = Counters()
    real_layer, real_model = backbone.build_layer, backbone.build_model
    real_init = torch.nn.Module.__init__

    def layer(*a: Any, **k: Any) -> Any:
        c.build_layer += 1
        return real_layer(*a, **k)

    def model(*a: Any, **k: Any) -> Any:
        c.build_model += 1
        return real_model(*a, **k)

    def init(self: Any, *a: Any, **k: Any) -> None:
        c.modules += 1
        real_init(self, *a, **k)

    with (
        mock.patch.object(backbone, "build_layer", layer),
        mock.patch.object(backbone, "build_model", model),
        mock.patch.object(torch.nn.Module, "__init__", init),
    ):
        yield c


@contextlib.contextmanager
def qt_messages() -> Iterator[list[str]]:
    """Collect Qt warnings (``QAbstractItemModelTester`` in Warning mode reports ``FAIL!`` lines)."""
    msgs: list[str] = []

    def handler(mode: QtMsgType, ctx: QMessageLogContext, text: str) -> None:
        msgs.append(text)

    prev = qInstallMessageHandler(handler)
    try:
        yield msgs
    finally:
        qInstallMessageHandler(prev)


# --- the state machine -----------------------------------------------------------------------------------


class Harness:
    """The GUI's edit stack on one document, plus a shadow of what QUndoStack must hold."""

    def __init__(self, start: str) -> None:
        self.doc = HeadDocument(preset(start))
        self.stack = make_stack()
        self.model = HeadListModel(self.doc, self.stack, batch=1, input_hw=(224, 224))
        self.tester = QAbstractItemModelTester(
            self.model, QAbstractItemModelTester.FailureReportingMode.Warning
        )
        self.history: list[HeadSpec] = [self.doc.spec]
        self.pos = 0
        self.refused = 0
        self.applied = 0

    def close(self) -> None:
        self.model.detach()
        del self.tester
        self.stack.clear()

    def layer(self, recipe: tuple[Any, dict[str, Any]]) -> LayerSpec:
        name, params = recipe
        return LayerSpec.make(name, None, **params)  # raises HeadError for anything absurd

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        m = self.model
        n = len(self.doc.spec)
        if kind == "undo":
            self.stack.undo()
            self.pos = max(self.pos - 1, 0)
            return
        if kind == "redo":
            self.stack.redo()
            self.pos = min(self.pos + 1, len(self.history) - 1)
            return
        if kind == "context":
            m.set_context(op[1], (op[2], op[2]))
            return
        before, count, index = self.doc.spec, self.stack.count(), self.stack.index()
        try:
            if kind == "insert":
                m.push_insert(op[1], self.layer(op[2]))
            elif kind == "insert_type":
                m.push_insert_type(op[1], op[2])
            elif kind == "remove":
                m.push_remove(op[1])
            elif kind == "move":
                m.push_move(op[1], op[2])
            elif kind == "replace":
                m.push_replace(op[1], self.layer(op[2]))
            elif kind == "replace_type":
                m.push_replace_type(op[1], op[2])
            elif kind == "update":
                if n == 0:
                    return
                m.push_update(op[1] % n, **op[2])
            elif kind == "duplicate":
                if n == 0:
                    return
                m.push_duplicate(op[1] % n)
            elif kind == "preset":
                m.push_set_head(preset(op[1], self.doc.spec.backbone), f"Load preset {op[1]}")
            elif kind == "fix":
                m.push_make_consistent()
            else:  # pragma: no cover - the strategy has no other kinds
                raise AssertionError(kind)
        except HeadError:
            self.refused += 1
            assert self.doc.spec == before, f"refused {op!r} changed the head"
            assert (self.stack.count(), self.stack.index()) == (count, index), f"refused {op!r} was pushed"
            return
        if self.stack.index() == index:  # a no-op edit (same values, same preset, nothing to fix)
            assert self.stack.count() == count and self.doc.spec == before, op
            return
        self.applied += 1
        assert self.stack.index() == index + 1, op
        self.history = [*self.history[: self.pos + 1], self.doc.spec]
        self.pos += 1

    def check(self, builds: Counters, msgs: list[str]) -> None:
        spec, m = self.doc.spec, self.model
        assert spec == self.history[self.pos], "the document is not where undo/redo should have left it"
        assert self.stack.index() == self.pos and self.stack.count() == len(self.history) - 1
        assert m.rowCount() == len(spec) == len(m.spec) and m.spec == spec
        for row in range(len(spec)):
            assert m.index(row).data(LayerRole) == spec.layers[row]
        report = m.report
        assert report.spec == spec and report.input_shape[0] == m.batch
        assert report.ok or report.issue is not None
        if report.ok:
            assert len(report.layers) == len(spec)
        else:
            assert report.issue is not None and report.issue.message
        assert HeadSpec.from_json(spec.to_json()) == spec
        for lay in spec.layers:  # every layer in the document passed validation
            assert all(not (isinstance(v, float) and not math.isfinite(v)) for _, v in lay.params)
        assert builds.total() == 0, f"an edit built torch modules: {vars(builds)}"
        fails = [x for x in msgs if "FAIL" in x]
        assert not fails, fails

    def unwind(self, builds: Counters, msgs: list[str]) -> None:
        """Undo to the start (each state the recorded one), then redo to the end."""
        end = len(self.history) - 1
        while self.stack.canUndo():
            self.stack.undo()
            self.pos -= 1
            self.check(builds, msgs)
        assert self.pos == 0 and self.doc.spec == self.history[0]
        while self.stack.canRedo():
            self.stack.redo()
            self.pos += 1
            self.check(builds, msgs)
        assert self.pos == end and self.doc.spec == self.history[end]


def run_sequence(start: str, sequence: list[tuple[Any, ...]]) -> Harness:
    h = Harness(start)
    try:
        with count_builds() as builds, qt_messages() as msgs:
            h.check(builds, msgs)
            for op in sequence:
                h.apply(op)
                h.check(builds, msgs)
            h.unwind(builds, msgs)
    finally:
        h.close()
    return h


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(start=st.sampled_from(PRESET_NAMES), sequence=st.lists(ops, max_size=12))
def test_fuzzed_edits_through_the_undo_stack(qapp: QApplication, start: str, sequence: list[Any]) -> None:
    run_sequence(start, sequence)


@pytest.mark.slow
def test_fuzzed_edits_10000_cases(qapp: QApplication) -> None:
    stats = {"examples": 0, "applied": 0, "refused": 0}

    @LONG
    @given(start=st.sampled_from(PRESET_NAMES), sequence=st.lists(ops, max_size=6))
    def body(start: str, sequence: list[Any]) -> None:
        h = run_sequence(start, sequence)
        stats["examples"] += 1
        stats["applied"] += h.applied
        stats["refused"] += h.refused

    t0 = time.perf_counter()
    body()
    elapsed = time.perf_counter() - t0
    print(f"fuzzed edits: {stats} in {elapsed:.1f} s")
    assert stats["examples"] >= 10_000
    # Both outcomes were exercised in volume (thousands each): the fuzzer neither just bounces off
    # validation nor only makes valid edits.
    assert stats["applied"] > 5_000 and stats["refused"] > 5_000


def test_the_fuzzer_can_fail(qapp: QApplication) -> None:
    """The checks bite: an undo command that does not restore the earlier state is caught."""
    from vggexplorer.qt.head import undo

    def broken_undo(self: undo.MoveLayer) -> None:
        pass  # forgets to move the layer back

    with mock.patch.object(undo.MoveLayer, "undo", broken_undo), pytest.raises(AssertionError):
        run_sequence("fc", [("move", 0, 3)])

    # and a refused edit that still pushes a step
    def push_then_refuse(self: HeadListModel, row: int) -> None:
        self.stack.push(undo.SetHead(self.doc, preset("gap"), "half-done"))
        raise HeadError("refused after pushing")

    with mock.patch.object(HeadListModel, "push_remove", push_then_refuse), pytest.raises(AssertionError):
        run_sequence("fc", [("remove", 0)])


ABSURD_LAYERS: list[tuple[str, dict[str, Any]]] = [
    ("Linear", {"in_features": MAX_INT, "out_features": MAX_INT}),  # 1 PiB of weights: refused
    ("Linear", {"in_features": 1 << 40, "out_features": 10}),
    ("Conv2d", {"in_channels": MAX_INT, "out_channels": MAX_INT, "kernel_size": 7}),
    ("Conv2d", {"in_channels": 512, "out_channels": 4096, "kernel_size": [MAX_INT, MAX_INT]}),
    ("BatchNorm2d", {"num_features": 10**30}),
    ("Linear", {"in_features": -5, "out_features": 10}),
    ("Linear", {"in_features": float("nan"), "out_features": 10}),
    ("AdaptiveAvgPool2d", {"output_size": [MAX_INT + 1, 1]}),
]
#: Accepted as data (under the per-layer weight limit) although far too large to ever build here.
HUGE_BUT_VALID: list[tuple[str, dict[str, Any]]] = [
    ("Linear", {"in_features": 100_000, "out_features": 100_000}),  # 40 GB of float32 weights
    ("Conv2d", {"in_channels": 4096, "out_channels": 65536, "kernel_size": 7}),  # 52 GB
]


def test_absurd_sizes_allocate_nothing(qapp: QApplication) -> None:
    """Refused (and accepted-but-huge) layers pushed through the GUI path leave RSS flat: nothing is built."""
    h = Harness("fc")
    proc = psutil.Process()
    try:
        with count_builds() as builds, qt_messages() as msgs:
            for _ in range(5):  # warm-up: caches, interned strings, Qt model internals
                for name, params in ABSURD_LAYERS + HUGE_BUT_VALID:
                    with contextlib.suppress(HeadError):
                        h.apply(("insert", 1, (name, params)))
                while h.stack.canUndo():
                    h.apply(("undo",))
            gc.collect()
            rss0 = proc.memory_info().rss
            refused = 0
            for _ in range(200):
                for name, params in ABSURD_LAYERS:
                    before = h.refused
                    h.apply(("insert", 1, (name, params)))
                    h.apply(("update", 2, {"out_features": params.get("in_features", 10)}))
                    refused += h.refused > before
                for name, params in HUGE_BUT_VALID:
                    h.apply(("insert", 1, (name, params)))
                    h.apply(("undo",))
                h.check(builds, msgs)
            gc.collect()
            grown = proc.memory_info().rss - rss0
    finally:
        h.close()
    assert refused == 200 * len(ABSURD_LAYERS)
    assert builds.total() == 0
    # A single refused 7×7 conv of that size would need terabytes; 32 MiB allows for allocator noise only.
    assert grown < 32 * 1024**2, f"RSS grew by {grown / 1024**2:.1f} MiB across absurd edits"


def test_push_update_out_of_range_row_is_refused_without_a_push(qapp: QApplication) -> None:
    """``undo.py`` promises a refused edit is never pushed. ``push_update(-1, …)`` indexes ``layers[-1]``
    (the last layer), validates against it, and pushes a command whose ``redo`` then raises: the stack holds a
    step that can be neither done nor undone. A row past the end raises IndexError, not HeadError."""
    h = Harness("fc")
    try:
        for row in (-1, len(h.doc.spec)):
            with pytest.raises(HeadError):
                h.model.push_update(row, out_features=10)
            assert h.stack.count() == 0 and h.doc.spec == preset("fc")
    finally:
        h.close()
