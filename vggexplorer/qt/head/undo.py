"""Undo/redo for head edits: Qt's own ``QUndoStack`` with one ``QUndoCommand`` per edit kind.

Each command performs its edit through the ``HeadDocument`` (the only mutator) in ``redo`` and the inverse
edit in ``undo``. The command text is the step name shown in the Edit menu ("Undo Insert Conv2d").
An edit the document refuses (``HeadError``) is never pushed: ``push_edit`` checks it on a copy first.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QUndoCommand, QUndoStack

from vggexplorer.core.model.head import HeadDocument, HeadSpec, LayerSpec


class HeadCommand(QUndoCommand):
    """Base: holds the document; subclasses implement ``redo``/``undo`` as document edits."""

    def __init__(self, doc: HeadDocument, text: str) -> None:
        super().__init__(text)
        self.doc = doc


class InsertLayer(HeadCommand):
    def __init__(self, doc: HeadDocument, index: int, lay: LayerSpec) -> None:
        super().__init__(doc, f"Insert {lay.type}")
        self.index, self.lay = index, lay

    def redo(self) -> None:
        self.doc.insert(self.index, self.lay)

    def undo(self) -> None:
        self.doc.remove(self.index)


class RemoveLayer(HeadCommand):
    def __init__(self, doc: HeadDocument, index: int) -> None:
        self.lay = doc.spec.layers[index]
        super().__init__(doc, f"Remove {self.lay.type}")
        self.index = index

    def redo(self) -> None:
        self.doc.remove(self.index)

    def undo(self) -> None:
        self.doc.insert(self.index, self.lay)


class MoveLayer(HeadCommand):
    """Move the layer at ``src`` so that it ends up at ``dst`` (indices of the result)."""

    def __init__(self, doc: HeadDocument, src: int, dst: int) -> None:
        super().__init__(doc, f"Move {doc.spec.layers[src].type} to position {dst}")
        self.src, self.dst = src, dst

    def redo(self) -> None:
        self.doc.move(self.src, self.dst)

    def undo(self) -> None:
        self.doc.move(self.dst, self.src)


class ReplaceLayer(HeadCommand):
    def __init__(self, doc: HeadDocument, index: int, lay: LayerSpec, text: str = "") -> None:
        self.old = doc.spec.layers[index]
        super().__init__(doc, text or f"Replace {self.old.type} with {lay.type}")
        self.index, self.new = index, lay

    def redo(self) -> None:
        self.doc.replace(self.index, self.new)

    def undo(self) -> None:
        self.doc.replace(self.index, self.old)


class UpdateParams(HeadCommand):
    """Change constructor parameters of one layer (validated before the command is made)."""

    def __init__(self, doc: HeadDocument, index: int, changes: dict[str, Any]) -> None:
        self.old = doc.spec.layers[index]
        self.new = self.old.with_params(index, **changes)
        names = ", ".join(f"{k}={_short(v)}" for k, v in changes.items())
        super().__init__(doc, f"Set {names} of {self.old.type}")
        self.index, self.changes = index, changes

    def redo(self) -> None:
        self.doc.update(self.index, **self.changes)

    def undo(self) -> None:
        self.doc.replace(self.index, self.old)


class SetHead(HeadCommand):
    """Replace the whole head: load a file or a preset, change the backbone, make the chain consistent."""

    def __init__(self, doc: HeadDocument, spec: HeadSpec, text: str) -> None:
        super().__init__(doc, text)
        self.old, self.new = doc.spec, spec

    def redo(self) -> None:
        self.doc.reset(self.new, self.text())

    def undo(self) -> None:
        self.doc.reset(self.old, f"Undo {self.text()}")


def _short(v: object) -> str:
    if isinstance(v, tuple):
        return "×".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def make_stack(parent: Any = None) -> QUndoStack:
    stack = QUndoStack(parent)
    stack.setUndoLimit(500)
    return stack
