#!/usr/bin/env bash
# Run the whole test suite (sets everything up on first use): lint, format check, types, the import
# contract, tests (offscreen), then the real-window tests (drag and drop, screenshots) under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff check" && ruff check .
echo "== ruff format --check" && ruff format --check .
echo "== mypy" && mypy
echo "== lint-imports (the import contract, docs/architecture.md)" && lint-imports --no-cache

echo "== pytest (offscreen)"
QT_QPA_PLATFORM=offscreen python -m pytest -m "not xvfb" "$@"

echo "== pytest (real window under Xvfb)"
if command -v xvfb-run >/dev/null 2>&1; then
  QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest -m xvfb "$@"
else
  echo "xvfb-run not found: the real-window tests cannot run here (scripts/setup.sh installs xvfb)" >&2
  exit 1
fi
