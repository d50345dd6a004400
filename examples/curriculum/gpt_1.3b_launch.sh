#!/usr/bin/env bash
# Shared launcher of the data efficiency GPT-3 1.3B recipes (Data Efficiency paper, arXiv 2212.03597, and
# Megatron-DeepSpeed's examples_deepspeed/data_efficiency/gpt): 24 layers, hidden 2048, 16 heads, sequence 2048,
# learned absolute positions, global batch 512, Adam (0.9, 0.95), weight decay 0.1, clipping 1.0, init std 0.013,
# fp16 (initial scale 2^11, window 500, hysteresis 2), ZeRO-1, activation checkpointing, warmup 3B tokens and
# cosine decay to 1e-6 over the token budget, which stops training (--train-samples is only an upper bound).
# Token budgets and LR are counted in layer-averaged tokens under random-LTD, as Megatron-DeepSpeed does.
#
#   bash examples/curriculum/gpt_1.3b_launch.sh DEEPSPEED_CONFIG.json [pretrain_gpt.py flags ...]
#
# Called by pretrain_gpt_1.3b_cl.sh and ../random_ltd/pretrain_gpt_1.3b_random_ltd.sh. Environment: NPROC (8),
# NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT (torchrun rendezvous), DATA_PATH (data/pile_text_document), MBS (4),
# TRAIN_TOKENS (300e9: 300B; the paper also runs 200B/150B with LR 3e-4/4e-4 and shorter curricula), LR (2e-4),
# RUN (runs/<config name>).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=${1:?usage: gpt_1.3b_launch.sh DEEPSPEED_CONFIG.json [flags]}
shift
PY=${PYTHON:-.venv/bin/python}
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-6000}
DATA_PATH=${DATA_PATH:-data/pile_text_document}
MBS=${MBS:-4}
TRAIN_TOKENS=${TRAIN_TOKENS:-300000000000}
LR=${LR:-2e-4}
RUN=${RUN:-runs/$(basename "$CONFIG" .json)}

"$PY" -m torch.distributed.run \
  --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  pretrain_gpt.py \
  --model-flavor gpt-1.3b --num-layers 24 --hidden-size 2048 --num-attention-heads 16 \
  --seq-length 2048 --max-position-embeddings 2048 --init-method-std 0.013 \
  --micro-batch-size "$MBS" --global-batch-size 512 \
  --train-samples 292968750 --train-tokens "$TRAIN_TOKENS" \
  --lr "$LR" --min-lr 1e-6 --lr-decay-style cosine \
  --lr-warmup-tokens 3000000000 --lr-decay-tokens "$TRAIN_TOKENS" \
  --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0 \
  --fp16 --initial-loss-scale 2048 --loss-scale-window 500 --hysteresis 2 --min-loss-scale 1 \
  --zero-stage 1 --checkpoint-activations --no-pipeline-parallel \
  --data-path "$DATA_PATH" --tokenizer-type GPT2BPETokenizer --split 949,50,1 --seed 1234 \
  --log-interval 100 --eval-interval 100 --eval-iters 10 \
  --save "$RUN/checkpoints" --load "$RUN/checkpoints" --allow-missing-checkpoint --save-interval 10000 \
  --exit-signal-handler \
  --tensorboard-dir "$RUN/tensorboard" --metrics-file "$RUN/metrics.jsonl" \
  --deepspeed --deepspeed_config "$CONFIG" \
  "$@"
