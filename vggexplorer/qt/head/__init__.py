"""The head editor: the Qt side of editing a HeadSpec layer by layer.

``head_model`` is :class:`HeadListModel`, the Qt list model over the core's undoable ``HeadDocument`` (every
edit goes through the document; the model maps its events to row inserts, moves and removals);
``head_view`` draws the rows with their shapes and problems and takes drops from the palette and drags
within itself; ``palette`` lists the layer types to drag in; ``properties`` edits one layer's parameters
(bad values are shown and never applied); ``undo`` makes each edit one ``QUndoCommand``.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "head_model": ["HeadListModel"],
        "head_view": ["HeadListView", "HeadView"],
        "palette": ["PaletteView"],
        "properties": ["PropertyPanel"],
        "undo": ["HeadCommand", "make_stack"],
    },
)
