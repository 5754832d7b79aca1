"""The fake trace equals the engine's measured CPU timeline (truth) and maps to CUDA by explicit rules."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from vggexplorer.core.model.config import OPTIMIZERS, RunConfig
from vggexplorer.core.model.head import PRESET_NAMES, preset
from vggexplorer.core.predict.faketrace import FakeTrace, Row, map_to_cuda, module_geometry, trace
from vggexplorer.core.results.result import CATEGORIES, PHASES, RunResult
from vggexplorer.core.run.engine import run

# Smallest inputs each preset accepts (fcn needs a 7×7 map after features: 224).
INPUT = {"fc": (64, 64), "fcn-pooled": (64, 64), "gap": (64, 64), "fcn": (224, 224)}
MODES = ("eval", "train", "train-step")


def _cfg(name: str, mode: str, **kw: object) -> RunConfig:
    base = RunConfig(
        head=preset(name),
        device="cpu",
        batch=1,
        input_hw=INPUT[name],
        mode=mode,
        optimizer="adam",
        allocator_level=False,
        sample_hz=0.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _rows_of_result(r: RunResult) -> list[tuple[object, ...]]:
    tl = r.tensor
    assert tl.storage is not None
    return [
        (
            int(tl.delta[k]),
            int(tl.storage[k]),
            PHASES[tl.phase[k]],
            r.string(int(tl.op[k])),
            r.string(int(tl.module[k])),
            int(tl.iteration[k]),
            CATEGORIES[tl.category[k]],
        )
        for k in range(len(tl))
    ]


def _rows_of_trace(ft: FakeTrace) -> list[tuple[object, ...]]:
    return [
        (
            r.delta,
            r.sid,
            PHASES[r.phase],
            ft.string(r.op),
            ft.string(r.module),
            r.iteration,
            CATEGORIES[r.category],
        )
        for r in ft.rows
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_fake_trace_equals_measured_cpu_timeline(name: str, mode: str) -> None:
    """Issue item 6: event for event, byte for byte, with op, module, phase, iteration and category."""
    cfg = _cfg(name, mode)
    measured = run(cfg)
    assert measured.status == "ok"
    t = time.perf_counter()
    ft = trace(cfg, "cpu")
    print(f"{name} {mode}: fake trace {1000 * (time.perf_counter() - t):.0f} ms, {len(ft.rows)} events")
    want, got = _rows_of_result(measured), _rows_of_trace(ft)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"event {k}: predicted {g} != measured {w}"
    assert ft.peak_bytes == measured.summary.peak_tensor_bytes
    assert ft.timeline().peak == measured.tensor.peak


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_truth_other_optimizers(optimizer: str) -> None:
    cfg = _cfg("fc", "train-step", optimizer=optimizer, iterations=2)
    assert _rows_of_trace(trace(cfg, "cpu")) == _rows_of_result(run(cfg))


def _sort_free_bursts(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Sort each run of consecutive frees (allocations keep their order)."""
    out: list[tuple[object, ...]] = []
    burst: list[tuple[object, ...]] = []
    for r in rows:
        if int(r[0]) < 0:  # type: ignore[call-overload]
            burst.append(r)
            continue
        out.extend(sorted(burst, key=repr))
        burst = []
        out.append(r)
    out.extend(sorted(burst, key=repr))
    return out


