"""Language-model data in the formats users have, read from local paths (no download).

- Corpora (`read_corpus`): `.txt` (one document per non-empty line), `.jsonl` (one `{"text": ...}` object per
  line) or `.json` (a list of strings or of `{"text": ...}` objects). `min_chars` drops short documents, as
  the official RMU code drops WMDP corpus lines shorter than 50 characters.
- Question/answer pairs (`read_qa`): TOFU-style `.json` (a list of objects, or JSON lines as TOFU ships them)
  or `.jsonl`, with `question` (or `prompt`) and `answer`; optional `paraphrased_answer` (a string) and
  `perturbed_answer` (a list of wrong answers). The prompt is `qa_prompt` with `{question}` filled in.
- Multiple-choice questions (`read_mcq`): WMDP/MMLU rows with `question`, `choices` (list of strings) and
  `answer` (an index, or a letter A, B, ...), optional `subject`; `.jsonl`, `.json` or `.parquet` (read with
  pyarrow, the format of the `cais/mmlu` and `cais/wmdp` dataset files; `pip install pyarrow`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from unlearn.errors import UnlearnError

LETTERS = "ABCDEFGHIJ"


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"{what} file {path} does not exist.")
    return path


def _json_rows(path: Path) -> list:
    """Rows of a .jsonl file, or of a .json file holding a list (or, as TOFU ships it, JSON lines)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
            return rows if isinstance(rows, list) else [rows]
        except json.JSONDecodeError:
            pass  # JSON lines under a .json name
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UnlearnError(f"{path}:{number} is not valid JSON: {error}") from error
    return rows


def read_corpus(path: str | Path, min_chars: int = 0, field_name: str = "text") -> list[str]:
    """Documents of a .txt / .jsonl / .json corpus, without those shorter than `min_chars` characters."""
    path = _existing(path, "corpus")
    if path.suffix in (".jsonl", ".json"):
        texts = []
        for number, row in enumerate(_json_rows(path), start=1):
            text = row if isinstance(row, str) else row.get(field_name) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise UnlearnError(f"{path}: row {number} must be a string or an object with a {field_name!r} string.")
            texts.append(text)
    else:
        texts = path.read_text(encoding="utf-8").splitlines()
    texts = [text for text in texts if text.strip() and len(text) >= min_chars]
    if not texts:
        raise UnlearnError(f"corpus {path} has no document with at least {min_chars} characters.")
    return texts


@dataclass
class QAItem:
    """One question with its answer; TOFU's optional paraphrased answer and perturbed (wrong) answers."""

    prompt: str
    answer: str
    paraphrased: str | None = None
    perturbed: list[str] = field(default_factory=list)

    @property
    def pair(self) -> tuple[str, str]:
        return self.prompt, self.answer


def read_qa(path: str | Path, qa_prompt: str = "{question}") -> list[QAItem]:
    """(prompt, answer) items of a TOFU-style .json / .jsonl file (see the module doc)."""
    path = _existing(path, "Q/A")
    if "{question}" not in qa_prompt:
        raise UnlearnError(f"qa_prompt must contain {{question}}, got {qa_prompt!r}.")
    items = []
    for number, row in enumerate(_json_rows(path), start=1):
        question = row.get("question", row.get("prompt")) if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(question, str) or not isinstance(answer, str):
            raise UnlearnError(f'{path}: row {number} must have "question" (or "prompt") and "answer" strings.')
        perturbed = row.get("perturbed_answer") or []
        perturbed = [perturbed] if isinstance(perturbed, str) else list(perturbed)
        items.append(
            QAItem(qa_prompt.replace("{question}", question), answer, row.get("paraphrased_answer"), perturbed)
        )
    if not items:
        raise UnlearnError(f"Q/A file {path} has no questions.")
    return items


def _parquet_rows(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise UnlearnError(f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL).") from error
    return pq.read_table(path).to_pylist()


def _answer_index(answer, choices: list) -> int | None:
    if isinstance(answer, str) and len(answer) == 1 and answer.upper() in LETTERS:
        answer = LETTERS.index(answer.upper())
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return answer
    return None


def read_mcq(path: str | Path) -> list[dict]:
    """WMDP/MMLU questions as {"question", "choices", "answer" (index), "subject" (may be None)} dicts."""
    path = _existing(path, "MCQ")
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _json_rows(path)
    items = []
    for number, row in enumerate(rows, start=1):
        choices = row.get("choices") if isinstance(row, dict) else None
        if hasattr(choices, "tolist"):
            choices = choices.tolist()
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("question"), str)
            and isinstance(choices, list)
            and 2 <= len(choices) <= len(LETTERS)
            and all(isinstance(c, str) for c in choices)
        )
        index = _answer_index(row.get("answer"), choices) if ok else None
        if index is None:
            raise UnlearnError(
                f'{path}: row {number} must be {{"question": str, "choices": [2-10 str], "answer": index or letter}}, '
                f"got {str(row)[:200]}"
            )
        items.append({"question": row["question"], "choices": choices, "answer": index, "subject": row.get("subject")})
    if not items:
        raise UnlearnError(f"MCQ file {path} has no questions.")
    return items
