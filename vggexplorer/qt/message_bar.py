"""The window's message strip: errors, out-of-memory and cancellations shown without a modal dialog."""

from __future__ import annotations

from typing import ClassVar

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class MessageBar(QFrame):
    """A non-modal, dismissible message strip (errors, OOM, cancellations): the app stays usable."""

    dismissed = Signal()

    STYLES: ClassVar[dict[str, str]] = {
        "error": "background:#fdecea; border:1px solid #e0a09a; color:#6d1a12;",
        "warning": "background:#fff6e0; border:1px solid #e6c274; color:#5c4300;",
        "info": "background:#e8f1fb; border:1px solid #9dbce0; color:#12355b;",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.level = ""
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setObjectName("messageText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QPushButton("Details")
        self.details_button.setCheckable(True)
        self.close_button = QPushButton("✕")
        self.close_button.setObjectName("messageClose")
        self.close_button.setFlat(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.setFixedWidth(28)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(160)
        self.details.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.icon)
        row.addWidget(self.text, 1)
        row.addWidget(self.details_button)
        row.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addLayout(row)
        layout.addWidget(self.details)
        self.details_button.toggled.connect(self.details.setVisible)
        self.close_button.clicked.connect(self.dismiss)
        self.hide()

    def show_message(self, level: str, text: str, details: str = "") -> None:
        self.level = level
        self.setStyleSheet(f"#messageBar {{ {self.STYLES.get(level, self.STYLES['info'])} }}")
        self.icon.setText({"error": "⛔", "warning": "⚠", "info": "ℹ"}.get(level, ""))
        self.text.setText(text)
        self.details.setPlainText(details)
        self.details_button.setVisible(bool(details))
        self.details_button.setChecked(False)
        self.show()

    def dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()