def test_truth_bfloat16_autocast() -> None:
    """Under autocast the cached weight casts are freed together when autocast exits, in the order of a hash
    map keyed by tensor address: the same frees at the same place, in an address-dependent order. Allocations
    and every burst's content must match; no allocation falls inside a burst, so the allocator's state after
    it (coalescing is order-independent) and every peak are the same."""
    cfg = _cfg("fcn-pooled", "train", dtype="bfloat16")
    got, want = _rows_of_trace(trace(cfg, "cpu")), _rows_of_result(run(cfg))
    assert _sort_free_bursts(got) == _sort_free_bursts(want)
    assert [r for r in got if int(r[0]) > 0] == [r for r in want if int(r[0]) > 0]  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------- CUDA map


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def test_dropout_mask_becomes_bool() -> None:
    cfg = _cfg("fc", "train", batch=3)
    cpu, cuda = trace(cfg, "cpu"), trace(cfg, "cuda")
    geom = module_geometry(cfg)
    for mod in ("classifier.2", "classifier.5"):
        numel = _numel(geom[mod].output_shape)
        cpu_fwd = [r for r in cpu.rows if cpu.string(r.module) == mod and PHASES[r.phase] == "forward"]
        cuda_fwd = [r for r in cuda.rows if cuda.string(r.module) == mod and PHASES[r.phase] == "forward"]
        # CPU: a float mask (empty_like) then the output (mul), both 4 bytes/element
        assert [(cpu.string(r.op).split(".")[0], r.delta) for r in cpu_fwd] == [
            ("empty_like", 4 * numel),
            ("mul", 4 * numel),
        ]
        # CUDA: native_dropout's bool mask (1 byte/element) and the output
        assert [(cuda.string(r.op).split(".")[0], r.delta) for r in cuda_fwd] == [
            ("native_dropout", numel),
            ("native_dropout", 4 * numel),
        ]
        mask_sid = cuda_fwd[0].sid
        frees = [r for r in cuda.rows if r.sid == mask_sid and r.delta < 0]
        assert [r.delta for r in frees] == [-numel]
        assert PHASES[frees[0].phase] == "backward"  # saved for backward, freed there
    assert cuda.rules["dropout-bool-mask"] == 2
    assert sum(r.delta for r in cuda.rows) == sum(r.delta for r in cpu.rows)  # frees balance allocations


def test_maxpool_saves_int64_indices() -> None:
    cfg = _cfg("gap", "train", batch=2)
    cuda = trace(cfg, "cuda")
    geom = module_geometry(cfg)
    for mod, g in geom.items():
        if g.type != "MaxPool2d":
            continue
        rows = [
            r
            for r in cuda.rows
            if cuda.string(r.module) == mod and PHASES[r.phase] == "forward" and r.delta > 0
        ]
        assert [cuda.string(r.op).split(".")[0] for r in rows] == ["max_pool2d_with_indices"] * 2
        assert [r.delta for r in rows] == [4 * g.output_numel, 8 * g.output_numel]


def test_maxpool_fast_path_gets_transient_indices() -> None:
    """A CPU trace that took max_pool2d without indices gets CUDA's int64 indices, allocated and dropped."""
    cfg = _cfg("gap", "eval", batch=2)
    ft = trace(cfg, "cpu")
    op = ft.intern("max_pool2d.default")
    mod = ft.intern("features.2")
    numel = module_geometry(cfg)["features.2"].output_numel
    ft.rows = [
        Row(0.0, 4 * numel, 0, PHASES.index("forward"), op, mod, 0, CATEGORIES.index("activations")),
        Row(0.0, -4 * numel, 0, PHASES.index("forward"), op, mod, 0, CATEGORIES.index("activations")),
    ]
    mapped = map_to_cuda(ft)
    assert [r.delta for r in mapped.rows] == [4 * numel, 8 * numel, -8 * numel, -4 * numel]
    assert mapped.rules["maxpool-indices"] == 1


