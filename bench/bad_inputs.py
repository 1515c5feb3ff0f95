"""Replay the bad-input corpus (bench/bad_input_cases.py) and classify what the library does with each input.

    PYTHONPATH=src python bench/bad_inputs.py            # all cases -> bench/results/bad_inputs.{json,md}
    PYTHONPATH=src python bench/bad_inputs.py -k edit    # only cases whose id or text has "edit" (no files)

Every case runs in-process in a fresh temporary directory, under a per-case alarm (`--timeout`, seconds).
Outcomes:
- `UnlearnError`: the clear error the library promises (CLI cases: exit status 2 with `unlearn: error:`);
- `warning`: a legal but suspicious input, and the expected warning was given;
- `usage error`: argparse refused the command line (exit status 2 with a usage line; clear, not an UnlearnError);
- `traceback`: any other exception;
- `silently wrong`: no exception (or no expected warning) where one was due;
- `hang`: the case ran past the timeout.
The corpus table and the range rules are also written into docs/inputs.md between their markers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_input_cases import CASES, Case, UsageError  # noqa: E402
from unlearn.errors import UnlearnError  # noqa: E402
from unlearn.io import atomic_write_json, atomic_write_text  # noqa: E402

OUTCOMES = ("UnlearnError", "warning", "usage error", "traceback", "silently wrong", "hang")
RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "inputs.md"


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that a broad `except Exception` in the library cannot eat it."""


def _alarm(signum, frame):
    raise Hang


def replay(case: Case, timeout: int) -> dict:
    """Run one case and classify the outcome."""
    start = time.perf_counter()
    outcome, message = "silently wrong", "no error was raised"
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout)
        try:
            case.run(Path(tmp))
        except Hang:
            outcome, message = "hang", f"still running after {timeout} s"
        except UnlearnError as error:
            outcome, message = "UnlearnError", str(error)
        except UsageError as error:
            outcome, message = "usage error", str(error)
        except Exception as error:  # noqa: BLE001 - classifying every other exception is the point
            frame = traceback.extract_tb(error.__traceback__)[-1]
            outcome = "traceback"
            message = f"{type(error).__name__}: {error} ({Path(frame.filename).name}:{frame.lineno})"
        finally:
            signal.alarm(0)
        if case.expect_warning is not None and outcome == "silently wrong":
            texts = [str(w.message) for w in caught]
            hit = next((text for text in texts if case.expect_warning in text), None)
            outcome, message = ("warning", hit) if hit else ("silently wrong", f"no warning; got {texts[:2]}")
    return {
        "id": case.id,
        "surface": case.surface,
        "what": case.what,
        "outcome": outcome,
        "message": " ".join(message.split())[:300],
        "time_s": round(time.perf_counter() - start, 3),
    }


def table(counts: Counter, total: int) -> str:
    header = "| tried | " + " | ".join(OUTCOMES) + " |"
    align = "|" + "---:|" * (len(OUTCOMES) + 1)
    row = f"| {total} | " + " | ".join(str(counts.get(name, 0)) for name in OUTCOMES) + " |"
    return "\n".join([header, align, row])


def by_surface(results: list[dict]) -> str:
    surfaces = sorted({r["surface"] for r in results})
    lines = ["| surface | tried | " + " | ".join(OUTCOMES) + " |", "|:---|" + "---:|" * (len(OUTCOMES) + 1)]
    for surface in surfaces:
        rows = [r for r in results if r["surface"] == surface]
        counts = Counter(r["outcome"] for r in rows)
        lines.append(f"| {surface} | {len(rows)} | " + " | ".join(str(counts.get(n, 0)) for n in OUTCOMES) + " |")
    return "\n".join(lines)


def markdown(results: list[dict], command: str) -> str:
    counts = Counter(r["outcome"] for r in results)
    bad = [r for r in results if r["outcome"] in ("traceback", "silently wrong", "hang")]
    lines = [
        "# Bad-input corpus",
        "",
        f"Command: `{command}` (cases: bench/bad_input_cases.py).",
        "",
        table(counts, len(results)),
        "",
        "By surface:",
        "",
        by_surface(results),
        "",
    ]
    if bad:
        lines += ["## Not yet a clear error", "", "| id | what | outcome | message |", "|:---|:---|:---|:---|"]
        lines += [f"| {r['id']} | {r['what']} | {r['outcome']} | {r['message'].replace('|', '/')} |" for r in bad]
        lines.append("")
    lines += ["## Every case", "", "| id | what | outcome | message |", "|:---|:---|:---|:---|"]
    lines += [
        f"| {r['id']} | {r['what'].replace('|', '/')} | {r['outcome']} | {r['message'][:160].replace('|', '/')} |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def rules_table() -> str:
    from unlearn.validate import RULES

    rows = [f"| `{name}` | {rule} |" for name, rule in RULES.items()]
    return "\n".join(["| parameter | rule |", "|:---|:---|", *rows, "| `*batch_size` | >= 1 |"])


def replace_block(text: str, name: str, block: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}"


def update_docs(results: list[dict], command: str) -> None:
    """Rewrite the generated blocks of docs/inputs.md: the range rules and the corpus table."""
    if not DOCS.is_file():
        return
    counts = Counter(r["outcome"] for r in results)
    corpus = f"{table(counts, len(results))}\n\nBy surface:\n\n{by_surface(results)}\n\nCommand: `{command}`."
    text = DOCS.read_text(encoding="utf-8")
    atomic_write_text(DOCS, replace_block(replace_block(text, "bad-inputs", corpus), "rules", rules_table()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", help="only cases whose id or description contains this text")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per case before it counts as a hang")
    parser.add_argument("--out", help="output path without suffix (default: bench/results/bad_inputs; none with -k)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.k is None or args.k in c.id or args.k in c.what]
    results = []
    for index, case in enumerate(cases):
        result = replay(case, args.timeout)
        results.append(result)
        if result["outcome"] not in ("UnlearnError", "warning", "usage error"):
            print(f"[{index + 1}/{len(cases)}] {case.id} {case.what}: {result['outcome']}: {result['message'][:200]}")
    counts = Counter(r["outcome"] for r in results)
    command = "PYTHONPATH=src python bench/bad_inputs.py" + (f" -k {args.k}" if args.k else "")
    print(table(counts, len(results)))
    if args.out is None and args.k is not None:
        return 1 if counts["traceback"] + counts["silently wrong"] + counts["hang"] else 0
    out = Path(args.out or RESULTS / "bad_inputs")
    payload = {"command": command, "counts": {name: counts.get(name, 0) for name in OUTCOMES}, "tried": len(results)}
    atomic_write_json(out.with_suffix(".json"), {**payload, "cases": results})
    atomic_write_text(out.with_suffix(".md"), markdown(results, command))
    if args.k is None:
        update_docs(results, command)
    failures = counts["traceback"] + counts["silently wrong"] + counts["hang"]
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
