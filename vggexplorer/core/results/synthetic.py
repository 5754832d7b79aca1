"""Synthetic runs: plain RunResults with known numbers, built from arithmetic (no torch), for tests,
benchmarks and demos."""

from __future__ import annotations

import numpy as np

from vggexplorer.core.base.units import MiB
from vggexplorer.core.results.analysis import step_at
from vggexplorer.core.results.meta import RunEnvironment, RunMeta
from vggexplorer.core.results.result import CATEGORIES, RunResult, Timeline


def synthetic_run(
    *,
    name: str = "",
    head: str = "fc",
    input_hw: int = 224,
    batch: int = 2,
    cuda: bool = False,
    predicted: bool = False,
    extra_events: int = 0,
    workspace_bytes: int = 0,
    head_param_bytes: int = 411_041_792,
    optimizer: bool = True,
    seed: int = 0,
) -> RunResult:
    """A one-iteration training step of a VGG-like net, built from arithmetic, not measured.

    Activations scale with ``batch × input_hw²``; the head's conv (``classifier.0``) holds
    ``head_param_bytes`` of parameters; ``workspace_bytes`` of kernel buffer (allocator level only, no
    tensor) is live during the head's forward. ``extra_events`` adds that many small temporary
    allocations/frees spread over the layers (for big-timeline tests and benchmarks).
    """
    from vggexplorer.core.results.result import PHASES, DeviceSamples, LayerStats, Span, Summary

    rng = np.random.default_rng(seed)
    cat = {c: i for i, c in enumerate(CATEGORIES)}
    ph = {p: i for i, p in enumerate(PHASES)}
    pix = batch * input_hw * input_hw
    feats = [
        ("features.0", "Conv2d", 64 * pix * 4, 7_168),
        ("features.2", "MaxPool2d", 16 * pix * 4, 0),
        ("features.3", "Conv2d", 32 * pix * 4, 295_424),
        ("features.5", "MaxPool2d", 8 * pix * 4, 0),
        ("features.6", "Conv2d", 16 * pix * 4, 4_719_616),
    ]
    score = max(input_hw // 32 - 6, 1)
    heads = [
        (
            "classifier.0",
            "Conv2d" if head != "fc" else "Linear",
            batch * 4096 * score * score * 4,
            head_param_bytes,
        ),
        ("classifier.1", "ReLU", 0, 0),
        (
            "classifier.2",
            "Conv2d" if head != "fc" else "Linear",
            batch * 1000 * score * score * 4,
            16_388_000,
        ),
    ]
    layers_def = [(n, ty, o, p, -1) for n, ty, o, p in feats] + [
        (n, ty, o, p, i) for i, (n, ty, o, p) in enumerate(heads)
    ]
    strings: list[str] = [n for n, *_ in layers_def]
    mod_idx = {n: i for i, n in enumerate(strings)}
    rows: list[tuple[float, int, int, int, int]] = []  # t, delta, phase, category, module
    ws_rows: list[tuple[float, int, int, int]] = []  # allocator-only: t, delta, phase, module
    spans: list[Span] = []
    t = 0.0
    for n, _ty, _o, p, _h in layers_def:
        if p:
            rows.append((t, p, ph["setup"], cat["parameters"], mod_idx[n]))
            t += 0.001
    inp = batch * 3 * input_hw * input_hw * 4
    rows.append((t, inp, ph["setup"], cat["inputs"], -1))
    t += 0.002
    layer_t: dict[str, tuple[float, float, float, float]] = {}
    f0 = t
    for n, _ty, o, _p, _h in layers_def:
        a = t
        if o:
            rows.append((t + 0.001, o, ph["forward"], cat["activations"], mod_idx[n]))
            rows.append((t + 0.002, o // 4, ph["forward"], cat["temporaries"], mod_idx[n]))
            rows.append((t + 0.004, -(o // 4), ph["forward"], cat["temporaries"], mod_idx[n]))
        if n == "classifier.0" and workspace_bytes:
            ws_rows.append((t + 0.0015, workspace_bytes, ph["forward"], mod_idx[n]))
            ws_rows.append((t + 0.0045, -workspace_bytes, ph["forward"], mod_idx[n]))
        t += 0.005
        spans.append(Span(n, "forward", a, t, 0))
        layer_t[n] = (a, t, 0.0, 0.0)
    spans.append(Span("", "forward", f0, t, 0))
    rows.append((t, 4 * batch, ph["loss"], cat["outputs"], -1))
    t += 0.002
    b0 = t
    for n, _ty, o, p, _h in reversed(layers_def):
        a = t
        if p:
            rows.append((t + 0.001, p, ph["backward"], cat["gradients"], mod_idx[n]))
        if o:
            rows.append((t + 0.002, o // 2, ph["backward"], cat["temporaries"], mod_idx[n]))
            rows.append((t + 0.003, -(o // 2), ph["backward"], cat["temporaries"], mod_idx[n]))
            rows.append((t + 0.004, -o, ph["backward"], cat["activations"], mod_idx[n]))
        t += 0.005
        spans.append(Span(n, "backward", a, t, 0))
        fa, fb, _, _ = layer_t[n]
        layer_t[n] = (fa, fb, a, t)
    spans.append(Span("", "backward", b0, t, 0))
    o0 = t
    for n, _ty, _o, p, _h in layers_def if optimizer else ():
        if p:
            rows.append((t, 2 * p, ph["optimizer"], cat["optimizer_state"], mod_idx[n]))
            t += 0.001
    if optimizer:
        spans.append(Span("", "optimizer", o0, t, 0))
    t_end = t
    arr = np.array(rows, dtype=np.float64)
    tt, dd = arr[:, 0], arr[:, 1].astype(np.int64)
    pp, cc, mm = arr[:, 2].astype(np.int8), arr[:, 3].astype(np.int8), arr[:, 4].astype(np.int32)
    if extra_events > 0:
        k = extra_events // 2
        # temporaries inside the layers' forward/backward spans, freed 0.1 ms later
        lay_spans = [s for s in spans if s.module]
        which = rng.integers(0, len(lay_spans), k)
        s0 = np.array([lay_spans[i].t0 for i in which])
        s1 = np.array([lay_spans[i].t1 for i in which])
        ta = s0 + rng.random(k) * (s1 - s0) * 0.9
        size = rng.integers(1, 64, k).astype(np.int64) * 4096
        phase = np.array([ph[lay_spans[i].phase] for i in which], dtype=np.int8)
        mods = np.array([mod_idx[lay_spans[i].module] for i in which], dtype=np.int32)
        tt = np.concatenate([tt, ta, ta + 1e-4])
        dd = np.concatenate([dd, size, -size])
        pp = np.concatenate([pp, phase, phase])
        cc = np.concatenate([cc, np.full(2 * k, cat["temporaries"], np.int8)])
        mm = np.concatenate([mm, mods, mods])
    order = np.argsort(tt, kind="stable")
    tensor = Timeline(
        t=tt[order],
        delta=dd[order],
        total=np.cumsum(dd[order]),
        phase=pp[order],
        category=cc[order],
        op=np.full(len(order), -1, np.int32),
        module=mm[order],
        iteration=np.zeros(len(order), np.int32),
    )
    # allocator timeline: every tensor row (rounded to 512 B on CUDA) plus the workspace rows
    at = np.concatenate([tensor.t, np.array([r[0] for r in ws_rows])])
    ad = tensor.delta
    if cuda:
        ad = np.sign(ad) * ((np.abs(ad) + 511) // 512 * 512)
    ad = np.concatenate([ad, np.array([r[1] for r in ws_rows], dtype=np.int64)])
    ap = np.concatenate([tensor.phase, np.array([r[2] for r in ws_rows], dtype=np.int8)])
    am = np.concatenate([tensor.module, np.array([r[3] for r in ws_rows], dtype=np.int32)])
    ac = np.concatenate([tensor.category, np.full(len(ws_rows), cat["untracked_workspace"], np.int8)])
    order = np.argsort(at, kind="stable")
    atotal = np.cumsum(ad[order])
    reserved = active = None
    if cuda:
        seg = 2 * MiB
        reserved = (np.maximum.accumulate(atotal) + seg - 1) // seg * seg
        active = atotal.copy()
    allocator = Timeline(
        t=at[order],
        delta=ad[order],
        total=atotal,
        phase=ap[order],
        category=ac[order],
        op=np.full(len(order), -1, np.int32),
        module=am[order],
        iteration=np.zeros(len(order), np.int32),
        reserved=reserved,
        active=active,
    )
    st = np.arange(0.0, t_end + 0.001, 0.001)
    base_level = step_at(allocator.t, reserved if reserved is not None else atotal, st)
    if cuda:
        process = base_level + 500 * MiB
        device = DeviceSamples(
            t=st,
            process=process,
            device_used=process + 700 * MiB,
            source="NVML process used memory, GPU-synthetic",
            achieved_hz=1000.0,
        )
    else:
        device = DeviceSamples(
            t=st, process=base_level + 350 * MiB, source="RSS (/proc/self/statm)", achieved_hz=1000.0
        )
    layers = []
    for n, ty, o, p, h in layers_def:
        fa, fb, ba, bb = layer_t[n]
        fi = (tensor.t >= fa) & (tensor.t < fb)
        bi = (tensor.t >= ba) & (tensor.t < bb)
        afi = (allocator.t >= fa) & (allocator.t < fb)
        abi = (allocator.t >= ba) & (allocator.t < bb)
        shape = (batch, 4096, score, score) if n == "classifier.0" else (batch,)
        layers.append(
            LayerStats(
                name=n,
                type=ty,
                head_index=h,
                output_shape=shape,
                output_bytes=o,
                saved_bytes=o,
                param_bytes=p,
                grad_bytes=p,
                peak_forward_bytes=int(tensor.total[fi].max()) if fi.any() else 0,
                peak_backward_bytes=int(tensor.total[bi].max()) if bi.any() else 0,
                peak_forward_allocator_bytes=int(allocator.total[afi].max()) if afi.any() else 0,
                peak_backward_allocator_bytes=int(allocator.total[abi].max()) if abi.any() else 0,
                forward_s=fb - fa,
                backward_s=bb - ba,
            )
        )
    pi = allocator.peak_index
    mod = int(allocator.module[pi])
    summary = Summary(
        peak_allocated_bytes=allocator.peak,
        peak_tensor_bytes=tensor.peak,
        peak_reserved_bytes=int(reserved.max()) if reserved is not None else None,
        peak_device_bytes=int(device.process.max()),
        param_bytes=sum(p for *_, p, _h in layers_def),
        output_shape=(batch, 1000, score, score) if head != "fc" else (batch, 1000),
        peak_time_s=float(allocator.t[pi]),
        peak_phase=PHASES[int(allocator.phase[pi])],
        peak_module=strings[mod] if mod >= 0 else "",
    )
    from vggexplorer.core.model.config import RunConfig
    from vggexplorer.core.model.head import preset

    dev = "cuda:0" if cuda else "cpu"
    run_config = RunConfig(preset(head), device=dev, batch=batch, input_hw=(input_hw, input_hw))
    config = RunMeta(run_config, head_label=head, preset=head)
    env = RunEnvironment(
        device=dev, device_name="Synthetic GPU 80GB" if cuda else "synthetic CPU", synthetic=True
    )
    return RunResult(
        config=config,
        environment=env,
        summary=summary,
        strings=strings,
        tensor=tensor,
        allocator=allocator,
        device=device,
        spans=spans,
        layers=layers,
        predicted=predicted,
        name=name,
        notes=["synthetic: built from arithmetic, not measured"],
    )