def test_optimizer_is_traced_foreach_and_adam_steps_stay_on_host() -> None:
    cfg = _cfg("gap", "train-step", batch=2)
    cpu, cuda = trace(cfg, "cpu"), trace(cfg, "cuda")
    cpu_ops = {cpu.string(r.op).split(".")[0] for r in cpu.rows if PHASES[r.phase] == "optimizer"}
    cuda_ops = {cuda.string(r.op).split(".")[0] for r in cuda.rows if PHASES[r.phase] == "optimizer"}
    assert "_foreach_sqrt" in cuda_ops and "_foreach_sqrt" not in cpu_ops
    n_params = 2 * 8 + 2  # 8 convs (w, b) in vgg11 + the Linear (w, b) of gap
    assert cuda.rules["optimizer-host-scalars"] == n_params + 1  # steps + the foreach increment tensor(1.0)
    host = [r for r in cuda.rows if PHASES[r.phase] == "optimizer" and 0 < r.delta <= 8]
    assert host == []
    # foreach: one sqrt temporary per parameter alive at once → more than the per-parameter loop's two
    params = sum(r.delta for r in cuda.rows if CATEGORIES[r.category] == "parameters" and r.delta > 0)
    opt_peak = 0
    total = 0
    for r in cuda.rows:
        total += r.delta
        if PHASES[r.phase] == "optimizer":
            opt_peak = max(opt_peak, total)
    assert opt_peak >= 5 * params  # params + grads + exp_avg + exp_avg_sq + sqrt temporaries


def test_bf16_batchnorm_stats_are_fp32_on_cuda() -> None:
    cfg = _cfg("gap", "train", batch=2, dtype="bfloat16", head=preset("gap", "vgg11_bn"))
    cuda = trace(cfg, "cuda")
    assert cuda.rules.get("bn-stats-fp32", 0) == 2 * 8  # 8 BatchNorm layers, mean and invstd each


def test_geometry_matches_shapes() -> None:
    g = module_geometry(_cfg("fcn", "eval", batch=2, input_hw=(384, 384)))
    assert g["features.0"].input_shape == (2, 3, 384, 384)
    assert g["features.20"].output_shape == (2, 512, 12, 12)
    assert g["classifier.0"].output_shape == (2, 4096, 6, 6)
    assert g["classifier.0"].kernel == (7, 7)


def test_float16_traces_with_cpu_autocast() -> None:
    ft = trace(_cfg("fcn-pooled", "train", dtype="float16", batch=2), "cuda")
    assert ft.status == "ok"
    conv = [r for r in ft.rows if ft.string(r.module) == "features.0" and PHASES[r.phase] == "forward"]
    assert conv[-1].delta == 2 * 64 * 64 * 64 * 2  # fp16 output: 2 bytes per element


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_meta_shortcuts_do_not_change_the_trace(name: str) -> None:
    """``metafast`` skips Python meta kernels; the traced rows must be exactly those of the real kernels,
    for every mode and optimizer, both flavours, two iterations, with and without BatchNorm."""
    from unittest import mock

    from vggexplorer.core.model.head import load_head
    from vggexplorer.core.run import metafast

    def rows(ft: FakeTrace) -> list[tuple[object, ...]]:
        return [
            (r.delta, r.sid, r.phase, ft.string(r.op), r.module, r.iteration, r.category) for r in ft.rows
        ]

    calls = {"handled": 0}
    real = metafast.shortcut

    def counting(func: object, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[bool, object]:
        handled, out = real(func, args, kwargs)
        calls["handled"] += handled
        return handled, out

    for backbone in ("vgg11", "vgg11_bn"):
        spec = load_head(name, backbone)
        for mode, optimizer in (("eval", "sgd"), ("train", "sgd"), *(("train-step", o) for o in OPTIMIZERS)):
            cfg = RunConfig(
                head=spec,
                device="cpu",
                batch=3,
                input_hw=(224, 224),
                mode=mode,
                optimizer=optimizer,
                iterations=2,
                allocator_level=False,
                sample_hz=0.0,
            )
            for flavour in ("cpu", "cuda"):
                with mock.patch.object(metafast, "shortcut", counting):
                    fast = trace(cfg, flavour)
                with mock.patch.object(metafast, "shortcut", lambda f, a, k: (False, None)):
                    slow = trace(cfg, flavour)
                assert fast.status == slow.status == "ok"
                assert rows(fast) == rows(slow), (backbone, mode, optimizer, flavour)
    assert calls["handled"] > 0  # the shortcuts were taken
