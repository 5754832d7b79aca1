"""Files in and out, safely.

Writes are atomic: a temporary file in the same folder, fsync, then rename. A failure (full disk, read-only
folder, an exception while producing the bytes) never leaves a half file and never clobbers the old one.

Reads are bounded: :func:`read_bounded` is the one way a user file (head, run, snapshot, cache entry) is
read — regular files only, at most a limit, every failure turned into the caller's own error type.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_readable(path: str) -> None:
    """mkstemp creates 0600 files; give the final file the permissions a plain open() would."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Open a temporary sibling of ``path``; on a clean exit it replaces ``path``, otherwise it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_via(path: Path, writer: Callable[[Path], None]) -> None:
    """For writers that insist on a file name (image exporters): write to a temp name, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    try:
        writer(Path(tmp))
        if not Path(tmp).exists() or Path(tmp).stat().st_size == 0:
            raise OSError(f"nothing was written to {path.name}")
        # the writer closed its file, maybe without fsync: flush the data to disk before the rename, or a
        # crash could leave an empty file under the final name (delayed allocation); ENOSPC can surface here
        wfd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(wfd)
        finally:
            os.close(wfd)
        _make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class UnreadableFile(ValueError):
    """A file refused before or while reading: not a regular file, or over the size limit."""


def read_regular_file(path: Path, limit: int, what: str = "file") -> bytes:
    """Read at most ``limit`` bytes of a regular file.

    Device files and FIFOs report size 0 (``/dev/zero`` would be read until memory runs out, a FIFO blocks
    forever), so anything that is not a regular file is refused before it is opened, and the read itself is
    bounded in case the file grows meanwhile. OSError propagates for missing or unreadable files.
    """
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise UnreadableFile(f"{path.name} is {kind}; choose a {what}")
    if st.st_size > limit:
        raise UnreadableFile(
            f"{path.name} is {st.st_size:,} bytes, over the limit for a {what} (at most {limit:,})"
        )
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnreadableFile(f"{path.name} grew over the limit for a {what} (at most {limit:,} bytes)")
    return data


def read_bounded(
    path: str | os.PathLike[str],
    limit: int,
    what: str,
    error: Callable[[str], Exception],
    *,
    refused: str = "",
) -> bytes:
    """:func:`read_regular_file`, with a refused file and an OS error both raised as ``error(message)``.

    ``refused`` prefixes the message of a refused file (a special file, or one over ``limit``).
    """
    p = Path(path)
    try:
        return read_regular_file(p, limit, what)
    except UnreadableFile as e:
        raise error(f"{refused}{e}") from None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
