#!/usr/bin/env bash
# The main job on a fresh machine: set up, then train (or load cached) digits models, unlearn class 4
# with MoRE and every baseline of configs/digits_compare.yaml over 3 seeds, evaluate, and write
# runs/digits_compare/ (report.md in the paper's Table 1 layout, metrics.json, plots).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/unlearn compare configs/digits_compare.yaml "$@"
