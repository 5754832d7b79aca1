"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import re
from typing import Any

from vggexplorer.core.model.backbone import BACKBONES
from vggexplorer.core.model.config import RunConfig
from vggexplorer.core.model.head import PRESET_NAMES, HeadSpec

MAX_INPUT = 8192
MAX_BATCH = 1 << 16


def parse_input(text: str) -> tuple[int, int]:
    """``384`` → (384, 384); ``384x256`` → (384, 256) (H×W)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x×X,]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"input size must look like 384 or 384x256, got {text!r}")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if not (1 <= h <= MAX_INPUT and 1 <= w <= MAX_INPUT):
        raise argparse.ArgumentTypeError(f"input size must be between 1 and {MAX_INPUT}, got {text!r}")
    return h, w


def parse_batch(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch must be a whole number, got {text!r}") from None
    if not 1 <= n <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"batch must be between 1 and {MAX_BATCH}, got {n}")
    return n


def add_model_args(p: argparse.ArgumentParser, *, default_input: str = "224") -> None:
    p.add_argument(
        "--head",
        default="fc",
        metavar="PRESET|PATH",
        help=f"a preset ({', '.join(PRESET_NAMES)}) or a head JSON file (default: fc)",
    )
    p.add_argument(
        "--backbone", choices=sorted(BACKBONES), default=None, help="default: the head file's, or vgg11"
    )
    p.add_argument(
        "--input",
        type=parse_input,
        default=parse_input(default_input),
        metavar="H[xW]",
        help=f"input size, e.g. 384 or 384x256 (default: {default_input})",
    )
    p.add_argument("--batch", type=parse_batch, default=1, metavar="N", help="batch size (default: 1)")


def run_config_from_args(args: argparse.Namespace, head: HeadSpec, **fixed: Any) -> RunConfig:
    """The ONE mapping from a command's parsed arguments to RunConfig: every RunConfig field the command
    defines an option for (dest named as the field; ``--input`` gives ``input_hw``), then ``fixed`` (what the
    command decides itself, e.g. a prediction's ``device="cpu"``). Fields with neither keep RunConfig's
    defaults. Raises ConfigError for values RunConfig rejects."""
    kw: dict[str, Any] = {
        name: getattr(args, name)
        for name in RunConfig.__dataclass_fields__
        if name not in ("head", "input_hw") and hasattr(args, name)
    }
    if hasattr(args, "input"):
        kw["input_hw"] = tuple(args.input)
    kw.update(fixed)
    return RunConfig(head=head, **kw)
