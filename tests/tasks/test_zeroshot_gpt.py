"""GPT zero-shot evaluation: the batched scoring core against a one-example-at-a-time loop, LAMBADA targets and
accuracy, WikiText windows, detokenizers and perplexities, and the same metrics at DP=2 and TP=2.

``naive_scores`` and ``reshard_to_tp2`` are shared with ``test_multiple_choice.py``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from dist_utils import run_distributed
from megatron.model.gpt import GPTModel
from megatron.parallel.state import ParallelState
from megatron.tasks.common import build_task_config, task_context
from megatron.tasks.gpt_scoring import Request, score_requests, score_shard
from megatron.tasks.zeroshot_gpt import (
    count_words, detokenizer_for, lambada_request, ptb_detokenize, read_lambada, wikitext_detokenize,
    wikitext_windows,
)
from megatron.training.checkpointing import TRACKER_FILENAME, checkpoint_path, iteration_dir, read_checkpoint
from training.conftest import load_entry_script

# Batched scoring differs from the one-row loop only by float summation order (other batch widths and padding
# lengths, TP's split GEMMs): measured <= 2e-6 relative on log-prob sums of ~5-150 nats. 1e-5 is well above that,
# while a wrong position, target or truncation changes a sum by >= 1e-2.
RTOL = 1e-5

KJV = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
    "And God called the light Day, and the darkness he called Night. And the evening and the morning were the "
    "first day, and God said, Let there be a firmament in the midst of the waters.",
    "And God made the firmament, and divided the waters which were under the firmament from the waters",
]


# ---- shared helpers -----------------------------------------------------------------------------------------------
def run_task(*argv):
    """tasks/main.py in-process (the conftest helper, importable from spawned ranks too)."""
    return load_entry_script("tasks/main.py").main([str(a) for a in argv])


def naive_scores(model, pairs, seq_length: int, eod: int, real_vocab: int) -> list[tuple[float, bool]]:
    """The spec, one example at a time: ``(sum of log p(continuation), all greedy)`` from a log-softmax over the
    whole (TP=1) vocabulary, the context cut on the left to fit, an empty context read as EOD."""
    out, device = [], next(model.parameters()).device
    for context, continuation in pairs:
        toks = ((list(context) or [eod]) + list(continuation))[-(seq_length + 1):]
        with torch.no_grad():
            logits = model(torch.tensor([toks[:-1]], device=device))[0].double().cpu()  # [s, V]
        logp = torch.log_softmax(logits, dim=-1)
        positions = range(len(toks) - 1 - len(continuation), len(toks) - 1)
        out.append((sum(float(logp[p, toks[p + 1]]) for p in positions),
                    all(int(logits[p, :real_vocab].argmax()) == toks[p + 1] for p in positions)))
    return out


def load_lm(checkpoint: str):
    """``(ctx, model)`` of a one-process task context on ``checkpoint`` (the model the runners build)."""
    cfg, task = build_task_config(["--task", "LAMBADA", "--load", checkpoint])
    with task_context(cfg, task) as ctx:
        return ctx, ctx.build_gpt()


def reshard_to_tp2(src: str, dst: Path) -> str:
    """Copy the TP=1 checkpoint ``src`` to ``dst`` split over two tensor-parallel ranks (each TP-sharded tensor cut
    along its partition dimension, as the model's own initialization shards it)."""
    cfg, _ = build_task_config(["--task", "LAMBADA", "--load", src])
    params = dict(GPTModel(cfg.model, ParallelState.single(), 512).named_parameters())
    payload, tag, _ = read_checkpoint(src)
    for tp_rank in range(2):
        state = {}
        for name, tensor in payload["model"].items():
            p = params.get(name)
            if p is not None and getattr(p, "tensor_model_parallel", False):
                tensor = tensor.chunk(2, dim=p.partition_dim)[tp_rank].clone()
            state[name] = tensor
        path = checkpoint_path(dst, tag, tp_rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**payload, "model": state, "tensor_model_parallel_size": 2}, path)
    shutil.copy(iteration_dir(src, tag) / "config.json", iteration_dir(dst, tag) / "config.json")
    (dst / TRACKER_FILENAME).write_text(f"{tag}\n", encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="module")
