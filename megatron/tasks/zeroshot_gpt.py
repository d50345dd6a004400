"""Zero-shot LAMBADA accuracy and WikiText-103 perplexity of a GPT checkpoint (Megatron's ``tasks/zeroshot_gpt``).

LAMBADA: each JSONL row's ``text`` ends in a target (its last BPE token, or with ``--strict-lambada`` its whole
last word); an example is correct when every target token is the model's greedy choice. WIKITEXT103: one raw text
file, detokenized by path (wiki/ptb/lambada), scored in windows of ``--seq-length`` tokens that advance by
``--overlapping-eval``, every token but the first scored exactly once; the word-level ("adjusted") perplexity
rescales the loss by tokens per word. Examples and windows are split over data-parallel ranks and the sums pooled,
so the metrics are the same at any DP/TP size.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from megatron.data.tokenizers.base import MegatronTokenizer
from megatron.logging import get_logger, log_rank0
from megatron.tasks.common import TaskContext, TaskResult, jsonl_rows
from megatron.tasks.gpt_scoring import Request, score_shard, sum_over_ranks

__all__ = [
    "run_lambada", "run_wikitext", "read_lambada", "lambada_request", "wikitext_windows", "wikitext_detokenize",
    "ptb_detokenize", "lambada_detokenize", "detokenizer_for", "count_words", "safe_exp",
]

logger = get_logger(__name__)


def safe_exp(x: float) -> float:
    """``exp(x)``, inf instead of an OverflowError. Megatron clamps the exponent at 20; we do not, so a diverged
    model reports its real (huge) perplexity instead of exactly exp(20)."""
    return math.exp(x) if x < 700 else math.inf


def _single_file(ctx: TaskContext) -> str:
    """The one --valid-data file; few-shot flags are refused rather than silently ignored."""
    files = ctx.task.valid_data or []
    if len(files) != 1:
        raise ValueError(f"task {ctx.task.task} evaluates exactly one file; pass one path to --valid-data "
                         f"(got {len(files)})")
    if ctx.task.num_fewshot or ctx.task.train_data:
        raise NotImplementedError(f"task {ctx.task.task} runs zero-shot only: drop --num-fewshot/--train-data (for "
                                  "few-shot LAMBADA use lm-eval on the Hugging Face export, see tasks/README.md)")
    return files[0]


# ---- LAMBADA ------------------------------------------------------------------------------------------------------
def read_lambada(path: str) -> list[str]:
    """The ``text`` of every non-blank line of a LAMBADA JSONL file.

    Raises:
        ValueError: naming ``path:line`` for invalid JSON, a row that is not an object, or a missing/empty ``text``.
    """
    texts = []
    for where, row in jsonl_rows(path):
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'{where}: missing key "text" (or it is not a non-empty string); each line must be one '
                             'JSON object like {"text": "..."}')
        texts.append(text)
    return texts


def lambada_request(tokenizer: MegatronTokenizer, text: str, strict: bool) -> Request:
    """Context and target tokens of one LAMBADA passage, as Megatron defines them.

    Non-strict: the whole text is tokenized and its last token is the target (often only the tail of the last
    word, which inflates accuracy). Strict: the target is the last whitespace-separated word tokenized with its
    leading space, the context everything before it, stripped and tokenized on its own.
    """
    if not strict:
        ids = tokenizer.tokenize(text)
        return Request(tuple(ids[:-1]), tuple(ids[-1:]))
    word = text.split()[-1]
    start = text.rfind(word)
    return Request(tuple(tokenizer.tokenize(text[:start].strip())), tuple(tokenizer.tokenize(" " + word)))


def run_lambada(ctx: TaskContext) -> TaskResult:
    """LAMBADA: ``accuracy`` (all target tokens greedy-correct), ``ppl`` (exp of the mean NLL per target token)
    and ``num_examples``. A context longer than the sequence loses its start (Megatron fails instead)."""
    path = _single_file(ctx)
    texts = read_lambada(path)
    if ctx.task.max_examples is not None:
        texts = texts[:ctx.task.max_examples]
    if not texts:
        raise ValueError(f"{path}: no examples; --valid-data must be a LAMBADA JSONL file with one text per line")
    strict = ctx.task.strict_lambada
    model = ctx.build_gpt()
    totals = {"correct": 0.0, "nll": 0.0, "target_tokens": 0.0, "examples": 0.0}

    def requests_of(i: int) -> list[Request]:
        return [lambada_request(ctx.tokenizer, texts[i], strict)]

    for _, (score,) in score_shard(ctx, model, len(texts), requests_of, desc="LAMBADA"):
        totals["correct"] += float(score.greedy)
        totals["nll"] -= score.logprob
        totals["target_tokens"] += score.num_tokens
        totals["examples"] += 1
    totals = sum_over_ranks(ctx, totals)
    metrics = {
        "accuracy": totals["correct"] / totals["examples"],
        "ppl": safe_exp(totals["nll"] / totals["target_tokens"]),
        "num_examples": int(totals["examples"]),
    }
    log_rank0(logger, "LAMBADA%s: %d of %d correct", " (strict)" if strict else "", int(totals["correct"]),
              int(totals["examples"]))
    return TaskResult(metrics=metrics, details={"strict": strict, "num_correct": int(totals["correct"]),
                                                "num_target_tokens": int(totals["target_tokens"])})


# ---- detokenizers -------------------------------------------------------------------------------------------------
# WikiText-103 ships tokenized ("word @-@ word", "end .", "( x )"); these rules undo that so the BPE sees natural
# text. Order matters: number separators before punctuation, brackets before the heading marks.
_WIKI_LITERAL_BEFORE = (("s '", "s'"), (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "),
                        (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "))
_WIKI_BRACKETS = tuple((re.compile(rf"{re.escape(o)}\s*([^{re.escape(c)}]*?)\s*{re.escape(c)}"), rf"{o}\1{c}")
                       for o, c in (("(", ")"), ("[", "]"), ("{", "}"), ('"', '"'), ("'", "'")))
_WIKI_LITERAL_AFTER = (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
                       (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s"))
_PTB_LITERAL = ((" '", "'"), (" \n", "\n"), ("\n ", "\n"), (" n't", "n't"), (" N ", "1 "), ("$ 1", "$1"),
                ("# 1", "#1"))


def _replace_all(text: str, rules: tuple[tuple[str, str], ...]) -> str:
    for old, new in rules:
        text = text.replace(old, new)
    return text


def wikitext_detokenize(text: str) -> str:
    """WikiText-103's tokenization undone (Megatron's and lm-eval's wikitext rules)."""
    text = _replace_all(text, _WIKI_LITERAL_BEFORE)
    for pattern, repl in _WIKI_BRACKETS:
        text = pattern.sub(repl, text)
    return _replace_all(text, _WIKI_LITERAL_AFTER)


