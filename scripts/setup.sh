#!/usr/bin/env bash
# Create .venv (if missing) and install unlearn with its test tools. Idempotent; no internet beyond PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v -E "^WARNING: Location" || true
.venv/bin/python -c "import unlearn, torch; print('unlearn', unlearn.__version__, '| torch', torch.__version__)"
