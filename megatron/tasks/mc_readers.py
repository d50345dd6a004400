"""Readers that turn multiple-choice benchmark files, as their authors distribute them, into :class:`McExample` rows.

``--mc-format`` picks one: ``generic`` JSONL ``{"context", "choices", "gold"[, "id"]}``, or the original files of
HellaSwag, PIQA, ARC, BoolQ, Winogrande and RACE, with the prompts of lm-evaluation-harness (RACE excepted, see
:func:`read_race`). Every bad row is a ``ValueError`` naming ``file:line`` and the key to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from megatron.tasks.common import jsonl_rows
from megatron.tasks.race import race_files

__all__ = ["McExample", "READERS", "read_examples", "iter_jsonl", "piqa_labels_path", "hellaswag_preprocess"]


@dataclass(frozen=True)
class McExample:
    """One question: choice i is scored as the continuation ``choices[i]`` after its context.

    ``choice_contexts`` is None for ordinary multiple choice (every choice follows ``context``). Winogrande's
    partial evaluation sets it: the contexts differ per choice (the option filled into the blank) and the scored
    continuation, the rest of the sentence, is the same for all; ``context`` is then the text before the blank.
    """

    context: str
    choices: tuple[str, ...]
    gold: int
    id: str | None = None
    choice_contexts: tuple[str, ...] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """``(context, continuation)`` of every choice, in choice order."""
        contexts = self.choice_contexts if self.choice_contexts is not None else (self.context,) * len(self.choices)
        return list(zip(contexts, self.choices))


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("path:line", object)`` for every non-blank line of a JSONL file.

    Raises:
        ValueError: naming ``path:line`` for invalid JSON or a line that is not a JSON object.
    """
    for where, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, found {type(row).__name__}")
        yield where, row