def ptb_detokenize(text: str) -> str:
    """Penn Treebank's tokenization undone (contractions, ``N`` number placeholders, currency)."""
    return _replace_all(text, _PTB_LITERAL)


def lambada_detokenize(text: str) -> str:
    """LAMBADA's curly quotes made straight; the text starts on a new line (Megatron's lambada rule)."""
    return "\n" + text.replace("\N{LEFT DOUBLE QUOTATION MARK}", '"').replace(
        "\N{RIGHT DOUBLE QUOTATION MARK}", '"').strip()


_DETOKENIZERS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("ptb", ptb_detokenize), ("wiki", wikitext_detokenize), ("lambada", lambada_detokenize))


def detokenizer_for(path: str) -> tuple[str, Callable[[str], str]]:
    """``(name, function)`` chosen as Megatron does: the first of ptb, wiki, lambada that is a substring of the
    path. A path with none of them gets the identity (``"none"``), where Megatron would crash."""
    for key, fn in _DETOKENIZERS:
        if key in path:
            return key, fn
    return "none", lambda text: text


# ---- WikiText-103 -------------------------------------------------------------------------------------------------
def count_words(raw: str) -> int:
    """Megatron's word count O of a raw (not yet detokenized) file: the pieces of the stripped text split on single
    spaces (a newline does not separate two pieces; two spaces make an empty one), counted as Megatron counts."""
    return len(raw.strip().split(" "))


def wikitext_windows(num_tokens: int, seq_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, first_scored, end)`` token spans of Megatron's overlapping evaluation, end exclusive.

    Window i reads tokens ``[i * stride, i * stride + seq_length]``; window 0 scores all its targets, every later
    window only its last ``stride`` (each scored with at least ``seq_length - stride`` tokens of context). Token 0
    is never a target. Windows that would score nothing (Megatron's trailing padded ones) are left out, and ``end``
    stops at the last scored token (causal attention makes the tokens after it irrelevant).
    """
    if not 1 <= stride <= seq_length:
        raise ValueError(f"--overlapping-eval ({stride}) must be between 1 and --seq-length ({seq_length}); "
                         "change --overlapping-eval (a larger stride would leave tokens unscored)")
    windows, last = [], num_tokens - 1
    for i in range(math.ceil(max(last - stride, 0) / stride) + 1):
        start = i * stride
        first = start + 1 if i == 0 else start + seq_length - stride + 1
        end = min(start + seq_length, last) + 1
        if first < end:
            windows.append((start, first, end))
    return windows


def run_wikitext(ctx: TaskContext) -> TaskResult:
    """WIKITEXT103: ``loss`` (mean NLL per scored token, nats), ``ppl`` = exp(loss), ``adjusted_ppl`` = exp(loss *
    token_ratio), the word-level perplexity, and ``token_ratio`` = (T - 1) / (O - 1) for T tokens and O words."""
    path = _single_file(ctx)
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc}); --valid-data must be a raw text file") from None
    num_words = count_words(raw)
    name, detokenize = detokenizer_for(path)
    tokens = ctx.tokenizer.tokenize(detokenize(raw))
    if len(tokens) < 2 or num_words < 2:
        raise ValueError(f"{path}: needs at least two words and two tokens to score (has {num_words} words, "
                         f"{len(tokens)} tokens)")
    windows = wikitext_windows(len(tokens), ctx.seq_length, ctx.task.overlapping_eval)
    log_rank0(logger, "WIKITEXT103: %d tokens, %d words, detokenizer %s, %d windows", len(tokens), num_words, name,
              len(windows))
    model = ctx.build_gpt()
    totals = {"nll": 0.0, "scored": 0.0}

    def requests_of(i: int) -> list[Request]:
        start, first, end = windows[i]
        return [Request(tuple(tokens[start:first]), tuple(tokens[first:end]))]

    for _, (score,) in score_shard(ctx, model, len(windows), requests_of, desc="WIKITEXT103"):
        totals["nll"] -= score.logprob
        totals["scored"] += score.num_tokens
    totals = sum_over_ranks(ctx, totals)
    assert int(totals["scored"]) == len(tokens) - 1, f"scored {totals['scored']} of {len(tokens) - 1} targets"
    loss = totals["nll"] / (len(tokens) - 1)
    ratio = (len(tokens) - 1) / (num_words - 1)
    metrics = {"loss": loss, "ppl": safe_exp(loss), "adjusted_ppl": safe_exp(loss * ratio), "token_ratio": ratio}
    return TaskResult(metrics=metrics, details={"num_tokens": len(tokens), "num_words": num_words,
                                                "num_windows": len(windows), "detokenizer": name})
