"""Property: any sequence of edits gives a valid model or a validation error — never anything else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model.head import HeadSpec, LayerSpec, preset
from vggexplorer.core.model.layers import LAYER_TYPES, ParamSpec
from vggexplorer.core.model.shapes import infer_shapes

sizes = st.one_of(st.integers(-3, 5000), st.just(1 << 30))


def value_for(spec: ParamSpec) -> st.SearchStrategy[Any]:
    good: st.SearchStrategy[Any]
    if spec.kind == "bool":
        good = st.booleans()
    elif spec.kind == "int":
        good = sizes
    elif spec.kind == "float":
        good = st.floats(-2, 2, allow_nan=False)
    elif spec.kind == "choice":
        good = st.sampled_from(spec.choices)
    else:
        good = st.one_of(sizes, st.tuples(st.integers(0, 9), st.integers(0, 9)), st.just("same"))
    # Absurd and mistyped values too.
    return st.one_of(good, st.sampled_from([None, "x", -1, 2.5, [1, 2, 3], float("inf")]))


@st.composite
def layer_dicts(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from([*sorted(LAYER_TYPES), "Bogus"]))
    d: dict[str, Any] = {"type": name}
    if name in LAYER_TYPES:
        for p in LAYER_TYPES[name].params:
            if draw(st.booleans()):
                d[p.name] = draw(value_for(p))
    if draw(st.integers(0, 20)) == 0:
        d["unknown_kw"] = 1
    return d


edits = st.tuples(
    st.sampled_from(["insert", "remove", "move", "replace", "update"]),
    st.integers(-2, 12),
    st.integers(-2, 12),
    layer_dicts(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(["fc", "fcn", "fcn-pooled", "gap"]),
    ops=st.lists(edits, max_size=8),
    size=st.sampled_from([32, 64, 160, 224, 384]),
)
def test_random_edits_give_valid_model_or_validation_error(
    start: str, ops: list[tuple[str, int, int, dict[str, Any]]], size: int
) -> None:
    spec = preset(start)
    for kind, i, j, d in ops:
        before = spec
        try:
            if kind == "insert":
                spec = spec.insert(i, LayerSpec.from_dict(d))
            elif kind == "remove":
                spec = spec.remove(i)
            elif kind == "move":
                spec = spec.move(i, j)
            elif kind == "replace":
                spec = spec.replace(i, LayerSpec.from_dict(d))
            else:
                params = {k: v for k, v in d.items() if k != "type"}
                spec = spec.update(i, **params)
        except HeadError:
            assert spec == before  # a refused edit changes nothing
        report = infer_shapes(spec, 2, (size, size))
        assert report.ok or report.issue is not None
        assert HeadSpec.from_json(spec.to_json()) == spec
