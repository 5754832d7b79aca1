"""On-disk cache of the predictor's batch models: a new process predicts a known config without torch.

A batch model holds one trace's event structure and every event's size as ``a + b × batch`` (see
``predict``). Tracing needs torch, and in a fresh process importing torch and its dispatch machinery takes
2-3 s on the 2-core machine; answering from a stored model takes milliseconds. A model is stored only
after a third trace (beyond the two it was fitted from) agreed with it, together with the batches where a
real trace agreed ("confirmed"): the predictor uses stored sizes as they are only for those batches, and
for the search over batch sizes, whose answer it confirms with real traces as before.

Key: SHA-256 of the config without batch, device and sampling settings, the version of torch (from package
metadata, which does not import torch), and the source of the modules that decide what a trace holds (so
an edited engine, tracer or CUDA mapping never meets an old entry). One file per key,
``<dir>/<key>.npz``: numpy arrays and one JSON string, read with ``allow_pickle=False``; written atomically.
A file that cannot be read or does not match is ignored and removed.

Directory: ``$VGGEXPLORER_CACHE_DIR``, else ``$XDG_CACHE_HOME/vggexplorer/predict``, else
``~/.cache/vggexplorer/predict``. ``VGGEXPLORER_CACHE_DIR=off`` turns the cache off. At most ``MAX_FILES``
entries are kept (least recently used go first).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vggexplorer.core.base.fileio import atomic_write_bytes, read_regular_file
from vggexplorer.core.predict.gpus import torch_version_string
from vggexplorer.core.results.result import Span

__all__ = ["FORMAT", "MAX_FILES", "CachedModel", "cache_dir", "cache_key", "load", "save"]

FORMAT = 1
#: packages whose code decides the events of a trace (the model, the engine's step program and tracer,
#: results' types, the CUDA mapping in predict): every ``.py`` file under them goes into the digest, so a
#: moved or new module changes the key without anyone keeping a list of file names
_TRACE_PACKAGES = ("base", "model", "results", "run", "predict")
_MAX_FILE_BYTES = 64 << 20
#: files kept; saving one more removes the least recently used (a stored model is ~60 KB for VGG11)
MAX_FILES = 256
_INT_COLUMNS = ("a", "b", "delta", "sid", "phase", "op", "module", "iteration", "category")


@dataclass
class CachedModel:
    """What a stored batch model holds (``predict`` turns it back into its own types)."""

    template_batch: int
    t: np.ndarray
    #: a, b, delta (at template_batch), sid, phase, op, module, iteration, category
    columns: dict[str, np.ndarray]
    #: strings, spans, geometry, layer_types, output_shape, param_bytes, rules, confirmed
    meta: dict[str, Any]

    @property
    def confirmed(self) -> set[int]:
        return {int(b) for b in self.meta.get("confirmed", [])}


def cache_dir() -> Path | None:
    """The cache directory (not created here), or None when the cache is turned off."""
    env = os.environ.get("VGGEXPLORER_CACHE_DIR")
    if env:
        return None if env.strip().lower() == "off" else Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "vggexplorer" / "predict"


@functools.cache
def _code_digest() -> str:
    h = hashlib.sha256()
    core = Path(__file__).resolve().parents[1]
    for pkg in _TRACE_PACKAGES:
        for path in sorted((core / pkg).rglob("*.py")):
            h.update(path.relative_to(core).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(config: Any) -> str:
    """The key of ``config``'s batch model (a hex digest; the batch size is not part of it)."""
    cfg = replace(config.trace_key(), batch=1)
    doc = {
        "format": FORMAT,
        "torch": torch_version_string(),
        "code": _code_digest(),
        "config": cfg.to_dict(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _path(config: Any) -> Path | None:
    d = cache_dir()
    return None if d is None else d / f"{cache_key(config)}.npz"


def save(config: Any, model: CachedModel) -> bool:
    """Store ``model`` for ``config`` (any batch); False when the cache is off or cannot be written."""
    path = _path(config)
    if path is None:
        return False
    meta = dict(model.meta)
    meta["format"] = FORMAT
    meta["key"] = path.stem
    meta["template_batch"] = model.template_batch
    arrays: dict[str, np.ndarray] = {"t": np.asarray(model.t, np.float64)}
    for name in _INT_COLUMNS:
        arrays[name] = np.asarray(model.columns[name], np.int64)
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        return False
    _prune(path.parent, keep=path)
    return True


def _prune(directory: Path, keep: Path, limit: int | None = None) -> None:
    """Remove the least recently used entries beyond ``limit`` (``load`` touches what it reads)."""
    limit = MAX_FILES if limit is None else limit
    try:
        entries = [(e.stat().st_mtime, e.path) for e in os.scandir(directory) if e.name.endswith(".npz")]
    except OSError:
        return
    if len(entries) <= limit:
        return
    entries.sort()
    for _, p in entries[: len(entries) - limit]:
        if p != str(keep):
            with contextlib.suppress(OSError):
                os.unlink(p)


def load(config: Any) -> CachedModel | None:
    """The stored model for ``config``, or None (missing, unreadable or not matching: then removed)."""
    path = _path(config)
    if path is None or not path.is_file():
        return None
    try:
        data = read_regular_file(path, _MAX_FILE_BYTES, "predictor cache file")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            t = np.asarray(z["t"], np.float64)
            cols = {name: np.asarray(z[name], np.int64) for name in _INT_COLUMNS}
        n = len(t)
        if (
            not isinstance(meta, dict)
            or meta.get("format") != FORMAT
            or meta.get("key") != path.stem
            or any(len(c) != n for c in cols.values())
            or not isinstance(meta.get("template_batch"), int)
        ):
            raise ValueError("does not match")
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruned last
        return CachedModel(int(meta["template_batch"]), t, cols, meta)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def spans_to_json(spans: list[Span]) -> list[list[Any]]:
    return [[s.module, s.phase, s.t0, s.t1, s.iteration] for s in spans]


def spans_from_json(items: list[Any]) -> list[Span]:
    return [Span(str(m), str(p), float(t0), float(t1), int(i)) for m, p, t0, t1, i in items]