def _get(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, fmt: str) -> Any:
    """``row[key]`` checked against ``kind``; a missing key or wrong type names the line, the key and the format."""
    if key not in row:
        raise ValueError(f"{where}: missing key {key!r}; is this a {fmt} file (--mc-format)?")
    value = row[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ValueError(f"{where}: key {key!r} must be {names}, found {type(value).__name__} {value!r:.60}")
    return value


def _strings(values: list, key: str, where: str) -> tuple[str, ...]:
    if len(values) < 2 or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: {key!r} must be a list of at least two strings, found {values!r:.80}")
    return tuple(values)


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _gold(label: int, num_choices: int, where: str, key: str) -> int:
    if not 0 <= label < num_choices:
        raise ValueError(f"{where}: {key} {label} is outside the range of the {num_choices} choices "
                         f"(0..{num_choices - 1}); fix the label")
    return label


# ---- generic ------------------------------------------------------------------------------------------------------
def read_generic(path: str) -> list[McExample]:
    """Generic JSONL: ``{"context": str, "choices": [str, ...], "gold": int}``, optional ``"id"``."""
    out = []
    for where, row in iter_jsonl(path):
        context = _get(row, "context", str, where, "generic")
        choices = _strings(_get(row, "choices", list, where, "generic"), "choices", where)
        gold = _gold(_get(row, "gold", int, where, "generic"), len(choices), where, "gold")
        out.append(McExample(context, choices, gold, id=_id(row.get("id"))))
    return out


# ---- HellaSwag ----------------------------------------------------------------------------------------------------
def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up: WikiHow's `` [title]`` becomes a sentence break, other bracketed markers
    (``[header]``, ``[step]``, ...) go, and the double spaces they leave become single."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag(path: str) -> list[McExample]:
    """HellaSwag JSONL (``hellaswag_val.jsonl``): context ``"{activity_label}: {ctx_a} {ctx_b.capitalize()}"``
    (``ctx`` when ``ctx_a``/``ctx_b`` are absent; no label prefix without ``activity_label``), four ``endings``,
    ``label``; context and endings cleaned by :func:`hellaswag_preprocess`, as lm-eval does."""
    out = []
    for where, row in iter_jsonl(path):
        if "ctx_a" in row and "ctx_b" in row:
            ctx = _get(row, "ctx_a", str, where, "HellaSwag") + " " + _get(row, "ctx_b", str, where,
                                                                            "HellaSwag").capitalize()
        else:
            ctx = _get(row, "ctx", str, where, "HellaSwag")
        if "activity_label" in row:
            ctx = _get(row, "activity_label", str, where, "HellaSwag") + ": " + ctx
        endings = _strings(_get(row, "endings", list, where, "HellaSwag"), "endings", where)
        label = _get(row, "label", (int, str), where, "HellaSwag")
        if isinstance(label, str) and not label.strip().isdigit():
            raise ValueError(f"{where}: 'label' must be an integer, found {label!r}")
        gold = _gold(int(label), len(endings), where, "label")
        out.append(McExample(hellaswag_preprocess(ctx), tuple(hellaswag_preprocess(e) for e in endings), gold,
                             id=_id(row.get("ind"))))
    return out


# ---- PIQA ---------------------------------------------------------------------------------------------------------
def piqa_labels_path(path: str) -> Path:
    """PIQA keeps its labels beside the questions: ``valid.jsonl`` -> ``valid-labels.lst``."""
    p = Path(path)
    return p.with_name(p.stem + "-labels.lst")


def read_piqa(path: str) -> list[McExample]:
    """PIQA JSONL (``goal``, ``sol1``, ``sol2``) plus ``*-labels.lst`` (one 0/1 per line); context
    ``"Question: {goal}\\nAnswer:"``, choices ``[sol1, sol2]``."""
    labels_path = piqa_labels_path(path)
    if not labels_path.is_file():
        raise ValueError(f"{path}: PIQA labels file {labels_path} not found; PIQA's labels ship in a separate "
                         "'<split>-labels.lst' next to '<split>.jsonl' (the test split has none)")
    labels = [(f"{labels_path}:{n}", line.strip())
              for n, line in enumerate(labels_path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    rows = list(iter_jsonl(path))
    if len(labels) != len(rows):
        raise ValueError(f"{labels_path} has {len(labels)} labels but {path} has {len(rows)} questions; use the "
                         "labels file of the same split")
    out = []
    for (where, row), (label_where, label) in zip(rows, labels):
        goal = _get(row, "goal", str, where, "PIQA")
        choices = (_get(row, "sol1", str, where, "PIQA"), _get(row, "sol2", str, where, "PIQA"))
        if label not in ("0", "1"):
            raise ValueError(f"{label_where}: label {label!r} is outside the range of the 2 choices (0 or 1)")
        out.append(McExample(f"Question: {goal}\nAnswer:", choices, int(label), id=_id(row.get("id"))))
    return out


# ---- ARC ----------------------------------------------------------------------------------------------------------
def read_arc(path: str) -> list[McExample]:
    """AI2's ARC JSONL (``ARC-Easy-Dev.jsonl`` ...): ``question.stem``, ``question.choices[].{text, label}``,
    ``answerKey`` (letters A-E or digits 1-5, matched against the choice labels); context
    ``"Question: {stem}\\nAnswer:"``."""
    out = []
    for where, row in iter_jsonl(path):
        question = _get(row, "question", dict, where, "ARC")
        stem = _get(question, "stem", str, where + " (in 'question')", "ARC")
        choices = _get(question, "choices", list, where + " (in 'question')", "ARC")
        if len(choices) < 2 or not all(isinstance(c, dict) for c in choices):
            raise ValueError(f"{where}: 'question.choices' must be a list of at least two objects")
        texts = tuple(_get(c, "text", str, f"{where} (choice {i})", "ARC") for i, c in enumerate(choices))
        keys = [str(_get(c, "label", (str, int), f"{where} (choice {i})", "ARC")) for i, c in enumerate(choices)]
        answer = str(_get(row, "answerKey", (str, int), where, "ARC")).strip()
        if answer not in keys:
            raise ValueError(f"{where}: answerKey {answer!r} is outside the range of the choices (labels {keys})")
        out.append(McExample(f"Question: {stem}\nAnswer:", texts, keys.index(answer), id=_id(row.get("id"))))
    return out


# ---- BoolQ --------------------------------------------------------------------------------------------------------
def read_boolq(path: str) -> list[McExample]:
    """BoolQ JSONL (``passage``, ``question``, ``answer`` true/false; SuperGLUE's ``label`` is accepted for
    ``answer``); context ``"{passage}\\nQuestion: {question}?\\nAnswer:"``, choices ``["no", "yes"]``."""
    out = []
    for where, row in iter_jsonl(path):
        passage = _get(row, "passage", str, where, "BoolQ")
        question = _get(row, "question", str, where, "BoolQ")
        key = "answer" if "answer" in row or "label" not in row else "label"
        answer = _get(row, key, (bool, int), where, "BoolQ")
        if answer not in (0, 1):  # True == 1, False == 0
            raise ValueError(f"{where}: {key} {answer!r} is outside the range of the 2 choices (false/true)")
        out.append(McExample(f"{passage}\nQuestion: {question}?\nAnswer:", ("no", "yes"), int(answer),
                             id=_id(row.get("idx"))))
    return out


# ---- Winogrande ---------------------------------------------------------------------------------------------------
def read_winogrande(path: str) -> list[McExample]:
    """Winogrande JSONL (``sentence`` with one ``_``, ``option1``, ``option2``, ``answer`` "1"/"2"), as lm-eval's
    partial evaluation: choice i's context is the sentence up to the blank with option i filled in, and the scored
    continuation is the rest of the sentence after the blank (the same for both options)."""
    out = []
    for where, row in iter_jsonl(path):
        sentence = _get(row, "sentence", str, where, "Winogrande")
        options = (_get(row, "option1", str, where, "Winogrande"), _get(row, "option2", str, where, "Winogrande"))
        answer = str(_get(row, "answer", (str, int), where, "Winogrande")).strip()
        blank = sentence.find("_")
        if blank < 0:
            raise ValueError(f"{where}: 'sentence' has no '_' blank to fill with the options")
        if answer not in ("1", "2"):
            raise ValueError(f"{where}: answer {answer!r} is outside the range of the 2 options ('1' or '2')")
        before, rest = sentence[:blank], sentence[blank + 1:].strip()
        out.append(McExample(before, (rest, rest), int(answer) - 1, id=_id(row.get("qID")),
                             choice_contexts=(before + options[0], before + options[1])))
    return out


# ---- RACE ---------------------------------------------------------------------------------------------------------
def read_race(path: str) -> list[McExample]:
    """RACE as distributed (and read by Megatron): a directory of ``*.txt`` files (or one file), each line a JSON
    object with ``article``, ``questions``, ``options`` (four per question) and ``answers`` (letters). One example
    per question, context ``"Article: {article}\\n\\nQuestion: {question}\\nAnswer:"``.

    lm-eval's ``race`` differs: it evaluates only each article's last question, with the earlier questions and
    their answers in the prompt, so its numbers are not comparable with ours.
    """
    out = []
    for file in race_files(path):
        for where, row in iter_jsonl(file):
            article = _get(row, "article", str, where, "RACE")
            questions = _get(row, "questions", list, where, "RACE")
            options = _get(row, "options", list, where, "RACE")
            answers = _get(row, "answers", list, where, "RACE")
            if not len(questions) == len(options) == len(answers):
                raise ValueError(f"{where}: 'questions', 'options' and 'answers' differ in length "
                                 f"({len(questions)}, {len(options)}, {len(answers)})")
            for q, (question, opts, answer) in enumerate(zip(questions, options, answers)):
                opts = _strings(opts, f"options[{q}]", where)
                if not (isinstance(answer, str) and len(answer) == 1):
                    raise ValueError(f"{where}: answers[{q}] must be one letter, found {answer!r}")
                gold = _gold(ord(answer.upper()) - ord("A"), len(opts), where, f"answers[{q}] ({answer!r})")
                out.append(McExample(f"Article: {article}\n\nQuestion: {question}\nAnswer:", opts, gold,
                                     id=f"{row.get('id', file.name)}#{q}"))
    return out


READERS: dict[str, Callable[[str], list[McExample]]] = {
    "generic": read_generic, "hellaswag": read_hellaswag, "piqa": read_piqa, "arc": read_arc,
    "boolq": read_boolq, "winogrande": read_winogrande, "race": read_race,
}


def read_examples(path: str, mc_format: str) -> list[McExample]:
    """Every example of ``path`` read as ``mc_format`` (one of :data:`READERS`)."""
    if mc_format not in READERS:
        raise ValueError(f"unknown mc_format {mc_format!r}; choose one of {', '.join(READERS)} (--mc-format)")
    return READERS[mc_format](path)
