#!/usr/bin/env bash
# The main job on a fresh machine: set up, then train (or load cached) digits models, unlearn class 4
# with MoRE and every baseline of configs/digits_compare.yaml over 3 seeds, evaluate, and write
# runs/digits_compare/ (report.md in the paper's Table 1 layout, metrics.json, plots).
#   bash scripts/main.sh            the full run
#   bash scripts/main.sh --quick    one seed of MoRE, ESC and two baselines (configs/digits_quick.yaml)
# Other arguments go to `unlearn compare` (e.g. --fresh, --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
config=configs/digits_compare.yaml
if [ "${1:-}" = "--quick" ]; then
    config=configs/digits_quick.yaml
    shift
fi
bash scripts/setup.sh
.venv/bin/unlearn compare "$config" "$@"
