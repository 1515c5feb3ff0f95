"""Peak memory and step time of the LM methods on CPU, as multiples of the model's own bytes.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/llm_memory.py [--sizes 10M 50M] [--steps 1]

A Llama and an OLMoE (routed experts, no shared expert) are built from config at ~10M / 50M / 200M (/ 500M) parameters,
saved with `save_pretrained` in bf16 and loaded back as a user's checkpoint would be. Each (model, method) runs in
its own process. After the imports (the model classes included) the resident peak is reset
(/proc/self/clear_refs) and the resident size read (baseline); the resident peak (VmHWM) is read after loading
the model (load) and after `steps` unlearning steps on one forget and one retain sequence of 512 tokens (peak).
Reported: (peak − baseline) / model bytes, so 1.0 is the loaded model alone; and the method's own multiple,
1 + (peak − resident size once every weight has been read) / model bytes, which counts the model once however the
loader holds it (mapped file pages, converted copies). Without the reset, a transient peak
of the imports hid up to a few hundred MB. Step time is wall time per step, measured on a shared machine:
compare rows only within one run, and never quote it as a speed. Workers run with MALLOC_MMAP_THRESHOLD_=1 MB (see ENV).
Rows marked FSDP×2 run under torchrun with 2 gloo processes (`fsdp=True`: the trainable copy, its gradients and
AdamW state sharded over the ranks; the loaded input stays whole on each); each rank trains on one 512-token
sequence (the single-process rows' load), and the row reports the larger of the two ranks' peaks.
Writes bench/results/llm_memory.json and .md; finished rows are kept and skipped on a re-run (resumable);
`--redo` measures the chosen rows again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
VOCAB, LENGTH = 8192, 512
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # FSDP×2 rows
# glibc returns every freed block above 1 MB to the system at once; with its default, adaptive threshold a freed
# 16-32 MB tensor may stay in the heap or not depending on history, and one row's peak varied by 0.4× between runs
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
SIZES = {  # name -> (llama config, olmoe config)
    "10M": (
        {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 8, "num_attention_heads": 4},
        {"hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    ),
    "50M": (
        {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 12, "num_attention_heads": 8},
        {"hidden_size": 512, "intermediate_size": 512, "num_hidden_layers": 5, "num_attention_heads": 8},
    ),
    "200M": (
        {"hidden_size": 1024, "intermediate_size": 2752, "num_hidden_layers": 14, "num_attention_heads": 16},
        {"hidden_size": 1024, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 16},
    ),
    "500M": (  # 16 layers, as real MoE models have many: UOE's one-layer copy is then a smaller share
        {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 16, "num_attention_heads": 16},
        {"hidden_size": 1024, "intermediate_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16},
    ),
}
METHODS = {
    "llama": {
        "GA": ("GA", {}),
        "NPO": ("NPO", {}),
        "RMU": ("RMU", {}),
        "RMU, checkpointing": ("RMU", {"gradient_checkpointing": True}),
        "GA FSDP×2": ("GA", {"fsdp": True}),
        "NPO FSDP×2": ("NPO", {"fsdp": True}),
    },
    "olmoe": {
        "GA": ("GA", {}),
        "NPO": ("NPO", {}),
        "GA FSDP×2": ("GA", {"fsdp": True}),
        "UOE+GA": ("UOE", {"inner": "GA"}),
        "UOE+NPO": ("UOE", {"inner": "NPO"}),
        "UOE+GA, checkpointing": ("UOE", {"inner": "GA", "gradient_checkpointing": True}),
    },
}


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak since the last reset) of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} is not in /proc/self/status")


def reset_peak() -> None:
    """Start the resident peak (VmHWM) again from the current size (Linux >= 4.0), so a transient peak of the
    imports is not taken for the model's or the method's memory."""
    Path("/proc/self/clear_refs").write_text("5")


def build_checkpoint(arch: str, size: str, directory: Path) -> None:
    import torch
    import transformers as tf

    llama, olmoe = SIZES[size]
    common = {"vocab_size": VOCAB, "max_position_embeddings": LENGTH, "tie_word_embeddings": False}
    if arch == "llama":
        config = tf.LlamaConfig(**llama, **common)
        model = tf.LlamaForCausalLM(config)
    else:
        config = tf.OlmoeConfig(**olmoe, num_experts=8, num_experts_per_tok=2, **common)
        model = tf.OlmoeForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(directory)


def measure(directory: str, name: str, params: dict, steps: int) -> dict:
    """Run in a fresh process: load the checkpoint in bf16, unlearn `steps` steps, report memory and time."""
    import torch

    torch.set_num_threads(1)
    import transformers
    from transformers import AutoModelForCausalLM

    from unlearn import distributed
    from unlearn.llm import build_lm_method

    distributed.init_from_env(torch.device("cpu"))  # the FSDP rows run under torchrun
    for name_ in ("LlamaForCausalLM", "OlmoeForCausalLM"):  # transformers imports model code lazily: not the model's
        getattr(transformers, name_)
    reset_peak()
    baseline = status_mb("VmRSS")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).eval()
    if params.get("gradient_checkpointing"):  # `model.gradient_checkpointing: true` of an `unlearn llm` config
        model.activation_checkpointing_enable({"use_reentrant": False})
    params = {key: value for key, value in params.items() if key != "gradient_checkpointing"}
    loaded = status_mb("VmHWM")
    model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    with torch.no_grad():  # read one entry per page: the lazily mapped weights become resident, nothing is allocated
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.reshape(-1)[:: max(1, 4096 // tensor.element_size())].sum()
    resident = status_mb("VmRSS")
    generator = torch.Generator().manual_seed(0)
    rows = distributed.world_size()  # one sequence per process
    forget, retain = (torch.randint(0, VOCAB, (rows, LENGTH), generator=generator) for _ in range(2))
    batch = lambda ids: {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}  # noqa: E731
    recipe = {"steps": steps, "lr": 1e-5}
    if name == "UOE":
        method = build_lm_method(name, **params, inner_params=recipe, calibration_tokens=LENGTH)
    else:
        method = build_lm_method(name, **params, **recipe)
    start = time.perf_counter()
    method.unlearn(model, [batch(forget)], [batch(retain)], share_weights=True)
    seconds = time.perf_counter() - start
    distributed.shutdown()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_mb": model_mb,
        "load_multiple": (loaded - baseline) / model_mb,
        "resident_multiple": (resident - baseline) / model_mb,
        "peak_multiple": (status_mb("VmHWM") - baseline) / model_mb,
        "method_multiple": 1 + (status_mb("VmHWM") - resident) / model_mb,
        "step_s": seconds / steps,
        "params_updated": method.report["params_updated"],
        "processes": rows,
    }


def row_order(key: str) -> tuple[int, str, int]:
    """Rows by size, then model, then the order of METHODS."""
    arch, size, method = key.split("/")
    return list(SIZES).index(size), arch, list(METHODS[arch]).index(method)


def render(rows: dict, command: str) -> str:
    lines = [
        "# Peak memory and step time of the LM methods (CPU, bf16, 512 tokens)",
        "",
        f"Command: `{command}`. Measured on a 2-core machine shared with other jobs: step times are rough.",
        "",
        "Multiple = (resident peak − resident size after the imports, peak reset there) / the model's own bytes; "
        "1.0 = the loaded "
        "model alone. The loaded model doubles as the frozen reference (NPO, RMU); `load` is the multiple right "
        "after loading (what loading itself costs); `resident` is the multiple once every weight has been read (a "
        "safetensors checkpoint is memory-mapped, so weights become resident when first touched; a loader that "
        "converts weights, e.g. fuses OLMoE's experts, holds its converted copy and the mapped pages). "
        "`method` = 1 + (resident peak − resident size with the model fully read) / model bytes: what the method "
        "adds to a model that is already in memory, with the model counted once.",
        "",
        "| model | params | model MB | method | load × | resident × | peak × | method × | step (s) | params updated |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(rows, key=row_order):
        row = rows[key]
        arch, size, method = key.split("/")
        lines.append(
            f"| {arch} {size} | {row['parameters'] / 1e6:.1f} M | {row['model_mb']:.0f} | {method} | "
            f"{row['load_multiple']:.2f} | {row['resident_multiple']:.2f} | {row['peak_multiple']:.2f} | "
            f"{row['method_multiple']:.2f} | {row['step_s']:.1f} | "
            f"{row['params_updated'] / 1e6:.2f} M |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["10M", "50M", "200M"], choices=list(SIZES))
    parser.add_argument("--archs", nargs="+", default=["llama", "olmoe"], choices=sorted(METHODS))
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--methods", nargs="+", help="only these rows (e.g. RMU UOE+GA); default: all")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    parser.add_argument("--redo", action="store_true", help="measure the chosen rows again (e.g. after a change)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # directory, method row, arch
    args = parser.parse_args()
    if args.worker:
        directory, row, arch = args.worker
        name, params = METHODS[arch][row]
        print(json.dumps(measure(directory, name, params, args.steps)))
        return 0
    from unlearn.io import atomic_write_text

    saved = OUT / "llm_memory.json"
    rows = json.loads(saved.read_text())["rows"] if saved.is_file() else {}
    command = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/llm_memory.py " + shlex.join(sys.argv[1:])
    if args.render:
        record = json.loads(saved.read_text())
        atomic_write_text(OUT / "llm_memory.md", render(record["rows"], record["command"]))
        return 0
    if saved.is_file():  # resumed: every command that contributed rows
        previous = json.loads(saved.read_text())["command"]
        command = previous if command in previous else f"{previous}; then {command}"
    for size in args.sizes:
        for arch in args.archs:
            todo = [row for row in METHODS[arch] if args.redo or f"{arch}/{size}/{row}" not in rows]
            todo = [row for row in todo if not args.methods or row in args.methods]
            if not todo:
                continue
            with tempfile.TemporaryDirectory() as directory:
                build_checkpoint(arch, size, Path(directory))
                for row in todo:
                    worker = [__file__, "--steps", str(args.steps), "--worker", directory, row, arch]
                    launch = TORCHRUN if "FSDP" in row else [sys.executable]
                    done = subprocess.run([*launch, *worker], capture_output=True, text=True, check=False, env=ENV)
                    if done.returncode != 0:
                        print(f"{arch}/{size}/{row} failed:\n{done.stderr[-2000:]}", flush=True)
                        continue
                    ranks = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
                    rows[f"{arch}/{size}/{row}"] = max(ranks, key=lambda rank: rank["peak_multiple"])
                    print(arch, size, row, rows[f"{arch}/{size}/{row}"], flush=True)
                    atomic_write_text(saved, json.dumps({"command": command, "rows": rows}, indent=2))
                    atomic_write_text(OUT / "llm_memory.md", render(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
