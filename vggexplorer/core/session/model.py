"""The session: the runs (each with a session id), the selection, the current settings and prediction.

The mutators are the only way to change it, and each emits exactly one event (none when nothing changed):

=====================  ==========================  ==================================================
mutator                event                       payload
=====================  ==========================  ==================================================
``add_run``            ``events.runs``             ``RunsChange("added", id, index, selection)``
``remove_run``         ``events.runs``             ``RunsChange("removed", id, index, selection)``
``rename_run``         ``events.runs``             ``RunsChange("renamed", id, index, selection)``
``set_selection``      ``events.selection``        ``Selection`` (also ``set_ticked``/``set_current``)
``set_settings``       ``events.settings``         ``RunSettings``
``set_prediction``     ``events.prediction``       the prediction answer or None
=====================  ==========================  ==================================================

Adding a run ticks it and makes it current (by default) and removing one takes it out of the selection:
that new selection rides in the ``runs`` event's payload, so a view of the selection listens to both
``runs`` and ``selection``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from vggexplorer.core.results.result import RunResult
from vggexplorer.core.session.events import Event
from vggexplorer.core.session.settings import RunSettings

if TYPE_CHECKING:
    from vggexplorer.core.predict.service import PredictionAnswer

__all__ = ["KEEP", "RunsChange", "Selection", "SessionEvents", "SessionModel"]


@dataclass(frozen=True)
class Selection:
    """The ticked runs (overlaid and compared), in list order, and the current run (the layer table's)."""

    ticked: tuple[int, ...] = ()
    current: int | None = None


@dataclass(frozen=True)
class RunsChange:
    """A run added, removed or renamed; ``index`` is its row (before removal); ``selection`` the one
    after the change."""

    kind: Literal["added", "removed", "renamed"]
    run_id: int
    index: int
    selection: Selection


@dataclass
class SessionEvents:
    runs: Event[RunsChange] = field(default_factory=lambda: Event("runs"))
    selection: Event[Selection] = field(default_factory=lambda: Event("selection"))
    settings: Event[RunSettings] = field(default_factory=lambda: Event("settings"))
    prediction: Event[PredictionAnswer | None] = field(default_factory=lambda: Event("prediction"))


class _Keep:
    """``set_selection(current=KEEP)``: leave the current run as it is."""


KEEP = _Keep()


class SessionModel:
    """What the user has in front of them, without Qt. Runs are identified by the id ``add_run`` returns
    (a run's name is editable and need not be unique in files; the object is the one added)."""

    def __init__(self, settings: RunSettings | None = None) -> None:
        self.events = SessionEvents()
        self._runs: dict[int, RunResult] = {}  # insertion order is list order
        self._next_id = 1
        self._ticked: set[int] = set()
        self._current: int | None = None
        self._settings = settings if settings is not None else RunSettings()
        self._prediction: PredictionAnswer | None = None

    # --- reading ---------------------------------------------------------------------------------------
    def runs(self) -> list[RunResult]:
        return list(self._runs.values())

    def run_ids(self) -> list[int]:
        return list(self._runs)

    def run(self, run_id: int) -> RunResult:
        """The run with this id (KeyError when there is none)."""
        return self._runs[run_id]

    def id_of(self, run: RunResult) -> int | None:
        """The id of this very run object (None when it is not in the session)."""
        return next((i for i, r in self._runs.items() if r is run), None)

    def index_of(self, run_id: int) -> int:
        return self.run_ids().index(run_id)

    @property
    def selection(self) -> Selection:
        return Selection(tuple(i for i in self._runs if i in self._ticked), self._current)

    def ticked(self) -> list[RunResult]:
        """The ticked runs, in list order."""
        return [r for i, r in self._runs.items() if i in self._ticked]

    def current(self) -> RunResult | None:
        return self._runs[self._current] if self._current is not None else None

    @property
    def current_id(self) -> int | None:
        return self._current

    @property
    def settings(self) -> RunSettings:
        return self._settings

    @property
    def prediction(self) -> PredictionAnswer | None:
        """The latest prediction answer shown (None: none, or the head cannot run)."""
        return self._prediction

    def unique_name(self, base: str) -> str:
        """``base``, or ``base #2``, ``#3`` … — the first no run in the session has."""
        names = {r.name for r in self._runs.values()}
        if base not in names:
            return base
        k = 2
        while f"{base} #{k}" in names:
            k += 1
        return f"{base} #{k}"

    # --- mutators --------------------------------------------------------------------------------------
    def add_run(self, run: RunResult, *, ticked: bool = True, current: bool = True) -> int:
        """Append ``run`` (named ``run N`` when it has no name); returns its id."""
        if not run.name:
            run.name = f"run {len(self._runs) + 1}"
        run_id = self._next_id
        self._next_id += 1
        self._runs[run_id] = run
        if ticked:
            self._ticked.add(run_id)
        if current:
            self._current = run_id
        self.events.runs.emit(RunsChange("added", run_id, len(self._runs) - 1, self.selection))
        return run_id

    def remove_run(self, run_id: int) -> None:
        """Remove the run; when it was current, the run now in its row (else the one above) becomes
        current."""
        ids = self.run_ids()
        index = ids.index(run_id)  # ValueError when unknown
        del self._runs[run_id]
        self._ticked.discard(run_id)
        if self._current == run_id:
            rest = self.run_ids()
            self._current = rest[min(index, len(rest) - 1)] if rest else None
        self.events.runs.emit(RunsChange("removed", run_id, index, self.selection))

    def rename_run(self, run_id: int, name: str) -> bool:
        """Rename (surrounding blanks dropped); False, and no event, for a blank or unchanged name."""
        run = self._runs[run_id]
        name = name.strip()
        if not name or name == run.name:
            return False
        run.name = name
        self.events.runs.emit(RunsChange("renamed", run_id, self.index_of(run_id), self.selection))
        return True

    def set_selection(self, ticked: Iterable[int] | None = None, current: int | _Keep | None = KEEP) -> None:
        """Tick exactly ``ticked`` (None: leave the ticks) and make ``current`` current (omitted: leave it;
        None: no current run). Unknown ids raise KeyError."""
        new_ticked = self._ticked if ticked is None else set(ticked)
        for i in new_ticked:
            if i not in self._runs:
                raise KeyError(i)
        new_current = self._current if isinstance(current, _Keep) else current
        if new_current is not None and new_current not in self._runs:
            raise KeyError(new_current)
        if new_ticked == self._ticked and new_current == self._current:
            return
        self._ticked, self._current = set(new_ticked), new_current
        self.events.selection.emit(self.selection)

    def set_ticked(self, run_id: int, on: bool) -> None:
        self.set_selection(self._ticked | {run_id} if on else self._ticked - {run_id})

    def set_current(self, run_id: int | None) -> None:
        self.set_selection(current=run_id)

    def set_settings(self, settings: RunSettings) -> None:
        if settings != self._settings:
            self._settings = settings
            self.events.settings.emit(settings)

    def set_prediction(self, prediction: PredictionAnswer | None) -> None:
        if prediction is not self._prediction:
            self._prediction = prediction
            self.events.prediction.emit(prediction)
