"""Predictions: verdicts, max batch, the batch model, labels, the CLI; GPU checks where a GPU exists."""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vggexplorer.cli import main
from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.predict.gpus import GiB, MiB, adhoc_profile, find_profile
from vggexplorer.core.predict.predictor import Predictor, predict
from vggexplorer.core.predict.replay import replay_rows
from vggexplorer.core.results.result import PHASES


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def _cfg(name: str = "fc", **kw: object) -> RunConfig:
    base = RunConfig(
        head=preset(name),
        device="cpu",
        batch=2,
        input_hw=(224, 224),
        mode="train-step",
        optimizer="adam",
        allocator_level=False,
        sample_hz=0.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_fits_on_80gb(predictor: Predictor) -> None:
    pred = predictor.predict(_cfg(batch=8), find_profile("h100"))
    print(f"fc b8 224 train-step adam on H100: {pred.timings_ms}")
    assert pred.fits and pred.oom_at is None
    r = pred.result
    assert r.predicted is True and r.status == "ok"
    assert r.name.startswith("PREDICTED") and any("PREDICTED" in n for n in r.notes)
    assert pred.peak_reserved_bytes >= pred.peak_allocated_bytes >= pred.peak_tensor_bytes > 0
    # nvidia-smi process = context + kernels + reserved at the peak
    gpu = pred.gpu
    assert (
        pred.peak_process_bytes == gpu.cuda_context_bytes + gpu.lazy_kernels_bytes + pred.peak_reserved_bytes
    )
    # the allocator-level curve carries reserved; the device curve the process
    assert r.allocator.reserved is not None and int(r.allocator.reserved.max()) == pred.peak_reserved_bytes
    assert int(r.device.process.max()) == pred.peak_process_bytes
    assert r.summary.peak_allocated_bytes == pred.peak_allocated_bytes
    assert pred.workspace_bytes["cublas"] == 32 * MiB  # H100: sm90 → 32 MiB cuBLAS workspace


def test_oom_on_tiny_capacity_names_layer_and_phase(predictor: Predictor) -> None:
    # 531 MB of fc parameters + their gradients cannot fit into 1 GiB minus the context
    pred = predictor.predict(_cfg(batch=1), adhoc_profile("1.5GiB"))
    assert not pred.fits and pred.oom_at is not None
    assert pred.oom_at.phase == "backward" and pred.oom_at.layer.startswith(("classifier", "features"))
    assert pred.result.status == "oom" and pred.result.fault is not None
    assert pred.result.fault.phase == "backward" and pred.result.fault.layer == pred.oom_at.layer
    assert "PREDICTED" in pred.result.fault.message
    d = pred.to_dict()
    assert (
        d["fits"] is False
        and d["oom_at"]["layer"] == pred.oom_at.layer
        and d["oom_at"]["phase"] == "backward"
    )


def test_oom_in_setup_when_parameters_do_not_fit(predictor: Predictor) -> None:
    pred = predictor.predict(_cfg(batch=1, mode="eval"), adhoc_profile("800MiB"))
    assert not pred.fits and pred.oom_at is not None and pred.oom_at.phase == "setup"


def test_workspaces_from_profile(predictor: Predictor) -> None:
    """One cuBLAS workspace per thread that runs a matmul: cuBLAS handles are per thread
    (CublasHandlePool.cpp ``getCurrentCUDABlasHandle``, ``thread_local`` PoolWindow) and workspaces per
    (handle, stream) (``cublas_handle_stream_to_workspace``); CUDA backward nodes run on autograd's device
    thread (torch/csrc/autograd/engine.cpp ``Engine::start_device_threads``), so a Linear head trained has
    two. cuBLASLt reuses the cuBLAS workspace in torch 2.13 (``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` on by
    default, ``unified_cublas_and_lt_workspaces``): no allocation of its own."""
    rtx = find_profile("RTX 3060")
    fc = predictor.predict(_cfg("fc", batch=4), rtx)
    fcn = predictor.predict(_cfg("fcn", batch=4), rtx)
    assert fc.workspace_bytes["cublas"] == 8_519_680 and fc.workspace_bytes["cublas_backward"] == 8_519_680
    assert fc.workspace_bytes["cublaslt"] == 0
    assert fcn.workspace_bytes["cublas"] == fcn.workspace_bytes["cublas_backward"] == 0  # no cuBLAS call
    assert fc.workspace_bytes["conv_peak"] > 0
    # allocated − tensors = the workspaces (at the end: the two kept cuBLAS workspaces)
    end_alloc = int(fc.result.allocator.total[-1])
    end_tensor = int(fc.result.tensor.total[-1])
    assert end_alloc - end_tensor >= 2 * 8_519_680  # + block rounding
    # inference runs no backward: the main thread's workspace only
    ev = predictor.predict(_cfg("fc", batch=4, mode="eval"), rtx)
    assert ev.workspace_bytes["cublas"] == 8_519_680 and ev.workspace_bytes["cublas_backward"] == 0


def test_separate_cublaslt_workspace_when_not_unified(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TORCH_CUBLASLT_UNIFIED_WORKSPACE=0`` brings back cuBLASLt's own pool (``getCUDABlasLtWorkspace``,
    ``parseCUDABlasLtWorkspaceSize``: 1024 KiB), one per thread (key (handle, stream))."""
    monkeypatch.setenv("TORCH_CUBLASLT_UNIFIED_WORKSPACE", "0")
    fc = predictor.predict(_cfg("fc", batch=4), find_profile("RTX 3060"))
    assert fc.workspace_bytes["cublaslt"] == 1024 * 1024


def test_batch_model_is_exact(predictor: Predictor) -> None:
    cfg = _cfg("fcn-pooled", batch=5, input_hw=(64, 64))
    gpu = find_profile("RTX 4090")
    traced = predictor.trace(cfg)
    predictor.trace(replace(cfg, batch=6))
    predictor.trace(replace(cfg, batch=9))
    bm = predictor._models[replace(cfg, batch=1)]
    assert not bm.broken and bm.verified
    assert bm.rows_at(5) == traced.rows
    derived = predictor.predict(replace(cfg, batch=7), gpu, derived_ok=True)
    assert derived.derived
    real = Predictor().predict(replace(cfg, batch=7), gpu)
    assert derived.peak_allocated_bytes == real.peak_allocated_bytes
    assert derived.peak_reserved_bytes == real.peak_reserved_bytes


def test_max_batch_consistent_and_monotonic(predictor: Predictor) -> None:
    cfg = _cfg("fc", batch=2, input_hw=(64, 64))
    sizes = [4 * GiB, 5 * GiB, 8 * GiB]
    answers = []
    for cap in sizes:
        gpu = adhoc_profile(cap)
        mb = predictor.max_batch(cfg, gpu)
        answers.append(mb)
        fresh = Predictor()  # single predictions, traced at exactly that batch
        assert fresh.predict(replace(cfg, batch=mb), gpu).fits
        assert not fresh.predict(replace(cfg, batch=mb + 1), gpu).fits
    print(f"max batch fc 64×64 train-step adam at 4/5/8 GiB: {answers}")
    assert answers == sorted(answers) and answers[0] >= 1 and answers[-1] > answers[0]


def test_max_batch_is_the_largest_batch_that_fits() -> None:
    """The search answers the largest fitting batch, found by trying every batch below the tensor bound.

    The allocator's verdict need not be monotonic in the batch (gap at 32×32 on 1 GiB fits at 323, not at
    324-326, fits again up to 355), so a bisection alone can stop at a lower boundary."""
    from vggexplorer.core.predict.batch_model import model_key, tensor_bound

    cfg = _cfg("gap", batch=2, input_hw=(32, 32), mode="train")
    for cap in ("900MiB", "1GiB", "4GiB"):
        gpu = adhoc_profile(cap)
        p = Predictor()
        best = p.max_batch(cfg, gpu)
        assert p.traces_run <= 3  # batch 2 and 3 (the model), one confirmation
        bound = tensor_bound(p._models[model_key(cfg)], gpu.allocator_capacity_bytes, 1 << 16)
        largest = next((b for b in range(bound - 1, 0, -1) if p.fits(replace(cfg, batch=b), gpu)), 0)
        print(f"gap 32×32 train on {cap}: max batch {best}, largest by brute force {largest}, bound {bound}")
        assert best == largest
        traced = Predictor()
        assert traced.predict(replace(cfg, batch=best), gpu).fits
        assert not traced.predict(replace(cfg, batch=best + 1), gpu).fits


def test_max_batch_zero_when_nothing_fits(predictor: Predictor) -> None:
    assert predictor.max_batch(_cfg(mode="eval"), adhoc_profile("600MiB")) == 0


def test_predict_with_max_batch_rtx3060() -> None:
    cfg = _cfg("fcn", batch=64, input_hw=(384, 384))
    pred = predict(cfg, find_profile("RTX 3060"), with_max_batch=True)
    print(
        f"fcn 384 b64 train-step adam on RTX 3060: allocated {pred.peak_allocated_bytes:,} reserved "
        f"{pred.peak_reserved_bytes:,} process {pred.peak_process_bytes:,} fits={pred.fits} "
        f"max_batch={pred.max_batch} timings={pred.timings_ms}"
    )
    assert pred.max_batch is not None
    assert pred.fits == (pred.max_batch >= 64)


def test_replay_record_false_same_verdict(predictor: Predictor) -> None:
    ft = predictor.trace(_cfg(batch=2))
    gpu = adhoc_profile("2GiB")
    a = replay_rows(ft, ft.rows, gpu, record=True)
    b = replay_rows(ft, ft.rows, gpu, record=False)
    assert (a.oom is None) == (b.oom is None)
    assert a.model.peak_reserved_bytes == b.model.peak_reserved_bytes


def test_phases_present_in_predicted_timeline(predictor: Predictor) -> None:
    r = predictor.predict(_cfg(batch=2, input_hw=(64, 64)), find_profile("a100")).result
    phases = {PHASES[p] for p in r.allocator.phase}
    assert {"setup", "forward", "loss", "backward", "optimizer"} <= phases


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "predict",
            "--head",
            "fcn",
            "--input",
            "224",
            "--batch",
            "2",
            "--mode",
            "train",
            "--gpu",
            "3060",
            "--json",
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert {"gpu", "predicted", "fits", "oom_at", "max_batch"} <= set(d)
    assert {"peak_allocated_bytes", "peak_reserved_bytes", "peak_process_bytes"} <= set(d["predicted"])
    assert (
        d["fits"] is True and d["oom_at"] is None and isinstance(d["max_batch"], int) and d["max_batch"] >= 2
    )
    assert d["gpu"]["name"] == "NVIDIA GeForce RTX 3060" and d["gpu"]["estimated"] is True
    assert d["predicted"]["peak_process_bytes"] > d["predicted"]["peak_reserved_bytes"]


def test_cli_capacity_oom_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "predict",
            "--head",
            "fc",
            "--input",
            "64",
            "--mode",
            "train-step",
            "--optimizer",
            "adam",
            "--capacity",
            "1.2GiB",
            "--json",
            "--no-max-batch",
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert (
        d["fits"] is False
        and d["oom_at"]["layer"]
        and d["oom_at"]["phase"] in PHASES
        and d["max_batch"] is None
    )


def test_cli_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--head", "gap", "--input", "64", "--gpu", "RTX 4090", "--no-max-batch"]) == 0
    out = capsys.readouterr().out
    assert "PREDICTED" in out and "FITS" in out and "peak reserved" in out


def test_cli_unknown_gpu_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--gpu", "voodoo 5", "--no-max-batch"]) == 2
    err = capsys.readouterr().err
    assert "RTX 3060" in err and "H100" in err


def test_cli_out_writes_run_and_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--head",
                "gap",
                "--input",
                "64",
                "--mode",
                "train",
                "--gpu",
                "a100",
                "--no-max-batch",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from vggexplorer.core.allocator.snapshot import load_snapshot

    snap = load_snapshot(out / "snapshot.pickle")
    assert snap.segments and snap.trace(0)
    with open(out / "snapshot.pickle", "rb") as f:
        raw = pickle.load(f)  # our own file, just written
    assert {"segments", "device_traces"} <= set(raw)
    assert main(["replay", str(out / "snapshot.pickle")]) == 0  # the exported trace replays exactly
    try:
        from vggexplorer.core.results.runfile import load_run
    except ImportError:  # pragma: no cover
        return
    r = load_run(out / "run.json")
    assert r.predicted is True and len(r.allocator) > 0


def test_cli_replay_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = Path(__file__).parent / "data" / "real_snapshot_small_cnn.pickle"
    assert main(["replay", str(real), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    assert main(["replay", str(bad)]) == 2


def test_cli_calibrate_without_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: calibrate would run")
    assert main(["calibrate"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- GPU


def _calibrate_in_fresh_process(queue: Any) -> None:
    """Child (spawn): calibrate on a GPU nothing else touched; send the profile as a dict."""
    from vggexplorer.core.predict.calibrate import calibrate

    queue.put(calibrate(save=False).to_dict())


def _measure_in_fresh_process(queue: Any, name: str) -> None:
    """Child (spawn): one measured run in a fresh process (no calibration workspaces in its base)."""
    from vggexplorer.core.run.engine import run

    r = run(_cfg(name, batch=4, input_hw=(224, 224), device="cuda"))
    queue.put(
        (r.status, r.summary.peak_allocated_bytes, r.summary.peak_reserved_bytes, r.summary.peak_tensor_bytes)
    )


def _in_fresh_process(target: Any, *args: Any) -> Any:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA state, workspaces or cached blocks inherited
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(q, *args))
    proc.start()
    try:
        import queue as _queue

        deadline = time.monotonic() + 600
        while True:  # a child that died (CUDA error, crash) is an error at once, not after the deadline
            try:
                return q.get(timeout=1.0)
            except _queue.Empty:
                if not proc.is_alive():
                    raise AssertionError(f"the child process died (exit {proc.exitcode})") from None
                if time.monotonic() > deadline:
                    raise
    finally:
        proc.join(60)


#: Modelled, not exact: cuDNN picks convolution workspaces per call from its heuristics (the profile holds a
#: calibrated fraction of the input, ConvWorkspacePolicy), and CUDA reductions (bias gradients, the loss's
#: mean) allocate their staging buffer through the caching allocator (aten/src/ATen/native/cuda/Reduce.cuh,
#: ``gpu_reduce_kernel``: ``allocator.allocate(config.global_memory_size())`` when a reduction is split across
#: blocks), which the trace does not see. Allowed difference: the largest conv workspace the profile allows
#: (one call's transient block) + 2 MiB, the small-pool segment (kSmallBuffer) such scratch can add.
def _modelled_tolerance(profile: Any) -> int:
    return int(profile.conv_workspace.cap_bytes) + 2 * MiB


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fc", "fcn"])
def test_gpu_predicted_peaks_equal_measured(name: str) -> None:
    """On a real GPU, calibration and measurement each in a fresh process (calibrate's cuBLAS/cuDNN
    workspaces and cached blocks would otherwise sit in the measured run's base). Exact: the tensor-level
    peak (the trace maps every storage); modelled: allocated and reserved, within ``_modelled_tolerance``."""
    from vggexplorer.core.predict.gpus import GpuProfile

    profile = GpuProfile.from_dict(_in_fresh_process(_calibrate_in_fresh_process))
    status, alloc, reserved, tensors = _in_fresh_process(_measure_in_fresh_process, name)
    assert status == "ok"
    cfg = _cfg(name, batch=4, input_hw=(224, 224), device="cuda")
    pred = Predictor().predict(cfg, profile)
    tol = _modelled_tolerance(profile)
    print(
        f"{name}: measured alloc {alloc:,} reserved {reserved:,} tensors {tensors:,}; predicted "
        f"{pred.peak_allocated_bytes:,} / {pred.peak_reserved_bytes:,} / {pred.peak_tensor_bytes:,}; "
        f"tol {tol:,}"
    )
    assert pred.peak_tensor_bytes == tensors
    assert abs(pred.peak_allocated_bytes - alloc) <= tol
    assert abs(pred.peak_reserved_bytes - reserved) <= tol + 20 * MiB  # + one large segment (kLargeBuffer)


# ---------------------------------------------------------------------------------------------- caches


def test_derived_rows_use_the_requested_batch_for_workspaces() -> None:
    """Sizes from the batch model (fitted at 4 and 5) predict batch 24 exactly like a trace at 24 does,
    cuDNN workspaces (which scale with the batch) included."""
    cfg = _cfg("fcn-pooled", batch=4, input_hw=(64, 64), mode="train")
    gpu = find_profile("RTX 3060")
    p = Predictor()
    p.trace(cfg)
    p.trace(replace(cfg, batch=5))
    derived = p.predict(replace(cfg, batch=24), gpu, derived_ok=True)
    traced = Predictor().predict(replace(cfg, batch=24), gpu)
    assert derived.derived and not traced.derived
    assert derived.workspace_bytes["conv_peak"] > 0
    assert derived.workspace_bytes == traced.workspace_bytes
    assert (derived.peak_allocated_bytes, derived.peak_reserved_bytes) == (
        traced.peak_allocated_bytes,
        traced.peak_reserved_bytes,
    )
    assert derived.result.allocator.delta.tolist() == traced.result.allocator.delta.tolist()


def test_disk_cache_round_trip_answers_without_tracing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vggexplorer.core.predict import cache as predict_cache

    monkeypatch.setenv("VGGEXPLORER_CACHE_DIR", str(tmp_path))
    cfg = _cfg("fcn-pooled", batch=8, input_hw=(64, 64), mode="train-step", optimizer="sgd")
    gpu = adhoc_profile("3GiB")
    first = Predictor(disk_cache=True)
    p1 = first.predict(cfg, gpu)
    best = first.max_batch(cfg, gpu)
    assert first.traces_run >= 3 and len(list(tmp_path.glob("*.npz"))) == 1
    # a new predictor (a new process, as far as the cache is concerned) answers from the file alone
    second = Predictor(disk_cache=True)
    assert second.is_confirmed(cfg)
    p2 = second.predict(cfg, gpu, derived_ok=True)
    assert second.max_batch(cfg, gpu) == best
    assert second.traces_run == 0 and second.disk_hits == 1
    assert p2.derived and any("on-disk cache" in n for n in p2.result.notes)
    assert (p2.peak_allocated_bytes, p2.peak_reserved_bytes, p2.peak_process_bytes, p2.fits) == (
        p1.peak_allocated_bytes,
        p1.peak_reserved_bytes,
        p1.peak_process_bytes,
        p1.fits,
    )
    assert p2.result.tensor.delta.tolist() == p1.result.tensor.delta.tolist()
    assert p2.result.allocator.reserved.tolist() == p1.result.allocator.reserved.tolist()
    # the key ignores the batch but not the structure
    assert predict_cache.cache_key(cfg) == predict_cache.cache_key(replace(cfg, batch=64))
    assert predict_cache.cache_key(cfg) != predict_cache.cache_key(replace(cfg, input_hw=(96, 96)))
    assert predict_cache.cache_key(cfg) != predict_cache.cache_key(replace(cfg, optimizer="adam"))


def test_disk_cache_bad_file_is_ignored_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vggexplorer.core.predict import cache as predict_cache

    monkeypatch.setenv("VGGEXPLORER_CACHE_DIR", str(tmp_path))
    cfg = _cfg("gap", batch=2, input_hw=(32, 32), mode="train")
    path = tmp_path / f"{predict_cache.cache_key(cfg)}.npz"
    for junk in (b"", b"PK\x03\x04 not a zip", b"\x80\x04\x95 a pickle", b"x" * 1000):
        path.write_bytes(junk)
        p = Predictor(disk_cache=True)
        assert not p.is_confirmed(cfg) and not path.exists()
        assert p.predict(cfg, adhoc_profile("8GiB")).fits
    # a file with the right arrays under another config's name does not match either
    Predictor(disk_cache=True).max_batch(cfg, adhoc_profile("1GiB"))
    stored = tmp_path / f"{predict_cache.cache_key(cfg)}.npz"
    other = replace(cfg, input_hw=(48, 48))
    stored.rename(tmp_path / f"{predict_cache.cache_key(other)}.npz")
    assert predict_cache.load(other) is None
    monkeypatch.setenv("VGGEXPLORER_CACHE_DIR", "off")
    assert predict_cache.cache_dir() is None and predict_cache.load(cfg) is None


def test_cli_predict_from_disk_cache_does_not_import_torch(tmp_path: Path) -> None:
    """The done-when command, twice in fresh processes: the second answers from the cache, without torch."""
    import os
    import subprocess
    import sys

    script = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        "from vggexplorer.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 's': time.perf_counter() - t}),"
        " file=sys.stderr)\n"
    )
    args = ["predict", "--head", "fcn", "--input", "384", "--batch", "64", "--mode", "train-step"]
    args += ["--optimizer", "adam", "--gpu", "RTX 3060", "--json"]
    env = dict(os.environ, VGGEXPLORER_CACHE_DIR=str(tmp_path))
    outs = []
    for _ in range(2):
        cp = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300
        )
        assert cp.returncode == 0, cp.stderr
        outs.append((json.loads(cp.stdout), json.loads(cp.stderr.strip().splitlines()[-1])))
    (cold, cold_info), (warm, warm_info) = outs
    print(f"cold {cold_info}, warm {warm_info}")
    assert cold_info["torch"] is True and warm_info["torch"] is False
    for key in ("predicted", "fits", "oom_at", "max_batch", "gpu", "cuda_mapping_rules"):
        assert warm[key] == cold[key], key


def test_cli_no_cache_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VGGEXPLORER_CACHE_DIR", str(tmp_path))
    args = ["predict", "--head", "gap", "--input", "32", "--mode", "train", "--capacity", "2GiB", "--json"]
    assert main([*args, "--no-cache"]) == 0
    assert list(tmp_path.iterdir()) == []
    no_cache = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert len(list(tmp_path.glob("*.npz"))) == 1
    cached = json.loads(capsys.readouterr().out)
    assert cached["predicted"] == no_cache["predicted"] and cached["max_batch"] == no_cache["max_batch"]


def test_disk_cache_keeps_the_most_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import numpy as np

    from vggexplorer.core.predict import cache as predict_cache

    monkeypatch.setenv("VGGEXPLORER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(predict_cache, "MAX_FILES", 3)
    cols = {name: np.zeros(2, np.int64) for name in predict_cache._INT_COLUMNS}
    model = predict_cache.CachedModel(2, np.zeros(2), cols, {"confirmed": [2, 3]})
    configs = [_cfg("gap", input_hw=(32 + 8 * i, 32)) for i in range(5)]
    for i, cfg in enumerate(configs[:3]):
        assert predict_cache.save(cfg, model)
        path = tmp_path / f"{predict_cache.cache_key(cfg)}.npz"
        os.utime(path, (1000 + i, 1000 + i))  # saved in order 0, 1, 2
    assert predict_cache.load(configs[0]) is not None  # used again: now the most recent
    predict_cache.save(configs[3], model)  # 4 files: the least recently used (1) goes
    predict_cache.save(configs[4], model)  # then 2
    left = {p.stem for p in tmp_path.glob("*.npz")}
    assert left == {predict_cache.cache_key(c) for c in (configs[0], configs[3], configs[4])}
    loaded = predict_cache.load(configs[0])
    assert loaded is not None and loaded.confirmed == {2, 3}


def test_calibration_backward_gradient_is_contiguous_and_made_before_the_window() -> None:
    """tools/autograd/derivatives.yaml ``sum``: ``self: grad.expand_symint(self.sym_sizes())`` — after
    ``y.sum().backward()`` the gradient reaching ``y``'s producer has stride 0, and convolution backward
    makes it contiguous (a y-sized allocation inside calibrate's measured window, counted as workspace). The
    gradient calibrate passes is materialised and contiguous, so the node receives it as it is."""
    import torch

    from vggexplorer.core.predict.calibrate import backward_grad_for

    conv = torch.nn.Conv2d(3, 4, 3)
    seen: list[torch.Tensor] = []
    y = conv(torch.randn(2, 3, 8, 8))
    y.register_hook(seen.append)
    y.sum().backward()
    assert 0 in seen[-1].stride()  # the old calibrate's gradient: expanded, not materialised
    y = conv(torch.randn(2, 3, 8, 8))
    y.register_hook(seen.append)
    g = backward_grad_for(y)
    y.backward(g)
    got = seen[-1]
    assert got.is_contiguous() and 0 not in got.stride() and got.data_ptr() == g.data_ptr()
