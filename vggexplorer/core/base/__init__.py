"""Foundations every stage may use, and that use nothing of the project.

``errors`` holds the base exception (:class:`VGGExplorerError`: a message for the user, never a
traceback) and the head editor's :class:`HeadError`; ``units`` formats and parses byte counts
(``fmt_bytes``, ``parse_bytes``); ``fileio`` is the one way user files are read (regular files only,
bounded: ``read_bounded``) and written (atomically: a temporary sibling, fsync, rename).
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "errors": ["HeadError", "VGGExplorerError"],
        "fileio": [
            "UnreadableFile",
            "atomic_open",
            "atomic_write_bytes",
            "atomic_write_text",
            "read_bounded",
        ],
        "units": ["fmt_bytes", "fmt_signed_bytes", "parse_bytes"],
    },
)
