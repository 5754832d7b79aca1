"""Predicted beside measured: a GPU picker, the verdict strip, and the helper process that predicts.

The predictor imports torch (it traces the model under FakeTensorMode), which the GUI process never does, so
predictions run in one long-lived child process (``PredictService``), spawned on the first request, that runs
the prediction service (``vggexplorer.core.predict.service.serve``: the newest request only, the prediction
first and the largest batch that fits after it). A reader thread turns answers into a Qt signal on the GUI
thread; every answer carries its request id and the window ignores all but the latest (stale results).

``PredictPanel`` is the view: "Predict for GPU [profile ▾]", a capacity box for "custom capacity…", "Show
prediction" (the predicted curves in the memory plot), "predicting…" while a request is out, and the verdict
in words — always saying PREDICTED and for which profile (estimated or calibrated).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from typing import Any, ClassVar

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from vggexplorer.core.base.units import GiB, fmt_bytes
from vggexplorer.core.predict.gpus import GpuError, GpuProfile, find_profile, list_profiles
from vggexplorer.core.predict.service import PredictionAnswer, serve
from vggexplorer.core.results.wording import short_gpu_name
from vggexplorer.core.run.child import end_process

CUSTOM = "custom"
#: Shown by default when the device's own GPU has no profile (or there is no GPU).
DEFAULT_PROFILE = "RTX 4090"
#: Edits are coalesced: a prediction is asked this long after the last one.
DEBOUNCE_MS = 150


# --- GUI side --------------------------------------------------------------------------------------------


class PredictService(QObject):
    """The predicting child process and the thread that reads its answers.

    ``answered(PredictionAnswer)``, ``maxBatch(request_id, n)``, ``failed(request_id, text)`` arrive on the
    GUI thread, for every answer (the caller drops stale ids). ``stop()`` ends the child and joins the thread.
    """

    answered = Signal(object)
    maxBatch = Signal(int, int)
    failed = Signal(int, str)
    #: answer to a ``{"modules": prefixes}`` request: what the child has imported under those prefixes
    modulesReported = Signal(int, object)
    _got = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._spawned = threading.Event()
        self._proc: Any = None
        self._requests: Any = None
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_id = 0
        self.latest_id = 0
        self._got.connect(self._on_got)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def request(self, payload: dict[str, Any]) -> int:
        """Send a request (starting the child on first use); returns its id, which becomes ``latest_id``.

        Never blocks the GUI thread on the child's start: spawning (a fork and exec of this big process)
        happens on the reader thread, and a request made meanwhile waits there (only the newest)."""
        self._next_id += 1
        self.latest_id = rid = self._next_id
        msg = (rid, payload)
        if self._thread is not None and not self._thread.is_alive():
            self.stop()  # the child died (its pipe closed): start a new one
        with self._lock:
            if self._thread is None:
                self._pending, self._stopping = msg, False
                self._spawned.clear()
                self._thread = threading.Thread(target=self._run, name="vggexplorer-predict", daemon=True)
                self._thread.start()
                return rid
            if self._requests is None:  # still starting: it sends the newest pending request
                self._pending = msg
                return rid
            conn = self._requests
        try:
            conn.send(msg)
        except OSError as e:  # the child died: say so; the next request starts a new one
            self.failed.emit(rid, f"the prediction process is gone ({e}); it restarts on the next edit")
        return rid

    def _run(self) -> None:
        try:
            ctx = multiprocessing.get_context("spawn")
            req_r, req_w = ctx.Pipe(duplex=False)
            ans_r, ans_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=serve, args=(req_r, ans_w), name="vggexplorer-predict", daemon=True)
            proc.start()
            req_r.close()
            ans_w.close()
        except Exception as e:  # reported, never swallowed
            rid = self._pending[0] if self._pending else self.latest_id
            self._spawned.set()
            self._got.emit(("error", rid, f"could not start the prediction process: {type(e).__name__}: {e}"))
            return
        with self._lock:
            self._proc, self._requests = proc, req_w
            pending, self._pending = self._pending, None
            stopping = self._stopping
        self._spawned.set()
        if pending is not None and not stopping:
            with contextlib.suppress(OSError):
                req_w.send(pending)
        try:
            while True:
                try:
                    msg = ans_r.recv()
                except (EOFError, OSError):
                    return
                self._got.emit(msg)
        finally:
            ans_r.close()

    def _on_got(self, msg: Any) -> None:
        kind, rid, value = msg
        if kind == "prediction":
            self.answered.emit(PredictionAnswer.from_payload(int(rid), value))
        elif kind == "max_batch":
            self.maxBatch.emit(int(rid), int(value))
        elif kind == "modules":
            self.modulesReported.emit(int(rid), list(value))
        else:
            self.failed.emit(int(rid), str(value))

    def stop(self, timeout: float = 2.0) -> None:
        """End the child (asked first, terminated if it does not go) and join the reader thread."""
        with self._lock:
            thread, self._stopping = self._thread, True
        if thread is None:
            return
        self._spawned.wait()
        proc, conn = self._proc, self._requests
        if proc is not None:
            # asked to end; terminated after ``timeout`` (busy importing torch or tracing: it holds no state
            # worth waiting for)
            end_process(proc, lambda: conn.send(None), timeout)
        thread.join()  # the child is gone: its pipe closed, the reader has returned
        if proc is not None:
            with contextlib.suppress(OSError):
                conn.close()
            proc.close()
        with self._lock:
            self._thread = self._proc = self._requests = self._pending = None
            self._stopping = False


class PredictPanel(QFrame):
    """GPU picker + "Show prediction" + the verdict strip (the view; the window drives the service)."""

    #: the GPU (or custom capacity) changed: predict again
    targetChanged = Signal()
    #: "Show prediction" toggled
    showToggled = Signal(bool)

    STYLES: ClassVar[dict[str, str]] = {
        "fits": "background:#eaf6ea; border:1px solid #9fcf9f; color:#17421a;",
        "oom": "background:#fdecea; border:1px solid #e0a09a; color:#6d1a12;",
        "blocked": "background:#fff6e0; border:1px solid #e6c274; color:#5c4300;",
        "idle": "background:#f3f0f7; border:1px solid #cbbfe0; color:#3c2a55;",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("predictPanel")
        self.gpu = QComboBox()
        self.gpu.setObjectName("predictGpu")
        self.gpu.setToolTip(
            "The GPU to predict for: shipped profiles are ESTIMATED until `vggexplorer calibrate` measured "
            "them on the card; custom capacity uses the defaults for an unknown card"
        )
        self.capacity = QDoubleSpinBox()
        self.capacity.setObjectName("predictCapacity")
        self.capacity.setRange(0.25, 4096.0)
        self.capacity.setDecimals(2)
        self.capacity.setSingleStep(1.0)
        self.capacity.setValue(24.0)
        self.capacity.setSuffix(" GiB")
        self.capacity.setKeyboardTracking(False)
        self.capacity.hide()
        self.show_check = QCheckBox("Show prediction")
        self.show_check.setObjectName("showPrediction")
        self.show_check.setChecked(True)
        self.show_check.setToolTip("Overlay the predicted curves (dash-dot) on the memory plot")
        self.status = QLabel("")
        self.status.setObjectName("predictStatus")
        self.status.setStyleSheet("color: gray;")
        self.verdict = QLabel("")
        self.verdict.setObjectName("predictVerdict")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verdict.setContentsMargins(6, 2, 6, 2)
        self.level = "idle"

        label = QLabel("Predict for &GPU")
        label.setBuddy(self.gpu)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(label)
        row.addWidget(self.gpu)
        row.addWidget(self.capacity)
        row.addWidget(self.show_check)
        row.addWidget(self.status)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.verdict)

        self._profiles: list[GpuProfile] = []
        self.profiles_error = ""
        try:
            profiles = list_profiles()
        except GpuError as e:  # a broken shipped profile: custom capacity still works
            profiles, self.profiles_error = [], str(e)
        self.set_profiles(profiles)
        self._set_level("idle")
        self.gpu.currentIndexChanged.connect(self._on_gpu)
        self.capacity.valueChanged.connect(self._on_capacity)
        self.show_check.toggled.connect(self.showToggled)

    # --- GPU choice ---
    def set_profiles(self, profiles: list[GpuProfile]) -> None:
        self._profiles = list(profiles)
        self.gpu.blockSignals(True)
        self.gpu.clear()
        for p in self._profiles:
            est = "estimated" if p.estimated else "calibrated"
            self.gpu.addItem(
                f"{short_gpu_name(p.name)} · {fmt_bytes(p.total_memory_bytes, 1)} ({est})", p.name
            )
        self.gpu.addItem("custom capacity…", CUSTOM)
        self.gpu.blockSignals(False)
        self.select(DEFAULT_PROFILE)

    def profiles(self) -> list[GpuProfile]:
        return list(self._profiles)

    def select(self, name: str) -> bool:
        """Choose a profile by (fuzzy) name, ``custom`` or ``capacity:BYTES``; False when nothing matches."""
        if name.startswith("capacity:"):
            with contextlib.suppress(ValueError):
                self.capacity.setValue(int(name.split(":", 1)[1]) / GiB)
                name = CUSTOM
        if name == CUSTOM:
            self.gpu.setCurrentIndex(self.gpu.findData(CUSTOM))
            return True
        try:
            prof = find_profile(name, self._profiles)
        except GpuError:
            return False
        self.gpu.setCurrentIndex(self.gpu.findData(prof.name))
        return True

    def select_for_device(self, device_name: str) -> bool:
        """The device's own GPU when a profile matches it, else the default (``DEFAULT_PROFILE``)."""
        if device_name and self.select(device_name):
            return True
        self.select(DEFAULT_PROFILE)
        return False

    def set_custom_capacity(self, bytes_: int) -> None:
        self.capacity.setValue(bytes_ / GiB)
        self.select(CUSTOM)

    def choice_key(self) -> str:
        """What to save and restore: a profile name or ``capacity:BYTES``."""
        data = self.gpu.currentData()
        return f"capacity:{self.capacity_bytes()}" if data == CUSTOM else str(data or "")

    def capacity_bytes(self) -> int:
        return round(self.capacity.value() * GiB)

    def gpu_request(self) -> dict[str, Any]:
        data = self.gpu.currentData()
        return {"capacity": self.capacity_bytes()} if data == CUSTOM else {"profile": str(data)}

    def target_text(self) -> str:
        """``RTX 3060 (estimated profile)`` / ``custom 2.00 GiB``."""
        data = self.gpu.currentData()
        if data == CUSTOM:
            return f"custom {fmt_bytes(self.capacity_bytes(), 2)} (default context/workspace estimates)"
        prof = next((p for p in self._profiles if p.name == data), None)
        if prof is None:
            return str(data)
        return f"{short_gpu_name(prof.name)} ({'estimated' if prof.estimated else 'calibrated'} profile)"

    def short_target(self) -> str:
        data = self.gpu.currentData()
        return (
            f"custom {fmt_bytes(self.capacity_bytes(), 2)}" if data == CUSTOM else short_gpu_name(str(data))
        )

    def _on_gpu(self, _i: int) -> None:
        self.capacity.setVisible(self.gpu.currentData() == CUSTOM)
        self.targetChanged.emit()

    def _on_capacity(self, _v: float) -> None:
        if self.gpu.currentData() == CUSTOM:
            self.targetChanged.emit()

    # --- states ---
    def _set_level(self, level: str) -> None:
        self.level = level
        self.verdict.setStyleSheet(f"#predictVerdict {{ {self.STYLES[level]} }}")

    def show_busy(self) -> None:
        self.status.setText("predicting…")

    def show_blocked(self, reason: str) -> None:
        """The head cannot run: the shape error instead of a prediction."""
        self.status.setText("")
        self._set_level("blocked")
        self.verdict.setText(f"No prediction — the head cannot run: {reason}")

    def show_error(self, text: str) -> None:
        self.status.setText("")
        self._set_level("blocked")
        self.verdict.setText(f"No prediction — {text.splitlines()[0] if text else 'the predictor failed'}")
        self.verdict.setToolTip(text)

    def show_answer(self, a: PredictionAnswer) -> None:
        self.status.setText(f"predicted in {a.ms:.0f} ms" if a.ms else "")
        self.verdict.setToolTip("")
        self.verdict.setText(verdict_text(a, self.target_text()))
        self._set_level("fits" if a.fits else ("oom" if a.oom_at is not None else "blocked"))

    def set_max_batch(self, n: int) -> None:
        text = self.verdict.text()
        base = text.rsplit(" — largest batch", 1)[0]
        self.verdict.setText(
            f"{base} — largest batch that fits: {n}" if n else f"{base} — batch 1 does not fit"
        )


