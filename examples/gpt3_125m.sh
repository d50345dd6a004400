#!/usr/bin/env bash
# GPT-3 Small (125M) with the hyperparameters of Brown et al. 2020, Table 2.1: 12 layers, hidden 768, 12 heads,
# sequence 2048, batch 0.5M tokens (256 sequences), Adam (0.9, 0.95, eps 1e-8), lr 6e-4 with linear warmup over
# 375M tokens and cosine decay to 10% over 260B tokens, weight decay 0.1, gradient clipping 1.0, 300B tokens.
# bf16 here (the paper does not state its precision; use --fp16 for the Megatron-DeepSpeed recipes' choice).
#
# One node:      NPROC=8 DATA_PATH=data/pile_text_document bash examples/gpt3_125m.sh
# Several nodes: NNODES=4 NODE_RANK=<0..3> MASTER_ADDR=<host of rank 0> bash examples/gpt3_125m.sh
# See examples/README.md for the torchrun rendezvous flags.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-6000}
DATA_PATH=${DATA_PATH:-data/kjv_text_document}
MBS=${MBS:-8}          # per-GPU micro-batch; global batch stays 256 (gradient accumulation fills the rest)
TP=${TP:-1}
RUN=${RUN:-runs/gpt3_125m}

"$PY" -m torch.distributed.run \
  --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  pretrain_gpt.py \
  --model-flavor gpt-125m --seq-length 2048 --max-position-embeddings 2048 \
  --tensor-model-parallel-size "$TP" \
  --micro-batch-size "$MBS" --global-batch-size 256 \
  --train-tokens 300000000000 \
  --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine \
  --lr-warmup-tokens 375000000 --lr-decay-tokens 260000000000 \
  --adam-beta1 0.9 --adam-beta2 0.95 --adam-eps 1e-8 --weight-decay 0.1 --clip-grad 1.0 \
  --init-method-std 0.02 --bf16 --use-distributed-optimizer \
  --data-path "$DATA_PATH" --tokenizer-type GPT2BPETokenizer --split 949,50,1 \
  --log-interval 100 --eval-interval 1000 --eval-iters 10 \
  --save "$RUN/checkpoints" --load "$RUN/checkpoints" --allow-missing-checkpoint --save-interval 10000 \
  --exit-signal-handler \
  --tensorboard-dir "$RUN/tensorboard" --metrics-file "$RUN/metrics.jsonl" \
  "$@"