def lm(gpt_checkpoint):
    return load_lm(gpt_checkpoint["load"])


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- scoring core -------------------------------------------------------------------------------------------------
def test_batched_scoring_equals_naive_loop(lm):
    """score_requests (length-sorted micro-batches of 3, right padding with EOD, left truncation, an empty context)
    returns, in the caller's order, the naive per-example log-prob sums and greedy flags; the greedy check ignores
    ids beyond the real vocabulary; score_shard keeps example order across passes; a continuation longer than the
    sequence is refused."""
    ctx, model = lm
    tok = ctx.tokenizer
    ids = [tok.tokenize(t) for t in KJV]
    long_ctx = ids[4] + ids[5]  # 60+ tokens: must lose its start to fit 32
    greedy_next = naive_greedy(model, ids[0][:6], 3)
    requests = [Request(tuple(ids[0][:6]), tuple(greedy_next)), Request(tuple(ids[1][:-3]), tuple(ids[1][-3:])),
                Request((), tuple(ids[2][:5])), Request(tuple(long_ctx), tuple(ids[3][:4])),
                Request(tuple(ids[3][:2]), tuple(ids[3][2:3])), Request(tuple(ids[5][:-20]), tuple(ids[5][-20:]))]
    # Pretend the ids from the largest greedy token up are embedding padding: that token may then never win.
    for real_vocab in (tok.vocab_size, max(greedy_next)):
        got = score_requests(model, requests, seq_length=32, micro_batch_size=3, eod=tok.eod, real_vocab=real_vocab,
                             device=ctx.device)
        want = naive_scores(model, [(r.context, r.continuation) for r in requests], 32, tok.eod, real_vocab)
        assert [s.num_tokens for s in got] == [len(r.continuation) for r in requests]
        assert [s.greedy for s in got] == [w[1] for w in want]
        for s, (logprob, _) in zip(got, want):
            assert s.logprob == pytest.approx(logprob, rel=RTOL)
    assert got[0].greedy is False
    # score_shard (one process: every example) gives the same scores in example order, in one pass or in several.
    for per_pass in (2, 4096):
        shard = list(score_shard(ctx, model, len(requests), lambda i: [requests[i]], examples_per_pass=per_pass))
        assert [i for i, _ in shard] == list(range(len(requests)))
        assert [s.logprob for _, (s,) in shard] == pytest.approx([lp for lp, _ in want], rel=RTOL)
    assert score_requests(model, requests[:1], seq_length=32, micro_batch_size=3, eod=tok.eod,
                          real_vocab=tok.vocab_size, device=ctx.device)[0].greedy
    with pytest.raises(ValueError, match="continuation of 33 tokens does not fit the sequence length 32"):
        score_requests(model, [Request((1,), tuple(long_ctx[:33]))], seq_length=32, micro_batch_size=2,
                       eod=tok.eod, real_vocab=tok.vocab_size)


def naive_greedy(model, prefix: list[int], n: int) -> list[int]:
    """``n`` greedy tokens after ``prefix``."""
    out, device = list(prefix), next(model.parameters()).device
    for _ in range(n):
        with torch.no_grad():
            out.append(int(model(torch.tensor([out], device=device))[0, -1].argmax()))
    return out[len(prefix):]


# ---- LAMBADA ------------------------------------------------------------------------------------------------------
def test_lambada_targets_non_strict_and_strict(lm):
    """Non-strict: the target is the last BPE token of the whole text (here only the tail of the last word);
    strict: the last whitespace word with its leading space (punctuation included), after its LAST occurrence,
    with the stripped text before it as the context."""
    tok = lm[0].tokenizer
    text = "And God called the light Day"
    ids = tok.tokenize(text)
    loose = lambada_request(tok, text, strict=False)
    assert loose == Request(tuple(ids[:-1]), tuple(ids[-1:]))
    strict = lambada_request(tok, text, strict=True)
    assert strict == Request(tuple(tok.tokenize("And God called the light")), tuple(tok.tokenize(" Day")))
    assert tok.detokenize(strict.continuation) == " Day" and len(strict.continuation) > 1
    assert tok.detokenize(loose.continuation) != " Day"
    strict = lambada_request(tok, "the light, and the light\n", strict=True)
    assert strict == Request(tuple(tok.tokenize("the light, and the")), tuple(tok.tokenize(" light")))
    strict = lambada_request(tok, "he called Night.", strict=True)
    assert tok.detokenize(strict.continuation) == " Night."


