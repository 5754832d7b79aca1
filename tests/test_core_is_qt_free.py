"""The core never loads Qt: it must run on GPU servers without Qt or GL libraries."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import vggexplorer.core


def test_importing_every_core_module_loads_no_qt() -> None:
    mods = [m.name for m in pkgutil.walk_packages(vggexplorer.core.__path__, "vggexplorer.core.")]
    assert "vggexplorer.core.model.head" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "import vggexplorer.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"Qt modules loaded by the core: {r.stdout.strip()}"
