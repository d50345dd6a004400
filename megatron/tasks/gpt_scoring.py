"""Log-likelihood scoring of token continuations with a GPT, the core of every zero-/few-shot GPT task.

A :class:`Request` is a pair of token lists (context, continuation); :func:`score_requests` returns, per request,
the summed log-probability of the continuation given the context, whether every continuation token is the model's
greedy (argmax) choice, and the number of continuation tokens. Requests are batched longest first and padded on
the right with EOD, so batching never changes a request's score beyond float summation order. :func:`score_shard`
and :func:`sum_over_ranks` split examples over data-parallel ranks and pool their sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from megatron.data.tokenizers.base import MegatronTokenizer
from megatron.parallel.mappings import gather_from_tensor_model_parallel_region

if TYPE_CHECKING:  # pragma: no cover - typing only
    from megatron.tasks.common import TaskContext

__all__ = ["Request", "Score", "encode_pair", "request_tokens", "length_sorted_batches", "score_requests",
           "score_shard", "sum_over_ranks"]


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` given ``context`` (token ids). An empty context is read as a lone EOD token, the
    document boundary the model saw before every document in pretraining."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    """The model's verdict on one request's continuation."""

    logprob: float
    """Sum over continuation tokens of log p(token | everything before it), natural log."""
    greedy: bool
    """Every continuation token is the argmax over the real (unpadded) vocabulary."""
    num_tokens: int


def encode_pair(tokenizer: MegatronTokenizer, context: str, continuation: str,
                context_ids: Sequence[int] | None = None) -> Request:
    """Tokenize ``context + continuation`` as one text and split it where the context's own tokens end.

    Tokenizing the whole text keeps the merges a tokenizer makes across the seam; when the context's tokens are
    not a prefix of the whole (a merge across the seam), the continuation is tokenized on its own instead.
    Trailing whitespace of the context moves to the continuation, since BPE vocabularies attach a space to the
    word after it. ``context_ids``: the tokens of ``context.rstrip()`` if already known (choices sharing a prompt).
    """
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = tokenizer.tokenize(stripped + continuation)
    if context_ids is not None:
        head = list(context_ids)
    else:
        head = tokenizer.tokenize(stripped) if stripped else []
    if whole[:len(head)] == head and len(whole) > len(head):
        return Request(tuple(head), tuple(whole[len(head):]))
    return Request(tuple(head), tuple(tokenizer.tokenize(continuation)))


def request_tokens(request: Request, seq_length: int, eod: int) -> list[int]:
    """The ``<= seq_length + 1`` tokens fed for ``request``: ``(context + continuation)[-(seq_length + 1):]``, the
    context cut on the left when too long (the model sees ``seq_length`` inputs; the last token is only a target).

    Raises:
        ValueError: the continuation alone is empty or longer than ``seq_length`` tokens.
    """
    n = len(request.continuation)
    if n == 0:
        raise ValueError("a request's continuation has no tokens; every scored text must be non-empty")
    if n > seq_length:
        raise ValueError(
            f"a continuation of {n} tokens does not fit the sequence length {seq_length}; raise --seq-length "
            "(up to the model's --max-position-embeddings) or shorten the scored text"
        )
    context = list(request.context) or [eod]
    return (context + list(request.continuation))[-(seq_length + 1):]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` in batches of ``batch_size``, longest first (ties in input order), so each batch
    pads to nearly the same length and the first batch shows at once whether the longest one fits in memory."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _score_batch(model: nn.Module, rows: list[list[int]], num_scored: list[int], *, pad_id: int, real_vocab: int,
                 tp_group, device: torch.device) -> list[Score]:
    """Scores of one batch: ``rows[i]`` is a request's tokens, its last ``num_scored[i]`` are the continuation."""
    width = max(len(r) for r in rows) - 1
    tokens = torch.full((len(rows), width + 1), pad_id, dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)  # [b, s]: position predicts a continuation token
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        scored[i, len(row) - 1 - num_scored[i]:len(row) - 1] = True
    tokens, scored = tokens.to(device), scored.to(device)
    logits = model(tokens[:, :-1])  # [b, s, V/tp]
    # Only the scored positions are gathered over the vocabulary shards: [n, V/tp] -> [n, V], far smaller than
    # gathering every position (the full-vocabulary rows are what the argmax and the normalizer need).
    picked = gather_from_tensor_model_parallel_region(logits[scored], tp_group).float()  # [n, V]
    targets = tokens[:, 1:][scored]  # [n]
    # The log-softmax runs over the padded vocabulary, as the pretraining loss did; the padding entries only ever
    # lose the argmax (they are not tokens the tokenizer can produce).
    logprobs = F.log_softmax(picked, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [n]
    hits = picked[:, :real_vocab].argmax(dim=-1) == targets  # [n]
    out, start = [], 0
    for n in num_scored:  # the scored positions come row by row, in order
        out.append(Score(logprob=float(logprobs[start:start + n].double().sum()),
                         greedy=bool(hits[start:start + n].all()), num_tokens=n))
        start += n
    return out


def score_requests(
    model: nn.Module, requests: Sequence[Request], *, seq_length: int, micro_batch_size: int, eod: int,
    real_vocab: int, tp_group=None, device: torch.device | str = "cpu",
    progress: Callable[[Iterable, int, str], Iterator] | None = None, desc: str = "scoring",
) -> list[Score]:
    """Score every request with ``model`` (a GPT returning vocab-parallel logits ``[b, s, V/tp]``).

    Args:
        seq_length: the longest input; longer requests lose context tokens on the left (:func:`request_tokens`).
        micro_batch_size: requests per forward pass.
        eod: padding id (right padding, never attended to by the causal positions that are scored) and the
            stand-in for an empty context.
        real_vocab: the tokenizer's vocabulary size; ids at or above it are embedding padding and never win the
            greedy check.
        tp_group: the tensor-parallel group (every TP rank must pass the same requests).
        progress: ``ctx.progress``-like wrapper for the batch loop.

    Returns:
        One :class:`Score` per request, in the order of ``requests``.
    """
    rows = [request_tokens(r, seq_length, eod) for r in requests]
    num_scored = [len(r.continuation) for r in requests]
    batches = length_sorted_batches([len(r) for r in rows], micro_batch_size)
    scores: list[Score | None] = [None] * len(requests)
    loop = progress(batches, len(batches), desc) if progress is not None else batches
    for batch in loop:
        results = _score_batch(model, [rows[i] for i in batch], [num_scored[i] for i in batch], pad_id=eod,
                               real_vocab=real_vocab, tp_group=tp_group, device=torch.device(device))
        for i, score in zip(batch, results):
            scores[i] = score
    return scores  # type: ignore[return-value]


def score_shard(ctx: TaskContext, model: nn.Module, num_examples: int,
                requests_of: Callable[[int], list[Request]], desc: str = "scoring",
                examples_per_pass: int = 4096) -> Iterator[tuple[int, list[Score]]]:
    """Score this data-parallel rank's share of the examples (``ctx.shard``), length-sorted within passes of
    ``examples_per_pass`` examples (which bounds the memory the tokenized prompts take on large benchmarks).

    Args:
        requests_of: example index -> its requests (an example's choices stay together on one rank, so decisions
            that compare them need no communication).

    Yields:
        ``(example index, its scores in the order of its requests)`` for every example of this rank, in order.
    """
    indices = list(ctx.shard(num_examples))
    passes = [indices[i:i + examples_per_pass] for i in range(0, len(indices), examples_per_pass)]
    for n, chunk in enumerate(passes):
        per_example = [requests_of(i) for i in chunk]
        scores = score_requests(
            model, [r for reqs in per_example for r in reqs], seq_length=ctx.seq_length,
            micro_batch_size=ctx.eval_micro_batch_size, eod=ctx.tokenizer.eod, real_vocab=ctx.tokenizer.vocab_size,
            tp_group=ctx.pstate.tp_group, device=ctx.device, progress=ctx.progress,
            desc=desc if len(passes) == 1 else f"{desc} ({n + 1}/{len(passes)})",
        )
        start = 0
        for i, reqs in zip(chunk, per_example):
            yield i, scores[start:start + len(reqs)]
            start += len(reqs)


def sum_over_ranks(ctx: TaskContext, totals: dict[str, float]) -> dict[str, float]:
    """``totals`` summed over the data-parallel ranks (same keys; every rank must pass the same keys in the same
    order). Sums travel in float64, so counts stay exact and losses lose no precision in the reduction."""
    keys = list(totals)
    return dict(zip(keys, ctx.all_reduce_sum([totals[k] for k in keys])))
