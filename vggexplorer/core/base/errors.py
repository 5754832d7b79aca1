"""Errors the core raises for bad user input. Each carries a message a user can act on."""

from __future__ import annotations


class VGGExplorerError(Exception):
    """Base class for errors caused by user input (files, parameters, configs)."""


class HeadError(VGGExplorerError):
    """A head file or a layer's parameters are invalid.

    ``layer`` is the 0-based head index (or None for file-level problems), ``field`` the parameter name.
    """

    def __init__(self, message: str, *, layer: int | None = None, field: str | None = None) -> None:
        where = ""
        if layer is not None:
            where = f"layer {layer}"
            if field is not None:
                where += f", field '{field}'"
            where += ": "
        elif field is not None:
            where = f"field '{field}': "
        super().__init__(where + message)
        self.layer = layer
        self.field = field
        self.bare_message = message
