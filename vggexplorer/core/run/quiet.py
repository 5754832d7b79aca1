"""Keep three known, harmless native messages of the CPU profiler off stderr, and nothing else.

Starting ``torch.profiler`` (``profile_memory=True``) off the main thread, as the engine does, prints:

1. ``ERROR: External init callback must run in same thread as registerClient (…)`` — libkineto
   (``libkineto.cpp``, a bare ``fprintf(stderr, …)``) when its client is first initialised in another thread
   than the one that imported torch. Printed once per process, at the first profiler start.
2. ``USDT:… SyncActivityProfilerHandler.cpp:…] profiler_start`` / ``profiler_stop`` — libkineto's logger at
   its ``USDT`` severity (5), above ``ERROR`` (4), at every start and stop.
3. ``[W… CPUAllocator.cpp:…] Memory block of unknown size was allocated before the profiling started…`` —
   c10's ``ProfiledCPUMemoryReporter::Delete`` for a block allocated before profiling and freed during it;
   logged for the 1st, 1001st, 2001st … such free in the process.

:func:`prime_profiler` deals with them, in the calling thread (call it from the main thread, before other
threads write to stderr):

- sets ``KINETO_LOG_LEVEL=6`` unless the user set it (read when kineto initialises, at the first profiler
  start, not at ``import torch``): libkineto's own logger then prints nothing — its USDT/STAGE markers
  and its ERROR lines alike (severity is one scale: hiding USDT hides ERROR). The engine uses kineto for
  CPU memory events only and turns a failing profiler into a note on the run, so nothing the app relies
  on is lost; ``KINETO_LOG_LEVEL=0`` brings kineto's logging back for debugging;
- starts and stops one empty profile in this thread with fd 2 captured: kineto's client is initialised
  here (no message 1 later), c10's message 3 is spent once (the next would come 999 unknown frees later);
  every captured line that is *not* one of the known messages is written back to stderr.

It is idempotent and never raises (a failure leaves stderr as it was). ``TORCH_CPP_LOG_LEVEL`` is left
alone: it would hide every c10 warning and only works before ``import torch``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["KNOWN_NOISE", "filter_noise", "prime_profiler"]

#: Substrings identifying the known messages (one line each).
KNOWN_NOISE: tuple[str, ...] = (
    "External init callback must run in same thread as registerClient",
    "] profiler_start",
    "] profiler_stop",
    "Completed Stage: ",  # kineto STAGE markers (visible with KINETO_LOG_LEVEL=3)
    "Memory block of unknown size was allocated before the profiling started",
)

_lock = threading.Lock()
_done = False


def filter_noise(text: str) -> str:
    """``text`` without the lines that carry one of the known messages."""
    keep = [ln for ln in text.splitlines(keepends=True) if not any(k in ln for k in KNOWN_NOISE)]
    return "".join(keep)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[None]:
    """Point fd 2 at a temporary file; afterwards write back whatever is not known noise."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = filter_noise(tmp.read().decode("utf-8", "replace"))
            if rest:
                with contextlib.suppress(Exception):
                    sys.stderr.write(rest)
                    sys.stderr.flush()


def prime_profiler() -> bool:
    """Initialise the CPU profiler quietly in this thread (see the module docstring). True on first use."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        try:
            import torch
            from torch.profiler import ProfilerActivity, profile

            with _captured_stderr():
                before = torch.empty(16)  # allocated before profiling, freed during it: spends message 3
                with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
                    del before
        except Exception:
            return True
        return True
