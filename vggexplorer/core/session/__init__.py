"""The session: a Qt-free model of what the user has open, for the Qt views to bind to.

It owns the runs (each ``RunResult`` with a session id; names editable), the selection (the ticked runs
that are overlaid and compared, and the current run), the current run settings (``RunSettings``: what the
run controls hold) and the current prediction (the latest answer shown). Its mutators are the only way to
change it and each emits one event. Events are plain callbacks — :class:`~.events.Event` with
``connect``/``disconnect``/``emit``, no Qt and no extra dependency (psygnal is not installed); the views
call back on the thread that mutated the model, which is the GUI thread.

``settings.py`` holds the ONE mapping from GUI settings to ``RunConfig`` (:func:`~.settings.run_config`).
The package sits above results and predict and below qt; importing it never imports torch or Qt.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Event": "events",
    "RunsChange": "model",
    "Selection": "model",
    "SessionEvents": "model",
    "SessionModel": "model",
    "RunSettings": "settings",
    "blocked_reason": "settings",
    "head_label": "settings",
    "preset_of": "settings",
    "run_config": "settings",
    "settings_label": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
