"""Shared test set-up: offscreen Qt unless a test asks for a real window, and no thread left behind."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the predictor's on-disk cache: never the user's, and empty at the start of every session (tests that
# use it point it at their own tmp_path)
os.environ["VGGEXPLORER_CACHE_DIR"] = tempfile.mkdtemp(prefix="vggexplorer-test-cache-")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    no_x = pytest.mark.skip(reason="needs a real X display (run under xvfb-run with QT_QPA_PLATFORM=xcb)")
    gpu = None
    real_x = os.environ.get("QT_QPA_PLATFORM") == "xcb" and bool(os.environ.get("DISPLAY"))
    for item in items:
        if "gpu" in item.keywords:
            if gpu is None:
                gpu = _has_cuda()
            if not gpu:
                item.add_marker(no_gpu)
        if "xvfb" in item.keywords and not real_x:
            item.add_marker(no_x)


@pytest.fixture(autouse=True)
def _no_dangling_threads() -> Iterator[None]:
    """Fail a test that leaves a Python thread running (workers, samplers)."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leftover:
        t.join(timeout=5)
    still = [t.name for t in leftover if t.is_alive()]
    assert not still, f"test left threads running: {still}"
