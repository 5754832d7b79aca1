"""Run controls: what to run (preset, backbone, device, batch, input, dtype, mode, optimizer, iterations),
Run / Cancel, and a progress bar that reads "62% · backward · features.8".

The widget holds no run logic: it is a view of the session's current ``RunSettings`` (every change of a
setting goes to ``SessionModel.set_settings``), and it emits ``runRequested`` / ``cancelRequested``. Run is
disabled, with the reason next to it, when the head cannot run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from vggexplorer.core.base.units import fmt_bytes
from vggexplorer.core.model.backbone import BACKBONES
from vggexplorer.core.model.config import DTYPES, MAX_ITERATIONS, MODES, OPTIMIZERS
from vggexplorer.core.model.head import PRESET_NAMES
from vggexplorer.core.session.model import SessionModel
from vggexplorer.core.session.settings import RunSettings

#: How the mode picker words the engine's modes (``core/model/config.py``: MODES), fullest first.
MODE_LABELS = {
    "train-step": "train step (fwd + bwd + optimizer)",
    "train": "train (fwd + bwd)",
    "eval": "eval (forward only)",
}
CUSTOM = "custom"


@dataclass(frozen=True)
class DeviceChoice:
    """One entry of the device picker (built from the core's DeviceInfo, or the CPU fallback)."""

    id: str  # "cpu", "cuda:0"
    label: str  # "NVIDIA H100 80GB HBM3"
    total_bytes: int | None = None
    kind: str = "cpu"

    def text(self) -> str:
        """``cuda:0 · NVIDIA H100 80GB HBM3 · 79.1 GiB`` (the core's label already says most of it)."""
        label = self.label or self.id
        text = label if label.lower().startswith(self.id.lower()) else f"{self.id} · {label}"
        if self.total_bytes and "iB" not in text:
            text += f" · {fmt_bytes(self.total_bytes, 1)}"
        return text

    def name(self) -> str:
        """``NVIDIA H100 80GB HBM3`` / ``Intel(R) Xeon(R) Processor``: the device's own name."""
        parts = [
            p for p in self.text().split(" · ") if "iB" not in p and p.lower() not in (self.id.lower(), "cpu")
        ]
        return parts[0] if parts else self.id

    def short(self) -> str:
        """``cuda:0 NVIDIA H100 80GB HBM3`` / ``cpu`` (for titles)."""
        parts = [p for p in self.text().split(" · ") if "iB" not in p and p.lower() != self.id.lower()]
        return f"{self.id} {parts[0]}" if parts and self.kind != "cpu" else self.id


CPU_CHOICE = DeviceChoice("cpu", "CPU", None, "cpu")


class RunControls(QWidget):
    presetChosen = Signal(str)
    backboneChosen = Signal(str)
    #: Batch or input size changed (the head's shapes depend on them).
    contextChanged = Signal(int, object)
    settingsChanged = Signal()
    runRequested = Signal()
    cancelRequested = Signal()

    def __init__(self, session: SessionModel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session if session is not None else SessionModel()
        self._devices: list[DeviceChoice] = [CPU_CHOICE]
        self._blocked_reason = ""
        self._running = False

        self.preset = QComboBox()
        self.preset.setObjectName("preset")
        self.preset.addItems([*PRESET_NAMES, CUSTOM])
        self.preset.setToolTip(
            "Load a shipped head (fc: torchvision's classifier; fcn: the same as 7×7/1×1 convs)"
        )
        self.backbone = QComboBox()
        self.backbone.setObjectName("backbone")
        self.backbone.addItems(list(BACKBONES))
        self.device = QComboBox()
        self.device.setObjectName("device")
        self.device.setMinimumContentsLength(40)
        self.device.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.batch = QSpinBox()
        self.batch.setObjectName("batch")
        self.batch.setRange(1, 4096)
        self.batch.setValue(8)
        self.input_h = QSpinBox()
        self.input_h.setObjectName("input")
        self.input_h.setRange(1, 8192)
        self.input_h.setSingleStep(32)
        self.input_h.setValue(224)
        self.input_h.setSuffix(" px")
        self.input_h.setToolTip("Square input H = W (VGG needs ≥ 32)")
        self.dtype = QComboBox()
        self.dtype.setObjectName("dtype")
        self.dtype.addItems(list(DTYPES))
        self.mode = QComboBox()
        self.mode.setObjectName("mode")
        for m in reversed(MODES):  # the fullest first, as MODE_LABELS words them
            self.mode.addItem(MODE_LABELS.get(m, m), m)
        self.optimizer = QComboBox()
        self.optimizer.setObjectName("optimizer")
        self.optimizer.addItems(list(OPTIMIZERS))
        self.optimizer.setCurrentText("adam")
        self.iterations = QSpinBox()
        self.iterations.setObjectName("iterations")
        self.iterations.setRange(1, MAX_ITERATIONS)
        self.iterations.setValue(3)

        self.run_button = QPushButton("▶ Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setToolTip("Run (Ctrl+R)")
        self.cancel_button = QPushButton("■ Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip("Cancel (Esc)")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setObjectName("progress")
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("ready")
        self.progress.setMinimumWidth(260)
        self.reason = QLabel()
        self.reason.setObjectName("runBlockedReason")
        self.reason.setStyleSheet("color: #a01414;")
        self.reason.setWordWrap(False)
        self.reason.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        def labelled(text: str, w: QWidget) -> list[QWidget]:
            lab = QLabel(text)
            lab.setBuddy(w)
            return [lab, w]

        row1 = QHBoxLayout()
        row2 = QHBoxLayout()
        for w in [
            *labelled("&Preset", self.preset),
            *labelled("&Backbone", self.backbone),
            *labelled("&Device", self.device),
            *labelled("Batc&h", self.batch),
            *labelled("&Input", self.input_h),
            *labelled("d&type", self.dtype),
        ]:
            row1.addWidget(w)
        row1.addStretch(1)
        for w in [
            *labelled("&Mode", self.mode),
            *labelled("&Optimizer", self.optimizer),
            *labelled("I&terations", self.iterations),
        ]:
            row2.addWidget(w)
        row2.addSpacing(12)
        row2.addWidget(self.run_button)
        row2.addWidget(self.cancel_button)
        row2.addWidget(self.progress, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 2)
        layout.setSpacing(3)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.reason)
        self.reason.hide()
        self.set_devices([CPU_CHOICE])

        self._push()
        self.preset.activated.connect(self._on_preset)
        self.backbone.activated.connect(self._on_backbone)
        self.batch.valueChanged.connect(self._on_context)
        self.input_h.valueChanged.connect(self._on_context)
        self.mode.currentIndexChanged.connect(self._on_mode)
        for w in (self.device, self.dtype, self.mode, self.optimizer):
            w.currentIndexChanged.connect(self._on_setting)
        self.iterations.valueChanged.connect(self._on_setting)
        for combo in (self.preset, self.backbone):
            combo.currentIndexChanged.connect(self._push)
        self.run_button.clicked.connect(self.runRequested)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.session.events.settings.connect(self._on_session_settings)
        # the session may outlive the widget: stop calling back into it once it is gone
        events, on_settings = self.session.events, self._on_session_settings
        self.destroyed.connect(
            lambda *_: events.settings.disconnect(on_settings) if on_settings in events.settings else None
        )

    # --- settings ---
    def settings(self) -> RunSettings:
        return RunSettings(
            preset=self.preset.currentText(),
            backbone=self.backbone.currentText(),
            device=self.device_id(),
            batch=self.batch.value(),
            input_hw=(self.input_h.value(), self.input_h.value()),
            dtype=self.dtype.currentText(),
            mode=str(self.mode.currentData()),
            optimizer=self.optimizer.currentText(),
            iterations=self.iterations.value(),
        )

    def apply_settings(self, d: dict[str, Any]) -> None:
        """Restore saved settings (unknown or invalid values are skipped, never raised)."""

        def pick(combo: QComboBox, value: object, data: bool = False) -> None:
            i = combo.findData(value) if data else combo.findText(str(value))
            if i >= 0:
                combo.setCurrentIndex(i)

        pick(self.dtype, d.get("dtype"))
        pick(self.mode, d.get("mode"), data=True)
        pick(self.optimizer, d.get("optimizer"))
        for spin, key in ((self.batch, "batch"), (self.iterations, "iterations")):
            v = d.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                spin.setValue(v)
        hw = d.get("input_hw")
        if isinstance(hw, list | tuple) and hw and isinstance(hw[0], int):
            self.input_h.setValue(int(hw[0]))
        dev = d.get("device")
        if isinstance(dev, str):
            self.select_device(dev)
        self._push()

    def _push(self, *_: object) -> None:
        """What the widgets show becomes the session's current settings (an event only when it changed)."""
        self.session.set_settings(self.settings())

    def _on_session_settings(self, s: RunSettings) -> None:
        """Settings set on the session elsewhere show here (preset and backbone follow the head instead)."""
        if s != self.settings():
            self.apply_settings(s.to_dict())

    def set_preset_label(self, name: str) -> None:
        """Show which preset the head is (or "custom" after an edit) without emitting."""
        i = self.preset.findText(name if name in PRESET_NAMES else CUSTOM)
        self.preset.blockSignals(True)
        self.preset.setCurrentIndex(i)
        self.preset.blockSignals(False)
        self._push()

    def set_backbone(self, name: str) -> None:
        self.backbone.blockSignals(True)
        self.backbone.setCurrentText(name)
        self.backbone.blockSignals(False)
        self._push()

    def _on_preset(self, _i: int) -> None:
        name = self.preset.currentText()
        if name != CUSTOM:
            self.presetChosen.emit(name)

    def _on_backbone(self, *_: object) -> None:
        self.backboneChosen.emit(self.backbone.currentText())

    def _on_setting(self, *_: object) -> None:
        self._push()
        self.settingsChanged.emit()

    def _on_context(self, *_: object) -> None:
        self._push()
        self.contextChanged.emit(self.batch.value(), (self.input_h.value(), self.input_h.value()))
        self.settingsChanged.emit()

    def _on_mode(self, *_: object) -> None:
        self.optimizer.setEnabled(self.mode.currentData() == "train-step" and not self._running)

    # --- devices ---
    def set_devices(self, devices: Sequence[DeviceChoice], select: str | None = None) -> None:
        current = select or self.device_id()
        self._devices = list(devices) or [CPU_CHOICE]
        self.device.blockSignals(True)
        self.device.clear()
        for d in self._devices:
            self.device.addItem(d.text(), d.id)
        self.device.blockSignals(False)
        self.select_device(current)
        self._push()

    def devices(self) -> list[DeviceChoice]:
        return list(self._devices)

    def select_device(self, device_id: str) -> None:
        i = self.device.findData(device_id)
        if i >= 0:
            self.device.setCurrentIndex(i)

    def device_id(self) -> str:
        data = self.device.currentData()
        return str(data) if data else "cpu"

    def device_choice(self) -> DeviceChoice:
        return next((d for d in self._devices if d.id == self.device_id()), CPU_CHOICE)

    # --- state ---
    def set_blocked(self, reason: str) -> None:
        """Disable Run with ``reason`` shown (empty: runnable)."""
        self._blocked_reason = reason
        if reason:
            self.reason.setText(f"Cannot run — {reason}")
            self.reason.setToolTip(reason)
            self.reason.show()
        else:
            self.reason.clear()
            self.reason.hide()
        self._update_buttons()

    @property
    def blocked_reason(self) -> str:
        return self._blocked_reason

    def set_running(self, running: bool) -> None:
        self._running = running
        for w in (
            self.preset,
            self.backbone,
            self.device,
            self.batch,
            self.input_h,
            self.dtype,
            self.mode,
            self.iterations,
        ):
            w.setEnabled(not running)
        self._on_mode()
        if running:
            self.progress.setValue(0)
            self.progress.setFormat("starting…")
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.run_button.setEnabled(not self._running and not self._blocked_reason)
        self.run_button.setToolTip(
            f"Cannot run: {self._blocked_reason}" if self._blocked_reason else "Run (Ctrl+R)"
        )
        self.cancel_button.setEnabled(self._running)

    def show_progress(self, fraction: float, phase: str = "", module: str = "", message: str = "") -> None:
        pct = max(0.0, min(1.0, fraction))
        self.progress.setValue(int(pct * 1000))
        parts = [f"{pct:.0%}"] + [p for p in (phase, module) if p]
        if message and not module:
            parts.append(message)
        self.progress.setFormat(_literal(" · ".join(parts)))

    def show_status(self, text: str, fraction: float | None = None) -> None:
        if fraction is not None:
            self.progress.setValue(int(max(0.0, min(1.0, fraction)) * 1000))
        self.progress.setFormat(_literal(text))

    def progress_text(self) -> str:
        return self.progress.format().replace(_ZWSP, "")


_ZWSP = "\u200b"


def _literal(text: str) -> str:
    """QProgressBar's format expands %p, %v, %m (and does not unescape %%): break those pairs up."""
    for key in ("%p", "%v", "%m"):
        text = text.replace(key, f"%{_ZWSP}{key[1]}")
    return text
