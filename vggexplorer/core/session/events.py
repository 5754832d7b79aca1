"""A tiny event: plain callbacks, called in the order they connected, on the thread that emits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Event"]

T = TypeVar("T")


class Event(Generic[T]):
    """``connect(cb)`` / ``disconnect(cb)`` / ``emit(value)``: every connected ``cb(value)`` is called.

    A callback that disconnects (itself or another) while the event is being emitted does not disturb that
    emission: the callbacks called are the ones connected when ``emit`` began. Exceptions propagate.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._callbacks: list[Callable[[T], object]] = []

    def connect(self, callback: Callable[[T], object]) -> Callable[[T], object]:
        """Call ``callback(value)`` on every emit (once, however often it is connected). Returns it, so
        that it can decorate a function."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[[T], object]) -> None:
        """Stop calling ``callback`` (ValueError when it is not connected)."""
        self._callbacks.remove(callback)

    def emit(self, value: T) -> None:
        for cb in list(self._callbacks):
            cb(value)

    def __contains__(self, callback: object) -> bool:
        return callback in self._callbacks

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {len(self._callbacks)} callbacks)"
