"""``vggexplorer replay SNAPSHOT.pickle [--json]``: replay a real allocator snapshot through the model.

Exit codes: 0 the model reproduces the trace, 1 it does not, 2 the file was refused (the snapshot module's
``replay_main`` decides; nothing in a refused file is executed).
"""

from __future__ import annotations

import argparse


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
    from vggexplorer.core.allocator.snapshot import replay_main

    return replay_main(args.snapshot, as_json=args.json)
