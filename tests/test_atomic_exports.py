"""Exports are atomic: a temporary sibling, then a rename. A failure never leaves a half file and never
clobbers the old one; no temporary file is left behind.

Every exporter (run.json, memory.csv, head JSON, PNG, SVG, the CLI's plots, memory_viz snapshots, GPU
profiles, the compare tables) is driven into three failures, with an old file in place:

(a) a read-only folder — with ``chmod 0o500`` when not root; as root (where chmod stops nothing) the kernel's
    rule is simulated exactly: creating, renaming or removing an entry in the folder fails with EACCES,
    while opening an *existing* file for writing still works (so a non-atomic writer would clobber the old
    file here as it would in reality). Also: a path whose parent is a file (ENOTDIR, no simulation).
(b) a full disk: ENOSPC from the file's ``write`` after some bytes reached the disk, or from ``fsync``;
(c) an exception inside the producer, after part of the output was written.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import vggexplorer.core.results.runfile as runfile
from vggexplorer.core.allocator.snapshot_export import export_snapshot
from vggexplorer.core.model.head import HeadSpec, preset
from vggexplorer.core.results.result import RunResult
from vggexplorer.core.results.runfile import save_run, write_csv
from vggexplorer.core.results.synthetic import synthetic_run

OLD = b"OLD CONTENT, must survive every failure\n"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def result() -> RunResult:
    return synthetic_run(name="A", head="fc", input_hw=64, batch=1)


TRACE = [("alloc", 0x7F0000000000 + 512 * i, 512, i, f"frame {i}") for i in range(200)]


def _export() -> Any:
    return pytest.importorskip("vggexplorer.qt.plots.export")


def _gpu_profile() -> Any:
    from vggexplorer.core.predict.gpus import resolve_gpu

    return resolve_gpu("h100", None)


# name -> (write(result, path), the producer to break: (module-or-class, attribute) or None)
Writer = Callable[[RunResult, Path], None]
EXPORTERS: dict[str, Writer] = {
    "run.json": lambda r, p: save_run(r, p),
    "memory.csv": lambda r, p: write_csv(r, p),
    "head.json": lambda r, p: preset("fcn").save(p),
    "snapshot.pickle": lambda r, p: export_snapshot(TRACE, p),
    "gpu-profile.json": lambda r, p: _gpu_profile().save(p),
    "export_png": lambda r, p: _export().export_png(r, p, 400, 300),
    "export_svg": lambda r, p: _export().export_svg(r, p, 400, 300),
    "export_run_plots-png": lambda r, p: _export().export_run_plots(r, p, None, 400, 300),
    "export_run_plots-svg": lambda r, p: _export().export_run_plots(r, None, p, 400, 300),
}
SUFFIX = {"export_png": ".png", "export_run_plots-png": ".png"}
QT = {"export_png", "export_svg", "export_run_plots-png", "export_run_plots-svg"}
#: exporters whose bytes pass through ``fileio.atomic_open`` (os.fdopen + write + fsync); PNGs are written
#: by Qt into the temporary name (``atomic_write_via``)
THROUGH_FDOPEN = {n for n in EXPORTERS if n not in {"export_png", "export_run_plots-png"}}


def target(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "out"
    d.mkdir(exist_ok=True)
    p = d / f"{name}{SUFFIX.get(name, '.dat')}"
    p.write_bytes(OLD)
    return p


def assert_untouched(p: Path) -> None:
    assert p.read_bytes() == OLD
    assert sorted(x.name for x in p.parent.iterdir()) == [p.name], "a temporary or half file was left"


@pytest.fixture(params=sorted(EXPORTERS))
def exporter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name in QT:
        request.getfixturevalue("qapp")
    return name


# -------------------------------------------------------------------------------------------- success


def test_success_replaces_the_file_whole_with_normal_permissions(
    exporter: str, tmp_path: Path, result: RunResult
) -> None:
    p = target(tmp_path, exporter)
    inode = p.stat().st_ino
    EXPORTERS[exporter](result, p)
    data = p.read_bytes()
    assert data != OLD and len(data) > 100
    assert p.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert sorted(x.name for x in p.parent.iterdir()) == [p.name]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    if p.suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    elif exporter.startswith("export_") and "svg" in exporter:
        assert data.rstrip().endswith(b"</svg>")


# ------------------------------------------------------------------------------------ (a) read-only dir


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if not IS_ROOT:
        folder.chmod(0o500)
        try:
            yield "chmod 0o500"
        finally:
            folder.chmod(0o700)
        return
    real_open, real_replace, real_rename, real_unlink = os.open, os.replace, os.rename, os.unlink

    def inside(path: Any) -> bool:
        return Path(os.path.abspath(os.fsdecode(path))).parent == folder

    def denied(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & os.O_CREAT and inside(path) and not os.path.exists(path):
            raise denied(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        if inside(src) or inside(dst):
            raise denied(dst)
        real_replace(src, dst, **kw)

    def rename(src: Any, dst: Any, **kw: Any) -> None:
        if inside(src) or inside(dst):
            raise denied(dst)
        real_rename(src, dst, **kw)

    def unlink(path: Any, **kw: Any) -> None:
        if inside(path):
            raise denied(path)
        real_unlink(path, **kw)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "unlink", unlink)
    try:
        yield "simulated (root)"
    finally:
        monkeypatch.undo()


def test_read_only_folder(
    exporter: str, tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = target(tmp_path, exporter)
    with read_only(p.parent, monkeypatch), pytest.raises(OSError) as info:
        EXPORTERS[exporter](result, p)
    assert info.value.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    assert_untouched(p)


def test_the_read_only_simulation_stops_creation_but_not_clobbering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control for the root case: the simulated folder behaves like a real read-only one, so a writer that
    overwrote the file in place would be caught by the tests above."""
    d = tmp_path / "ro"
    d.mkdir()
    old = d / "old.txt"
    old.write_bytes(OLD)
    with read_only(d, monkeypatch):
        with pytest.raises(PermissionError):  # what tempfile.mkstemp does
            os.open(d / "new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with pytest.raises(PermissionError):
            os.replace(old, d / "other.txt")
        old.write_bytes(b"clobbered")  # an existing, writable file: allowed, as in a real read-only folder
    assert old.read_bytes() == b"clobbered"


def test_parent_is_a_file(exporter: str, tmp_path: Path, result: RunResult) -> None:
    f = tmp_path / "not-a-folder"
    f.write_bytes(OLD)
    with pytest.raises(OSError) as info:
        EXPORTERS[exporter](result, f / f"x{SUFFIX.get(exporter, '.dat')}")
    assert info.value.errno in (errno.ENOTDIR, errno.EEXIST)  # EEXIST: GpuProfile.save's mkdir(parents)
    assert f.read_bytes() == OLD and sorted(x.name for x in tmp_path.iterdir()) == ["not-a-folder"]


# --------------------------------------------------------------------------------------- (b) full disk


class _FullDisk(io.FileIO):
    """A file on a disk with ``budget`` bytes left: writes go through until then, then ENOSPC."""

    budget = 0

    def write(self, b: Any) -> int:
        n = min(len(memoryview(b)), type(self).budget)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        type(self).budget -= n
        return super().write(memoryview(b)[:n])


def _full_disk_fdopen(budget: int) -> Callable[..., Any]:
    real = os.fdopen

    def fdopen(fd: int, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if "w" not in mode or "b" not in mode:
            return real(fd, mode, *a, **kw)
        _FullDisk.budget = budget
        return io.BufferedWriter(_FullDisk(fd, "w", closefd=True), buffer_size=64)

    return fdopen


def test_disk_full_during_write(
    exporter: str, tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = target(tmp_path, exporter)
    if exporter in THROUGH_FDOPEN:
        monkeypatch.setattr(os, "fdopen", _full_disk_fdopen(budget=37))
    else:  # Qt writes the PNG: a writer that gets half way and then finds the disk full
        export = _export()

        def half(widget: Any, path: Path) -> None:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 29)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(export, "_grab_png", half)
    with pytest.raises(OSError) as info:
        EXPORTERS[exporter](result, p)
    assert info.value.errno == errno.ENOSPC
    assert_untouched(p)


def test_disk_full_at_fsync(
    exporter: str, tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delayed allocation: the writes were buffered, the disk turns out full when the data is flushed."""
    p = target(tmp_path, exporter)
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        EXPORTERS[exporter](result, p)
    assert info.value.errno == errno.ENOSPC and calls, "the file was renamed into place without an fsync"
    assert_untouched(p)


# ------------------------------------------------------------------------------ (c) producer exception


class Boom(Exception):
    pass


def break_producer(exporter: str, result: RunResult, monkeypatch: pytest.MonkeyPatch) -> RunResult:
    """Make the producer fail part way; returns the (possibly patched) result to export."""
    if exporter == "run.json":
        monkeypatch.setattr(runfile, "category_peaks", lambda r: (_ for _ in ()).throw(Boom("producer")))
    elif exporter == "memory.csv":  # fail after some rows are written
        import copy

        r = copy.copy(result)
        n = iter(range(10**9))
        real = RunResult.string
        n_half = len(result.tensor) + len(result.allocator)  # two string lookups per row: half the rows

        def string(i: int) -> str:
            if next(n) > n_half:
                raise Boom("producer")
            return real(result, i)

        r.string = string  # type: ignore[method-assign]
        return r
    elif exporter == "head.json":
        monkeypatch.setattr(HeadSpec, "to_json", lambda self: (_ for _ in ()).throw(Boom("producer")))
    elif exporter == "snapshot.pickle":
        import vggexplorer.core.allocator.snapshot_export as snapshot

        real_build = snapshot.build_snapshot_dict

        def build(*a: Any, **kw: Any) -> Any:
            real_build(*a, **kw)
            raise Boom("producer")

        monkeypatch.setattr(snapshot, "build_snapshot_dict", build)
    elif exporter == "gpu-profile.json":
        from vggexplorer.core.predict.gpus import GpuProfile

        monkeypatch.setattr(GpuProfile, "to_dict", lambda self: (_ for _ in ()).throw(Boom("producer")))
    elif exporter in ("export_png", "export_run_plots-png"):
        export = _export()

        def half(widget: Any, path: Path) -> None:
            path.write_bytes(b"\x89PNG\r\n\x1a\nhalf")
            raise Boom("producer")

        monkeypatch.setattr(export, "_grab_png", half)
    else:  # SVG
        export = _export()
        monkeypatch.setattr(export, "svg_bytes", lambda w: (_ for _ in ()).throw(Boom("producer")))
    return result


def test_producer_exception(
    exporter: str, tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = target(tmp_path, exporter)
    r = break_producer(exporter, result, monkeypatch)
    with pytest.raises(Boom):
        EXPORTERS[exporter](r, p)
    assert_untouched(p)


def test_csv_producer_really_failed_mid_write(
    tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the CSV case above failed after rows had been written to the temporary file."""
    p = target(tmp_path, "memory.csv")
    sizes: list[int] = []
    real_unlink = os.unlink

    def unlink(path: Any, **kw: Any) -> None:
        sizes.append(os.stat(path).st_size)
        real_unlink(path, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    big = synthetic_run(name="big", head="fc", input_hw=64, batch=1, extra_events=20_000)
    r = break_producer("memory.csv", big, monkeypatch)
    with pytest.raises(Boom):
        write_csv(r, p)
    assert sizes and sizes[0] > 1000  # a half file existed — under the temporary name only
    assert_untouched(p)


# ------------------------------------------------------------------------------------ the CLI exports


def test_cli_export_into_a_read_only_folder(
    tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggexplorer.cli import main

    run_file = tmp_path / "run.json"
    save_run(result, run_file)
    out = tmp_path / "out"
    out.mkdir()
    (out / "memory.csv").write_bytes(OLD)
    with read_only(out, monkeypatch):
        assert main(["export", str(run_file), "--csv", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vggexplorer: error: cannot write to")
    assert (out / "memory.csv").read_bytes() == OLD and sorted(x.name for x in out.iterdir()) == [
        "memory.csv"
    ]


def test_cli_compare_on_a_full_disk(
    tmp_path: Path, result: RunResult, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggexplorer.cli import main

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    save_run(result, a)
    save_run(synthetic_run(name="B", head="fcn", input_hw=384, batch=1), b)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("compare.md", "compare.csv"):
        (out / name).write_bytes(OLD)
    monkeypatch.setattr(os, "fdopen", _full_disk_fdopen(budget=10))
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    for name in ("compare.md", "compare.csv"):
        assert (out / name).read_bytes() == OLD
    assert sorted(x.name for x in out.iterdir()) == ["compare.csv", "compare.md"]
