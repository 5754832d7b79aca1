"""The prediction service: ``serve``, the loop the prediction child process runs.

The predictor imports torch (it traces the model under FakeTensorMode), which the GUI process never does,
so the window's ``PredictService`` (vggexplorer.qt.predict_panel) spawns one long-lived child that runs
``serve``: it keeps its ``Predictor`` (traces and batch models cached), answers the newest request only
(requests that queued up while it was busy are dropped unanswered), and sends the prediction first and the
largest batch that fits after it, so the verdict shows as soon as it is known. Answers are plain data
(``plain_result``), so unpickling them imports neither the predictor nor torch.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.predict.gpus import GpuProfile, adhoc_profile, find_profile
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.run.child import imported_modules
from vggexplorer.core.run.entries import plain_result


@dataclass(frozen=True)
class PredictionAnswer:
    """One prediction as the window sees it (plain data; ``result`` is the predicted RunResult)."""

    request_id: int
    result: RunResult
    fits: bool
    oom_at: dict[str, Any] | None
    error: str
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    peak_process_bytes: int
    gpu_name: str
    total_memory_bytes: int
    estimated: bool
    ms: float

    @staticmethod
    def from_payload(rid: int, d: dict[str, Any]) -> PredictionAnswer:
        return PredictionAnswer(rid, **d)


def serve(requests: Any, answers: Any) -> None:
    """Child process: answer ``(id, {"config": engine config dict, "gpu": {"profile": name} | {"capacity":
    bytes}})`` requests until ``None`` or the pipe closes. Sends ``("prediction", id, dict)`` then
    ``("max_batch", id, n)``, or ``("error", id, text)``.

    A request ``(id, {"modules": prefixes})`` is answered ``("modules", id, names)``: the modules under
    those prefixes that this process has imported (``child.imported_modules``; tests ask it)."""
    from vggexplorer.core.predict.predictor import Predictor

    predictor = Predictor(disk_cache=True)
    profiles: dict[str, GpuProfile] = {}
    while True:
        try:
            msg = requests.recv()
            while msg is not None and requests.poll():  # only the newest request matters
                msg = requests.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        rid, req = msg
        if "modules" in req:
            answers.send(("modules", rid, imported_modules(req["modules"])))
            continue
        try:
            g = req["gpu"]
            if "capacity" in g:
                gpu = adhoc_profile(int(g["capacity"]))
            else:
                name = str(g["profile"])
                if name not in profiles:
                    profiles[name] = find_profile(name)
                gpu = profiles[name]
            config = RunConfig.from_dict(req["config"])
            pred = predictor.predict(config, gpu)
            oom = pred.oom_at
            fault = pred.result.fault
            answers.send(
                (
                    "prediction",
                    rid,
                    {
                        "result": plain_result(pred.result),
                        "fits": bool(pred.fits),
                        "oom_at": oom.to_dict() if oom is not None else None,
                        "error": "" if pred.fits or oom is not None or fault is None else fault.message,
                        "peak_allocated_bytes": int(pred.peak_allocated_bytes),
                        "peak_reserved_bytes": int(pred.peak_reserved_bytes),
                        "peak_process_bytes": int(pred.peak_process_bytes),
                        "gpu_name": gpu.name,
                        "total_memory_bytes": int(gpu.total_memory_bytes),
                        "estimated": bool(gpu.estimated),
                        "ms": float(pred.timings_ms.get("total", 0.0)),
                    },
                )
            )
        except Exception as e:  # reported in the panel, never swallowed
            answers.send(("error", rid, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
            continue
        if requests.poll():  # a newer request is waiting: it matters more than this one's max batch
            continue
        try:
            answers.send(("max_batch", rid, int(predictor.max_batch(config, gpu))))
        except Exception as e:
            answers.send(("error", rid, f"largest batch: {type(e).__name__}: {e}"))
