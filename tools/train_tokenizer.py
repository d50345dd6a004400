"""Train a tokenizer on JSONL documents and write files that ``build_tokenizer`` loads.

Thin CLI over ``megatron.data.preprocessing.tokenizer_training``::

    python tools/prepare_corpus.py --output data/kjv.jsonl
    python tools/train_tokenizer.py --input data/kjv.jsonl --type gpt2bpe --vocab-size 8000 --output-dir tok/kjv_bpe
    python tools/train_tokenizer.py --input data/kjv.jsonl --type sentencepiece --sentencepiece-model-type unigram \\
        --vocab-size 8000 --output-dir tok/kjv_unigram

It prints the preprocessing flags that load the result.
"""

from __future__ import annotations

import argparse
import sys
import time

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data.preprocessing.tokenizer_training import TokenizerTrainingConfig, train_tokenizer
from megatron.data.tokenizers.build import build_tokenizer
from megatron.logging import setup_logging


def _flags(cfg) -> str:
    parts = [f"--tokenizer-type {cfg.tokenizer_type}"]
    for name in ("vocab_file", "merge_file", "tokenizer_model"):
        if getattr(cfg, name) is not None:
            parts.append(f"--{name.replace('_', '-')} {getattr(cfg, name)}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, TokenizerTrainingConfig, title="tokenizer training")
    args = parser.parse_args(argv)
    missing = [f"--{n.replace('_', '-')}" for n in ("input", "output_dir") if not getattr(args, n, None)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    setup_logging()
    start = time.perf_counter()
    try:
        cfg = dataclass_from_namespace(TokenizerTrainingConfig, args)
        result = train_tokenizer(cfg)
        tokenizer = build_tokenizer(result.tokenizer_config)  # proves the files load
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"trained {cfg.type} tokenizer with {tokenizer.vocab_size} ids in {time.perf_counter() - start:.2f} s")
    for path in result.files:
        print(f"wrote {path}")
    print(f"load with: {_flags(result.tokenizer_config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
