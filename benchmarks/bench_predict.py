"""Edit → predicted curves latency for VGG11 (what the GUI pays on every edit), median of ≥ 10.

Each sample is "cold" for the edited config: a fresh ``Predictor`` (no cached trace), in a warm process
(torch already imported, as in the GUI's predictor process). It times ``predict`` end to end: the fake
trace (the engine's step program on meta tensors, CUDA mapping), the allocator replay on an RTX 3060
profile and building the predicted RunResult. Also: a re-predict of a cached config on another GPU (replay
only), ``max_batch`` (cold, in memory), and the ``vggexplorer predict`` command of issue 5's done-when in
fresh processes, with an empty on-disk cache and with the cache an earlier run left. Targets: edit →
curves ≤ 50 ms for VGG11 in every mode, max batch ≤ 100 ms, the command "well under a second" (≤ 0.5 s).

Prints a table and ``FIGURE|name|value|target|ok`` lines for benchmarks/run_all.py.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import preset
from vggexplorer.core.predict.gpus import find_profile
from vggexplorer.core.predict.predictor import Predictor

N = 11


def median_ms(fn: object, n: int = N) -> tuple[float, float, float]:
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        xs.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(xs), min(xs), max(xs)


CLI = [
    "predict", "--head", "fcn", "--input", "384", "--batch", "64", "--mode", "train-step",
    "--optimizer", "adam", "--gpu", "RTX 3060", "--json",
]  # fmt: skip


def cli_ms(cache: str, n: int) -> tuple[float, float, float]:
    """Wall time of ``vggexplorer predict`` (issue 5's done-when command) in fresh processes."""
    xs = []
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, VGGEXPLORER_CACHE_DIR=d)
        cmd = [sys.executable, "-m", "vggexplorer", *CLI]
        if cache == "warm":
            subprocess.run(cmd, env=env, check=True, capture_output=True)
        for _ in range(n):
            if cache == "empty":
                for f in Path(d).glob("*.npz"):
                    f.unlink()
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            xs.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(xs), min(xs), max(xs)


def main() -> int:
    gpu = find_profile("RTX 3060")
    other = find_profile("H100")
    base = RunConfig(
        head=preset("fc"),
        device="cpu",
        batch=8,
        input_hw=(224, 224),
        mode="train",
        optimizer="adam",
        allocator_level=False,
        sample_hz=0.0,
    )
    Predictor().predict(base, gpu)  # warm the process (imports, FakeTensorMode set-up)
    rows: list[tuple[str, float, float, float]] = []
    figures: list[tuple[str, float, float]] = []
    for head, hw in (("fc", (224, 224)), ("fcn", (384, 384))):
        for mode in ("eval", "train", "train-step"):
            cfg = replace(base, head=preset(head), input_hw=hw, mode=mode, batch=64 if head == "fcn" else 8)

            def cold(cfg: RunConfig = cfg) -> None:
                Predictor().predict(cfg, gpu)

            med, lo, hi = median_ms(cold)
            rows.append((f"edit → curves  {head} {hw[0]} b{cfg.batch} {mode}", med, lo, hi))
            figures.append((f"predict_{head}_{mode}_ms", med, 50.0))
    cfg = replace(base, head=preset("fcn"), input_hw=(384, 384), batch=64, mode="train-step")
    p = Predictor()
    p.predict(cfg, gpu)
    med, lo, hi = median_ms(lambda: p.predict(cfg, other))
    rows.append(("cached config, other GPU (replay + result)", med, lo, hi))
    figures.append(("repredict_cached_ms", med, 50.0))

    def mb() -> None:
        Predictor().max_batch(cfg, gpu)

    med, lo, hi = median_ms(mb, 5)
    rows.append(("max_batch cold (fcn 384 train-step adam, 3 traces + replays)", med, lo, hi))
    figures.append(("max_batch_cold_ms", med, 100.0))
    p = Predictor()
    p.max_batch(cfg, gpu)
    med, lo, hi = median_ms(lambda: p.max_batch(cfg, gpu))
    rows.append(("max_batch again, same predictor (replays only)", med, lo, hi))
    med, lo, hi = cli_ms("empty", 3)
    rows.append(("CLI, fresh process, empty disk cache (traces; imports torch)", med, lo, hi))
    cold_cli = med
    med, lo, hi = cli_ms("warm", 5)
    rows.append(("CLI, fresh process, disk cache from an earlier run (no torch)", med, lo, hi))
    figures.append(("cli_predict_cached_ms", med, 500.0))
    w = max(len(r[0]) for r in rows)
    print(f"{'scenario':<{w}}  {'median ms':>9}  {'min':>7}  {'max':>7}")
    for name, med, lo, hi in rows:
        print(f"{name:<{w}}  {med:9.1f}  {lo:7.1f}  {hi:7.1f}")
    for name, value, target in figures:
        print(f"FIGURE|{name}|{value:.1f} ms|≤ {target:.0f} ms|{'ok' if value <= target else 'MISSED'}")
    print(f"FIGURE|cli_predict_empty_cache_ms|{cold_cli:.0f} ms|none (first run of a config)|-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
