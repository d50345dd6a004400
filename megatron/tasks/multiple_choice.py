"""Zero- and few-shot multiple-choice evaluation of a GPT checkpoint, scored as lm-evaluation-harness scores it.

Choice i of an example is the continuation ``" " + choice`` after the context (lm-eval's target delimiter is one
space, added here so the choice keeps the leading space BPE vocabularies attach to a word); the prediction is the
choice of highest summed log-probability (``accuracy``) or highest log-probability per character of the choice
(``accuracy_norm``, lm-eval's acc_norm). With ``--num-fewshot k`` each prompt starts with k solved examples
(``context + " " + gold choice``, each followed by a blank line), drawn with ``--fewshot-seed`` from
``--train-data`` or, without it, from the other examples of the same file.
"""

from __future__ import annotations

import random
from typing import Sequence

from megatron.data.tokenizers.base import MegatronTokenizer
from megatron.logging import get_logger, log_rank0
from megatron.tasks.common import TaskContext, TaskResult
from megatron.tasks.gpt_scoring import Request, encode_pair, score_shard, sum_over_ranks
from megatron.tasks.mc_readers import McExample, read_examples

__all__ = ["run_multiple_choice", "TARGET_DELIMITER", "FEWSHOT_DELIMITER", "demonstration", "draw_demonstrations",
           "fewshot_prefix", "example_requests", "predict", "predict_norm"]

logger = get_logger(__name__)

TARGET_DELIMITER = " "
"""Between a context and its continuation (lm-eval's ``target_delimiter``)."""
FEWSHOT_DELIMITER = "\n\n"
"""After each demonstration (lm-eval's ``fewshot_delimiter``)."""


def demonstration(example: McExample) -> str:
    """A solved example for a few-shot prompt: its (gold choice's) context, the delimiter and the gold choice."""
    context, continuation = example.pairs()[example.gold]
    return context + TARGET_DELIMITER + continuation


def draw_demonstrations(pool_size: int, k: int, seed: int, index: int, exclude: int | None) -> list[int]:
    """Indices into the demonstration pool for example ``index``: k distinct ones, never ``exclude``.

    The generator is seeded from ``(seed, index)`` alone, so an example's prompt does not depend on which rank
    scores it, on the DP/TP size or on the other examples (lm-eval draws from one generator in evaluation order,
    which a sharded run could not reproduce). k + 1 indices are drawn when one must be excluded, then the
    excluded one (or the last) is dropped, which keeps the draw O(k) for any pool size.

    Raises:
        ValueError: the pool has fewer than k usable examples.
    """
    if k == 0:
        return []
    need = k + (exclude is not None)
    if pool_size < need:
        raise ValueError(f"--num-fewshot {k} needs at least {need} examples in the demonstration pool, which has "
                         f"{pool_size}; lower --num-fewshot or pass a larger --train-data")
    picks = random.Random(f"{seed}:{index}").sample(range(pool_size), need)
    return [i for i in picks if i != exclude][:k]


def fewshot_prefix(pool: Sequence[McExample], k: int, seed: int, index: int, exclude: int | None) -> str:
    """The k demonstrations of example ``index``, each followed by :data:`FEWSHOT_DELIMITER` ("" for k = 0)."""
    return "".join(demonstration(pool[i]) + FEWSHOT_DELIMITER for i in draw_demonstrations(len(pool), k, seed,
                                                                                           index, exclude))


def example_requests(tokenizer: MegatronTokenizer, example: McExample, prefix: str = "") -> list[Request]:
    """One request per choice: ``prefix + context`` then ``TARGET_DELIMITER + continuation`` (a prompt shared by
    several choices is tokenized once)."""
    heads: dict[str, list[int]] = {}
    out = []
    for context, continuation in example.pairs():
        prompt = (prefix + context).rstrip()
        if prompt not in heads:
            heads[prompt] = tokenizer.tokenize(prompt) if prompt else []
        out.append(encode_pair(tokenizer, prefix + context, TARGET_DELIMITER + continuation, heads[prompt]))
    return out


