"""The session: a Qt-free model of what the user has open, for the Qt views to bind to.

It owns the runs (each ``RunResult`` with a session id; names editable), the selection (the ticked runs
that are overlaid and compared, and the current run), the current run settings (``RunSettings``: what the
run controls hold) and the current prediction (the latest answer shown). Its mutators are the only way to
change it and each emits one event. Events are plain callbacks — :class:`~.events.Event` with
``connect``/``disconnect``/``emit``: no Qt, and no extra dependency (a dozen lines do what psygnal would);
the views are called back on the thread that mutated the model, which is the GUI thread.

``settings.py`` holds the ONE mapping from GUI settings to ``RunConfig`` (:func:`~.settings.run_config`).
The package sits above results and predict and below qt; importing it never imports torch or Qt.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "events": ["Event"],
        "model": ["RunsChange", "Selection", "SessionEvents", "SessionModel"],
        "settings": [
            "RunSettings",
            "blocked_reason",
            "head_label",
            "preset_of",
            "run_config",
            "settings_label",
        ],
    },
)