def _lambada_texts(lm) -> list[str]:
    """KJV passages plus three whose last token is the model's own greedy choice (so accuracy is not 0)."""
    ctx, model = lm
    tok, texts = ctx.tokenizer, list(KJV)
    for text in KJV[:4]:
        prefix = tok.tokenize(text)[:7]
        candidate = tok.detokenize(prefix + naive_greedy(model, prefix, 1))
        if tok.tokenize(candidate)[:-1] == prefix:
            texts.append(candidate)
    return texts


@pytest.mark.parametrize("strict", [False, True])
def test_lambada_end_to_end_equals_naive(lm, gpt_checkpoint, tmp_path, strict):
    """tasks/main.py --task LAMBADA reports the naive accuracy (all target tokens greedy) and target perplexity,
    and --results-file holds {"task", "metrics"} with those keys."""
    ctx, model = lm
    texts = _lambada_texts(lm)
    data = _write_jsonl(tmp_path / "lambada.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "results" / "lambada.json"
    argv = ["--task", "LAMBADA", "--valid-data", data, "--load", gpt_checkpoint["load"],
            "--eval-micro-batch-size", "3", "--results-file", out] + (["--strict-lambada"] if strict else [])
    result = run_task(*argv)
    tok = ctx.tokenizer
    pairs = []
    for text in texts:  # Megatron's definitions, written out again
        if strict:
            word = text.split()[-1]
            pairs.append((tok.tokenize(text[:text.rfind(word)].strip()), tok.tokenize(" " + word)))
        else:
            pairs.append((tok.tokenize(text)[:-1], tok.tokenize(text)[-1:]))
    naive = naive_scores(model, pairs, 32, tok.eod, tok.vocab_size)
    accuracy = sum(g for _, g in naive) / len(texts)
    ppl = math.exp(-sum(lp for lp, _ in naive) / sum(len(c) for _, c in pairs))
    if not strict:
        assert 0 < accuracy < 1
    assert result.metrics["accuracy"] == accuracy and result.metrics["num_examples"] == len(texts)
    assert result.metrics["ppl"] == pytest.approx(ppl, rel=RTOL)
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["task"] == "LAMBADA" and set(saved["metrics"]) == {"accuracy", "ppl", "num_examples"}
    assert saved["metrics"]["accuracy"] == accuracy


@pytest.mark.parametrize("line, message", [
    ('{"text": "ok"', "not valid JSON"),
    ('{"txt": "a b"}', 'missing key "text"'),
    ('["a b"]', 'missing key "text"'),
    ('{"text": "  "}', 'missing key "text"'),
])
def test_lambada_bad_rows_name_file_and_line(tmp_path, line, message):
    """A bad LAMBADA row is a ValueError naming file:line and what is wrong."""
    path = tmp_path / "lambada.jsonl"
    path.write_text('{"text": "fine text"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path}:3: {message}"):
        read_lambada(str(path))


def test_lambada_cli_errors(gpt_checkpoint, tmp_path):
    """Through tasks/main.py a bad row stops the run with that ValueError; two files or few-shot flags are refused
    (not silently ignored)."""
    path = _write_jsonl(tmp_path / "l.jsonl", [{"text": "a b"}, {"sentence": "c d"}])
    load = ["--load", gpt_checkpoint["load"]]
    with pytest.raises(ValueError, match=rf"{path}:2: missing key \"text\""):
        run_task("--task", "LAMBADA", "--valid-data", path, *load)
    with pytest.raises(ValueError, match="exactly one file; pass one path to --valid-data"):
        run_task("--task", "LAMBADA", "--valid-data", path, path, *load)
    with pytest.raises(NotImplementedError, match="zero-shot only: drop --num-fewshot"):
        run_task("--task", "WIKITEXT103", "--valid-data", path, "--num-fewshot", "2", *load)


# ---- WikiText -----------------------------------------------------------------------------------------------------
def _megatron_targets(num_tokens: int, seq_length: int, stride: int) -> list[tuple[int, int]]:
    """(target index, window start) of every scored target of Megatron's padded, masked windows."""
    out = []
    for i in range(max(math.ceil(max(num_tokens - 1 - stride, 0) / stride) + 1, 1)):
        start = i * stride
        keep = range(seq_length) if i == 0 or stride == seq_length else range(seq_length - stride, seq_length)
        out += [(start + 1 + p, start) for p in keep if start + 1 + p < num_tokens]
    return out


def test_wikitext_windows_score_every_token_but_the_first_once():
    """Every target 1..T-1 is scored exactly once, by the same window (same context) as Megatron's masked windows;
    windows never exceed seq_length + 1 tokens; a stride above seq_length is refused."""
    for seq_length in (1, 4, 7, 16):
        for stride in range(1, seq_length + 1):
            for num_tokens in range(1, 50):
                windows = wikitext_windows(num_tokens, seq_length, stride)
                ours = [(t, start) for start, first, end in windows for t in range(first, end)]
                assert sorted(t for t, _ in ours) == list(range(1, num_tokens))
                assert sorted(ours) == sorted(_megatron_targets(num_tokens, seq_length, stride))
                assert all(end - start <= seq_length + 1 for start, _, end in windows)
    with pytest.raises(ValueError, match=r"--overlapping-eval \(32\) must be between 1 and --seq-length \(16\)"):
        wikitext_windows(100, 16, 32)


def test_detokenizers_and_selection_by_path():
    """The wikitext rules rejoin @-@/@,@/@.@, close up punctuation, brackets, quotes, heading marks and
    contractions; the PTB rules join n't and 's and the N/$ placeholders; the detokenizer follows the path
    (ptb before wiki before lambada, identity otherwise); words are counted on the raw text split on spaces."""
    raw = ('The 1 @,@ 000 @-@ year old ( big ) man said " hi " . He \'s in the players \' club , at 3 @.@ 5 '
           "for about N people ; yes : no ! \n = = Life = = \n")
    assert wikitext_detokenize(raw) == ("The 1,000-year old (big) man said \"hi\". He's in the players' club, at "
                                        "3.5 for about 1 people; yes: no!\n== Life ==\n")
    assert ptb_detokenize("i do n't know , the $ N million \n it 's") == "i don't know , the $1 million\nit's"
    assert detokenizer_for("/data/wikitext-103/wiki.test.tokens")[0] == "wiki"
    assert detokenizer_for("/ptb/wiki.txt")[0] == "ptb"
    assert detokenizer_for("lambada_test.txt")[0] == "lambada"
    name, fn = detokenizer_for("corpus.txt")
    assert name == "none" and fn("a  b ") == "a  b "
    assert count_words(" a b\nc  d \n") == 4  # "a", "b\nc", "", "d"


def _megatron_wikitext_nll(model, tokens, seq_length, stride, eod) -> tuple[float, int]:
    """Σ loss and count over Megatron's EOD-padded windows with their loss masks (the model's own CE path)."""
    total, count, device = 0.0, 0, next(model.parameters()).device
    for i in range(max(math.ceil(max(len(tokens) - 1 - stride, 0) / stride) + 1, 1)):
        window = tokens[i * stride:i * stride + seq_length + 1]
        mask = torch.tensor([1.0] * (len(window) - 1) + [0.0] * (seq_length + 1 - len(window)))
        window = window + [eod] * (seq_length + 1 - len(window))
        if i > 0 and stride != seq_length:
            mask[:-stride] = 0
        with torch.no_grad():
            loss = model(torch.tensor([window[:-1]], device=device), labels=torch.tensor([window[1:]], device=device))
        loss = loss[0].cpu()
        total += float((loss.double() * mask).sum())
        count += int(mask.sum())
    return total, count


WIKI_RAW = (" = Genesis = \n \n In the beginning God created the heaven and the earth . And the earth was without "
            "form , and void ; and darkness was upon the face of the deep @-@ waters . \n And God said , Let there "
            "be light : and there was light . And God saw the light , that it was good . \n")


def test_wikitext_end_to_end_equals_megatron_windows(lm, gpt_checkpoint, tmp_path):
    """--task WIKITEXT103 with --seq-length 16 --overlapping-eval 4 reports Megatron's loss (padded masked windows
    through the model's CE), ppl, token ratio (T-1)/(O-1) with O counted before detokenizing, and adjusted ppl =
    exp(loss * ratio)."""
    ctx, model = lm
    path = tmp_path / "wiki.test.tokens"
    path.write_text(WIKI_RAW, encoding="utf-8")
    result = run_task("--task", "WIKITEXT103", "--valid-data", path, "--load", gpt_checkpoint["load"],
                      "--seq-length", "16", "--overlapping-eval", "4", "--eval-micro-batch-size", "3")
    tokens = ctx.tokenizer.tokenize(wikitext_detokenize(WIKI_RAW))
    nll, count = _megatron_wikitext_nll(model, tokens, 16, 4, ctx.tokenizer.eod)
    assert count == len(tokens) - 1 > 40
    loss, ratio = nll / count, (len(tokens) - 1) / (len(WIKI_RAW.strip().split(" ")) - 1)
    assert result.metrics["loss"] == pytest.approx(loss, rel=RTOL)
    assert result.metrics["ppl"] == pytest.approx(math.exp(loss), rel=RTOL)
    assert result.metrics["token_ratio"] == ratio
    assert result.metrics["adjusted_ppl"] == pytest.approx(math.exp(loss * ratio), rel=RTOL)
    assert result.details["detokenizer"] == "wiki"


# ---- DP=2 and TP=2 ------------------------------------------------------------------------------------------------
def _zeroshot_argv(ckpt: str, lambada: Path, wiki: Path) -> list[list[str]]:
    return [["--task", "LAMBADA", "--valid-data", str(lambada), "--load", ckpt, "--strict-lambada",
             "--eval-micro-batch-size", "2"],
            ["--task", "LAMBADA", "--valid-data", str(lambada), "--load", ckpt, "--eval-micro-batch-size", "2"],
            ["--task", "WIKITEXT103", "--valid-data", str(wiki), "--load", ckpt, "--seq-length", "16",
             "--overlapping-eval", "4", "--eval-micro-batch-size", "2"]]


def _two_rank_body(rank: int, world_size: int, runs: list[list[str]]) -> list[dict]:
    return [run_task(*argv).metrics for argv in runs]


@pytest.mark.distributed
def test_dp2_and_tp2_match_one_process(lm, gpt_checkpoint, tmp_path):
    """LAMBADA (strict and not) and WikiText metrics at DP=2 (examples/windows split over ranks, sums pooled) and
    at TP=2 (vocab-parallel logits, resharded checkpoint) equal the one-process metrics on every rank."""
    lambada = _write_jsonl(tmp_path / "lambada.jsonl", [{"text": t} for t in _lambada_texts(lm)])
    wiki = tmp_path / "wiki.test.tokens"
    wiki.write_text(WIKI_RAW, encoding="utf-8")
    single = [run_task(*argv).metrics for argv in _zeroshot_argv(gpt_checkpoint["load"], lambada, wiki)]
    tp2 = reshard_to_tp2(gpt_checkpoint["load"], tmp_path / "tp2")
    runs = _zeroshot_argv(gpt_checkpoint["load"], lambada, wiki)
    runs += [argv + ["--tensor-model-parallel-size", "2"] for argv in _zeroshot_argv(tp2, lambada, wiki)]
    for per_rank in run_distributed(_two_rank_body, 2, runs, timeout_s=300):
        for got, want in zip(per_rank, single + single):
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=RTOL), key
