#!/usr/bin/env bash
# The test command: set up, lint, build the docs site (mkdocs --strict: a broken link or nav entry fails),
# run the test suite (tests/test_docs.py runs the code blocks of README.md and docs/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
.venv/bin/mkdocs build --strict --quiet --site-dir "$site"
.venv/bin/python -m pytest tests "$@"
