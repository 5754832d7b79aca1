"""The house rules that no single feature test would notice breaking (docs/architecture.md).

The import contract itself (stages in order, a Qt-free core, no cycles) is checked by ``lint-imports`` in the
test command; here: torch stays out of the packages that must start fast or run without it, and no module
grows into several ideas.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import vggexplorer

ROOT = Path(vggexplorer.__file__).resolve().parent

#: packages whose modules never import torch at import time (they may inside functions that need it):
#: the model (shapes, RunConfig, presets) serves the editor and the CLI's `shapes`; results, session and qt
#: run in the GUI process, which hands all torch work to child processes; the predictor's cache and the GPU
#: profiles answer a cached prediction without torch.
TORCH_FREE = (
    "vggexplorer.core.base",
    "vggexplorer.core.model",
    "vggexplorer.core.allocator",
    "vggexplorer.core.devices",
    "vggexplorer.core.results",
    "vggexplorer.core.session",
    "vggexplorer.qt",
    "vggexplorer.core.predict.cache",
    "vggexplorer.core.predict.gpus",
    "vggexplorer.commands",
)

#: files allowed over MAX_LINES, each with the reason it is still one idea
MAX_LINES = 800
LONG_FILES: dict[str, str] = {}


def fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter (imports there start from nothing)."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _modules(name: str) -> list[str]:
    mod = __import__(name, fromlist=["_"])
    if not hasattr(mod, "__path__"):
        return [name]
    return [name] + [m.name for m in pkgutil.walk_packages(mod.__path__, name + ".")]


def test_torch_free_packages_import_without_torch() -> None:
    mods = sorted({m for pkg in TORCH_FREE for m in _modules(pkg)})
    assert "vggexplorer.core.model.head" in mods and "vggexplorer.qt.main_window" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "    if 'torch' in sys.modules:\n"
        "        print(m)\n"
        "        break\n"
    )
    out = fresh_python(code)
    assert out == "", f"importing {out} imports torch"


def test_the_core_and_the_cli_load_no_qt() -> None:
    """The core and the CLI run on GPU servers without Qt or GL libraries: importing every core module and
    the CLI loads none of Qt (the import contract checks the import statements; this, what really loads)."""
    mods = _modules("vggexplorer.core")
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "import vggexplorer.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'))\n"
        "print(','.join(bad))\n"
    )
    out = fresh_python(code)
    assert out == "", f"Qt modules loaded by the core: {out}"


def test_lazy_package_names_resolve_and_stay_lazy() -> None:
    """Packages re-export public names lazily: ``__all__`` resolves; importing a package imports nothing."""
    pkgs = [m.name for m in pkgutil.walk_packages(vggexplorer.__path__, "vggexplorer.") if m.ispkg]
    code = (
        "import importlib, sys\n"
        f"for p in {pkgs!r}:\n"
        "    before = set(sys.modules)\n"
        "    mod = importlib.import_module(p)\n"
        "    names = list(getattr(mod, '__all__', ()))\n"
        "    new = {m for m in set(sys.modules) - before if m.startswith('vggexplorer.') and m != p}\n"
        "    new -= {a for a in new if p.startswith(a)} | {'vggexplorer._lazy'}\n"
        "    if new:\n"
        "        print('eager', p, sorted(new))\n"
        "    for n in names:\n"
        "        first = getattr(mod, n)\n"
        "        importlib.import_module(getattr(first, '__module__', None) or p)\n"
        "        if getattr(mod, n) is not first or type(first).__name__ == 'module':\n"
        "            print('shadowed', p, n)\n"
    )
    assert fresh_python(code) == ""


def test_every_package_says_what_it_owns_and_exports_lazily() -> None:
    """Each package of the core and of qt opens with a paragraph on what it owns and lists its public names
    (resolved lazily, see the test above)."""
    import importlib

    pkgs = [m.name for m in pkgutil.walk_packages(vggexplorer.__path__, "vggexplorer.") if m.ispkg]
    pkgs = [p for p in pkgs if p.startswith(("vggexplorer.core.", "vggexplorer.qt"))]
    assert len(pkgs) >= 10, pkgs
    for name in pkgs:
        mod = importlib.import_module(name)
        doc = (mod.__doc__ or "").strip()
        assert len(doc) >= 200, f"{name}: its docstring should say in a paragraph what it owns"
        assert list(getattr(mod, "__all__", [])), f"{name}: no public names re-exported"


def test_no_file_over_the_line_limit() -> None:
    too_long = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in LONG_FILES:
            too_long[rel] = n
    assert not too_long, (
        f"files over {MAX_LINES} lines (split them or give a reason in LONG_FILES): {too_long}"
    )
    for rel in LONG_FILES:
        assert (ROOT.parent / rel).exists(), f"LONG_FILES names a file that is gone: {rel}"


def test_the_prediction_cache_key_covers_every_package_a_trace_imports() -> None:
    """The cache key digests the code of the packages a fake trace depends on; a package the trace imports
    but the key leaves out would let an edited module meet an old cache entry."""
    from vggexplorer.core.predict.cache import _TRACE_PACKAGES

    code = (
        "import sys\n"
        "import vggexplorer.core.predict.faketrace, vggexplorer.core.run.execution\n"
        "core = {m.split('.')[2] for m in sys.modules if m.startswith('vggexplorer.core.')}\n"
        "print(' '.join(sorted(core)))\n"
    )
    imported = set(fresh_python(code).split())
    assert {"model", "run", "predict"} <= imported
    assert imported <= set(_TRACE_PACKAGES), (
        f"not in the cache key: {sorted(imported - set(_TRACE_PACKAGES))}"
    )