def verdict_text(a: PredictionAnswer, target: str) -> str:
    """``PREDICTED for RTX 3060 (estimated profile): peak allocated 1.5 GiB · reserved 1.7 GiB · nvidia-smi
    2.1 GiB — fits in 11.8 GiB`` or ``… OOM at classifier.0 in backward (…)``."""
    head = f"PREDICTED for {target}: "
    if a.error:
        return f"{head}the model cannot be traced: {a.error}"
    peaks = (
        f"peak allocated {fmt_bytes(a.peak_allocated_bytes)} · reserved {fmt_bytes(a.peak_reserved_bytes)} · "
        f"nvidia-smi {fmt_bytes(a.peak_process_bytes)}"
    )
    if a.fits:
        return f"{head}{peaks} — fits in {fmt_bytes(a.total_memory_bytes)} — largest batch …"
    o = a.oom_at or {}
    layer, phase = str(o.get("layer") or ""), str(o.get("phase") or "?")
    where = f"OOM at {layer} in {phase}" if layer else f"OOM in {phase}"
    if not layer and phase == "setup":
        where += " (the model's parameters do not fit)"
    need = int(o.get("requested_bytes") or 0)
    ask = f"; a {fmt_bytes(need)} request" if need else ""
    return f"{head}{where} on {fmt_bytes(a.total_memory_bytes)}{ask} — up to then {peaks} — largest batch …"
