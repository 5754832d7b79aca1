"""Driving a generator to its end in tests: what it yielded, and what it returned."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


def drive(gen: Generator[Any, None, Any]) -> tuple[list[Any], Any]:
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as s:
            return out, s.value
