#!/usr/bin/env bash
# The main job on a fresh machine: set up, then train (or load cached) digits models, unlearn class 4
# with MoRE and the baselines of configs/digits_more.yaml, evaluate, and write runs/digits_more/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/unlearn run configs/digits_more.yaml "$@"
