"""`python -m unlearn ...` (what `torchrun --nproc_per_node N -m unlearn fit ...` runs on every process)."""

import sys

from unlearn.cli import main

sys.exit(main())
