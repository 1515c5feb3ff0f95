"""`unlearn llm` under torchrun: 2 gloo processes on CPU give the same unlearned weights as 1 process, data
parallel and with the trainable copy sharded by FSDP."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("llm_ddp_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"
TOLERANCE = 1e-5  # max |Δ| per weight after 3 AdamW steps at lr 1e-3: float summation order only


def test_two_processes_match_one_process(tmp_path):
    out = tmp_path / "two.pt"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*command, str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("llm_ddp_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = worker.unlearn_all()
    finally:
        torch.set_num_threads(threads)
    two = torch.load(out)
    assert two["world_size"] == 2 and two["weights"].keys() == single.keys()
    assert any(key.startswith("fsdp.") for key in single)
    assert 0.45 <= two["shard"] <= 0.55, two["shard"]  # FSDP: each of 2 ranks holds about half the entries
    worst = max((two["weights"][k] - single[k]).abs().max().item() for k in single)
    print(f"max |weight difference| 2 processes vs 1: {worst:.3g}")
    assert worst <= TOLERANCE, worst
