"""Property panel for the selected head layer, built from the layer type's ``ParamSpec``s.

Every keystroke is validated with the core's own rules (``LayerSpec.with_params``); an invalid value is shown
inline (red field + message) and is never applied, and the text stays so nothing typed is lost. A valid value
is applied on Enter or when the field loses focus, as one undo step. Check boxes and choices apply at once.
"""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from vggexplorer.core.base.errors import HeadError
from vggexplorer.core.model.head import LayerSpec
from vggexplorer.core.model.layers import LAYER_TYPES, ParamSpec
from vggexplorer.core.model.shapes import fmt_shape
from vggexplorer.qt.head.head_model import HeadListModel, fmt_params

INVALID_STYLE = "QLineEdit { border: 1px solid #c0392b; background: #fdecea; }"


def format_value(spec: ParamSpec, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, tuple):
        return f"{v[0]}×{v[1]}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


_PAIR = re.compile(r"^\[?\(?\s*(-?\d+)\s*(?:[×x*,]|\s)\s*(-?\d+)\s*\]?\)?$", re.IGNORECASE)


def parse_value(spec: ParamSpec, text: str) -> Any:
    """Text from a field → a Python value the core validates (``ValueError`` for unparsable text)."""
    s = text.strip()
    if spec.kind == "int":
        try:
            return int(s.replace("_", "").replace(",", ""))
        except ValueError:
            raise ValueError(f"'{s}' is not a whole number") from None
    if spec.kind == "float":
        try:
            return float(s)
        except ValueError:
            raise ValueError(f"'{s}' is not a number") from None
    if spec.kind in ("size", "padding"):
        if s == "" and not spec.required and spec.default is None:
            return None
        if spec.kind == "padding" and s.lower() in ("same", "valid"):
            return s.lower()
        m = _PAIR.match(s)
        if m:
            return [int(m.group(1)), int(m.group(2))]
        try:
            return int(s)
        except ValueError:
            extra = ", 'same' or 'valid'" if spec.kind == "padding" else ""
            raise ValueError(f"'{s}' is not a size: use 7 or 7×5{extra}") from None
    return s


