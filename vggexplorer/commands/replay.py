"""``vggexplorer replay SNAPSHOT.pickle [--json]``: replay a real allocator snapshot through the model.

Exit codes: 0 the model reproduces the trace, 1 it does not, 2 the file was refused (nothing in a refused
file is executed: see ``vggexplorer.core.allocator.snapshot``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a torch.cuda.memory._snapshot() pickle through the caching-allocator model",
        description="Replay the allocator trace of a memory snapshot (the pickles pytorch.org/memory_viz "
        "reads) through vggexplorer's model of the CUDA caching allocator; say, event by event, whether it "
        "chose the same addresses and segments. Exit 0 = match, 1 = mismatch, 2 = file refused.",
    )
    p.add_argument("snapshot", metavar="SNAPSHOT.pickle", help="a torch.cuda.memory._snapshot() pickle")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return replay_main(args.snapshot, as_json=args.json)


def replay_main(path: str, as_json: bool = False) -> int:
    """Replay one file and print the report: 0 = replay matches, 1 = it does not, 2 = refused."""
    from vggexplorer.core.allocator.snapshot import SnapshotError, load_snapshot
    from vggexplorer.core.allocator.snapshot_replay import replay

    try:
        snap = load_snapshot(path)
    except SnapshotError as exc:
        if as_json:
            print(json.dumps({"ok": False, "refused": True, "error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    report = replay(snap)
    if as_json:
        d = report.to_dict()
        d["file"] = str(path)
        print(json.dumps(d, indent=2))
    else:
        print(report.format_text(Path(path).name))
    return 0 if report.matches else 1