def predict(logprobs: Sequence[float]) -> int:
    """The choice of highest log-probability (the first one on ties, as ``numpy.argmax``)."""
    return max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))


def predict_norm(logprobs: Sequence[float], choices: Sequence[str]) -> int:
    """lm-eval's acc_norm prediction: log-probability divided by the choice's length in characters (an empty
    choice counts as one character instead of dividing by zero)."""
    return predict([lp / max(len(c), 1) for lp, c in zip(logprobs, choices)])


def _evaluate_file(ctx: TaskContext, model, examples: list[McExample], pool: Sequence[McExample],
                   pool_is_file: bool, desc: str) -> dict[str, float]:
    """This file's sums over all ranks: correct, correct_norm and examples."""
    task = ctx.task

    def requests_of(i: int) -> list[Request]:
        prefix = fewshot_prefix(pool, task.num_fewshot, task.fewshot_seed, i, i if pool_is_file else None)
        return example_requests(ctx.tokenizer, examples[i], prefix)

    totals = {"correct": 0.0, "correct_norm": 0.0, "examples": 0.0}
    for i, scores in score_shard(ctx, model, len(examples), requests_of, desc=desc):
        logprobs, example = [s.logprob for s in scores], examples[i]
        totals["correct"] += float(predict(logprobs) == example.gold)
        totals["correct_norm"] += float(predict_norm(logprobs, example.choices) == example.gold)
        totals["examples"] += 1
    return sum_over_ranks(ctx, totals)


def _metrics(totals: dict[str, float]) -> dict[str, float]:
    n = totals["examples"]
    return {"accuracy": totals["correct"] / n, "accuracy_norm": totals["correct_norm"] / n, "num_examples": int(n)}


def run_multiple_choice(ctx: TaskContext) -> TaskResult:
    """MC: ``accuracy``, ``accuracy_norm`` and ``num_examples`` per ``--valid-data`` file (when several) and
    pooled over all their examples."""
    task = ctx.task
    if not task.valid_data:
        raise ValueError("task MC needs at least one evaluation file: pass --valid-data FILE [FILE ...]")
    train_pool = [ex for path in task.train_data or () for ex in read_examples(path, task.mc_format)]
    if task.train_data and not train_pool:
        raise ValueError(f"--train-data {' '.join(task.train_data)} holds no examples")
    files = []
    for path in task.valid_data:
        rows = read_examples(path, task.mc_format)
        if not rows:
            raise ValueError(f"{path}: no examples; check --valid-data and --mc-format {task.mc_format}")
        files.append((path, rows))
    model = ctx.build_gpt()
    per_file: dict[str, dict[str, float]] = {}
    pooled = {"correct": 0.0, "correct_norm": 0.0, "examples": 0.0}
    for path, rows in files:
        examples = rows[:task.max_examples] if task.max_examples is not None else rows
        # Without --train-data the demonstrations come from the whole file (not only the first --max-examples),
        # so a smoke run sees the same prompts as the full run.
        pool, pool_is_file = (train_pool, False) if train_pool else (rows, True)
        totals = _evaluate_file(ctx, model, examples, pool, pool_is_file, desc=f"MC {path}")
        per_file[path] = _metrics(totals)
        pooled = {k: pooled[k] + totals[k] for k in pooled}
        log_rank0(logger, "%s: %d examples, accuracy %.4f, accuracy_norm %.4f", path, int(totals["examples"]),
                  per_file[path]["accuracy"], per_file[path]["accuracy_norm"])
    details = {"mc_format": task.mc_format, "num_fewshot": task.num_fewshot, "fewshot_seed": task.fewshot_seed,
               "fewshot_pool": "train_data" if train_pool else "valid_data (other examples)"}
    return TaskResult(metrics=_metrics(pooled), per_file=per_file if len(files) > 1 else {}, details=details)