class PropertyPanel(QWidget):
    """Edits the parameters of the layer selected in the head view."""

    #: (name, message) whenever a field's validity changes; message "" when valid.
    validationChanged = Signal(str, str)

    def __init__(self, model: HeadListModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.row = -1
        self._type: str | None = None
        self.editors: dict[str, QWidget] = {}
        self.errors: dict[str, QLabel] = {}
        self._invalid: set[str] = set()

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel()
        self.title.setObjectName("propertiesTitle")
        self.title.setWordWrap(True)
        outer.addWidget(self.title)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setObjectName("propertiesInfo")
        outer.addWidget(self.info)
        self.form_host = QWidget()
        self.form = QFormLayout(self.form_host)
        self.form.setContentsMargins(0, 4, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        outer.addWidget(self.form_host)
        outer.addStretch(1)

        model.dataChanged.connect(self._refresh)
        model.modelReset.connect(self._on_reset)
        model.rowsRemoved.connect(self._on_rows_removed)
        self.set_row(-1)

    # --- which layer ---
    def set_row(self, row: int) -> None:
        self.row = row if 0 <= row < self.model.rowCount() else -1
        self._rebuild()

    def _on_reset(self) -> None:
        self.set_row(self.row)

    def _on_rows_removed(self, *_: object) -> None:
        if self.row >= self.model.rowCount():
            self.set_row(-1)

    def layer(self) -> LayerSpec | None:
        return self.model.spec.layers[self.row] if 0 <= self.row < len(self.model.spec.layers) else None

    # --- building the form ---
    def _rebuild(self) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors.clear()
        self.errors.clear()
        self._invalid.clear()
        lay = self.layer()
        self._type = lay.type if lay else None
        if lay is None:
            self.title.setText("<b>Properties</b>")
            self.info.setText("Select a layer in the head to edit its parameters.")
            return
        lt = LAYER_TYPES[lay.type]
        for spec in lt.params:
            editor = self._make_editor(spec, lay.get(spec.name))
            err = QLabel()
            err.setObjectName(f"error_{spec.name}")
            err.setWordWrap(True)
            err.setStyleSheet("color: #c0392b;")
            err.hide()
            host = QWidget()
            hl = QVBoxLayout(host)
            hl.setContentsMargins(0, 0, 0, 0)
            hl.setSpacing(1)
            hl.addWidget(editor)
            hl.addWidget(err)
            label = QLabel(spec.name)
            label.setToolTip(spec.help or spec.name)
            editor.setToolTip(self._tooltip(spec))
            self.form.addRow(label, host)
            self.editors[spec.name] = editor
            self.errors[spec.name] = err
        if not lt.params:
            self.form.addRow(QLabel(f"{lay.type} has no parameters."))
        self._refresh()

    def _tooltip(self, spec: ParamSpec) -> str:
        parts = [spec.help] if spec.help else []
        if spec.kind in ("size", "padding"):
            parts.append("one integer or H×W" + (", 'same' or 'valid'" if spec.kind == "padding" else ""))
        if spec.minimum is not None:
            parts.append(f"min {spec.minimum:g}")
        if spec.maximum is not None:
            parts.append(f"max {spec.maximum:g}")
        if not spec.required:
            parts.append(f"default {format_value(spec, spec.default) or 'none'}")
        return " · ".join(parts)

    def _make_editor(self, spec: ParamSpec, value: Any) -> QWidget:
        if spec.kind == "bool":
            box = QCheckBox()
            box.setObjectName(f"edit_{spec.name}")
            box.setChecked(bool(value))
            box.toggled.connect(lambda v, n=spec.name: self._apply(n, bool(v)))
            return box
        if spec.kind == "choice":
            combo = QComboBox()
            combo.setObjectName(f"edit_{spec.name}")
            combo.addItems(list(spec.choices))
            combo.setCurrentText(str(value))
            combo.currentTextChanged.connect(lambda v, n=spec.name: self._apply(n, v))
            return combo
        edit = QLineEdit(format_value(spec, value))
        edit.setObjectName(f"edit_{spec.name}")
        if spec.kind in ("size",) and not spec.required and spec.default is None:
            edit.setPlaceholderText("= kernel_size")
        edit.textEdited.connect(lambda _t, s=spec: self._validate(s))
        edit.editingFinished.connect(lambda s=spec: self._commit(s))
        return edit

    # --- validation and applying ---
    def _check(self, spec: ParamSpec, text: str) -> tuple[Any, str]:
        """(value, "") when ``text`` is valid for the selected layer, else (None, message)."""
        lay = self.layer()
        if lay is None:
            return None, "no layer selected"
        try:
            value = parse_value(spec, text)
            lay.with_params(self.row, **{spec.name: value})
        except ValueError as e:
            return None, str(e)
        except HeadError as e:
            return None, e.bare_message
        return value, ""

    def _show(self, name: str, message: str) -> None:
        editor, err = self.editors.get(name), self.errors.get(name)
        if editor is None or err is None:
            return
        was = name in self._invalid
        if message:
            self._invalid.add(name)
            err.setText(message)
            err.show()
            editor.setStyleSheet(INVALID_STYLE)
        else:
            self._invalid.discard(name)
            err.clear()
            err.hide()
            editor.setStyleSheet("")
        if was != bool(message) or message:
            self.validationChanged.emit(name, message)

    def _validate(self, spec: ParamSpec) -> bool:
        editor = self.editors.get(spec.name)
        if not isinstance(editor, QLineEdit):
            return True
        _, message = self._check(spec, editor.text())
        self._show(spec.name, message)
        return not message

    def _commit(self, spec: ParamSpec) -> None:
        editor = self.editors.get(spec.name)
        lay = self.layer()
        if not isinstance(editor, QLineEdit) or lay is None:
            return
        value, message = self._check(spec, editor.text())
        self._show(spec.name, message)
        if message:
            return  # not applied; the text stays for the user to fix
        self._apply(spec.name, value)

    def _apply(self, name: str, value: Any) -> None:
        lay = self.layer()
        if lay is None:
            return
        try:
            new = lay.with_params(self.row, **{name: value})
        except HeadError as e:
            self._show(name, e.bare_message)
            self._refresh()  # a check box / combo that was refused goes back to the document's value
            return
        if new.get(name) == lay.get(name):
            return
        self.model.push_update(self.row, **{name: value})

    def is_invalid(self, name: str) -> bool:
        return name in self._invalid

    # --- document → fields ---
    def _refresh(self, *_: object) -> None:
        lay = self.layer()
        if lay is None or lay.type != self._type:
            if (lay.type if lay else None) != self._type:
                self._rebuild()
            return
        shape = self.model.row_shape(self.row)
        issue = self.model.row_issue(self.row)
        lt = LAYER_TYPES[lay.type]
        name = shape.name if shape else ""
        self.title.setText(
            f"<b>{self.row} · {lay.type}</b>" + (f" <span style='color:gray'>{name}</span>" if name else "")
        )
        lines = [lt.help] if lt.help else []
        if shape is not None:
            lines.append(f"{fmt_shape(shape.input_shape, True)} → {fmt_shape(shape.output_shape, True)}")
        lines.append(f"parameters: {fmt_params(lay.param_count)} ({lay.param_count:,})")
        if issue is not None:
            lines.append(f"<span style='color:#a01414'>⚠ {issue.message}</span>")
            if issue.fix:
                lines.append(f"<span style='color:#1e6428'>fix: {issue.fix}</span>")
        self.info.setText("<br>".join(lines))
        for spec in lt.params:
            editor = self.editors.get(spec.name)
            value = lay.get(spec.name)
            if isinstance(editor, QLineEdit):
                if spec.name in self._invalid and editor.hasFocus():
                    continue  # keep what the user is typing
                text = format_value(spec, value)
                if spec.name in self._invalid:
                    continue  # invalid input stays visible until fixed or replaced
                if editor.text() != text:
                    editor.setText(text)
            elif isinstance(editor, QCheckBox):
                if editor.isChecked() != bool(value):
                    editor.blockSignals(True)
                    editor.setChecked(bool(value))
                    editor.blockSignals(False)
            elif isinstance(editor, QComboBox) and editor.currentText() != str(value):
                editor.blockSignals(True)
                editor.setCurrentText(str(value))
                editor.blockSignals(False)

    def focus_first(self) -> None:
        for editor in self.editors.values():
            editor.setFocus(Qt.FocusReason.OtherFocusReason)
            return
