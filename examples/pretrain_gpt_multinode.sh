#!/usr/bin/env bash
# GPT-3 1.3B over several nodes with tensor x pipeline x data parallelism, a sequence-length curriculum and
# random-LTD (examples/pipeline/multinode_gpt_1.3b_cl_seqlen_random_ltd.json: layers 1-22 of 24 keep 128 -> 2048 tokens).
#
# Run the same command on every node (torchrun's c10d rendezvous: any node may start first):
#
#   RDZV_HOST=node0.cluster RDZV_PORT=29500 NNODES=4 NPROC=8 DATA_PATH=data/pile_text_document \
#     bash examples/pretrain_gpt_multinode.sh [more pretrain_gpt.py flags]
#
# Parallel sizes (README "Choosing the parallel sizes"): TP (default 2) inside a node, PP (default 2) across nodes,
# DP = NNODES x NPROC / (TP x PP) takes the rest. Ranks are laid out as Megatron's: TP fastest, then DP, then PP, so
# with NPROC a multiple of TP every TP group sits inside one node. PP=2 puts layers 0-11 (and the embeddings) on
# stage 0, layers 12-23 (final norm, loss) on stage 1; VPP=6 (layers per virtual stage) would give each rank two
# chunks and the interleaved 1F1B schedule. Micro-batches per step = 512 / (MBS x DP) must be >= PP
# (interleaved: a multiple of PP). A checkpoint saved at one PP size resumes at another after
# tools/checkpoint/convert_pipeline.py.
#
# Environment: NNODES (1), NPROC (GPUs per node, 8), RDZV_HOST (127.0.0.1), RDZV_PORT (29500), RDZV_ID (gpt-1.3b),
# TP (2), PP (2), VPP (unset), MBS (4), DATA_PATH (data/pile_text_document), VOCAB_FILE / MERGE_FILE (gpt2 files
# under data/), RUN (runs/gpt_1.3b_multinode), PYTHON (.venv/bin/python). DRY_RUN=1 prints the pretrain_gpt.py
# flags, one per line, instead of launching (tests parse them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NNODES=${NNODES:-1}
NPROC=${NPROC:-8}
RDZV_HOST=${RDZV_HOST:-127.0.0.1}
RDZV_PORT=${RDZV_PORT:-29500}
RDZV_ID=${RDZV_ID:-gpt-1.3b}
TP=${TP:-2}
PP=${PP:-2}
MBS=${MBS:-4}
DATA_PATH=${DATA_PATH:-data/pile_text_document}
VOCAB_FILE=${VOCAB_FILE:-data/gpt2-vocab.json}
MERGE_FILE=${MERGE_FILE:-data/gpt2-merges.txt}
RUN=${RUN:-runs/gpt_1.3b_multinode}

FLAGS=(
  --model-flavor gpt-1.3b --num-layers 24 --hidden-size 2048 --num-attention-heads 16
  --seq-length 2048 --max-position-embeddings 2048 --init-method-std 0.013
  --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
  --micro-batch-size "$MBS" --global-batch-size 512
  --train-samples 292968750 --train-tokens 300000000000
  --lr 2e-4 --min-lr 1e-6 --lr-decay-style cosine --lr-warmup-tokens 3000000000 --lr-decay-tokens 300000000000
  --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0 --bf16
  --use-distributed-optimizer --recompute-granularity full --recompute-method uniform
  --data-path "$DATA_PATH" --tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB_FILE" --merge-file "$MERGE_FILE"
  --split 949,50,1 --seed 1234
  --log-interval 100 --eval-interval 1000 --eval-iters 10
  --save "$RUN/checkpoints" --load "$RUN/checkpoints" --allow-missing-checkpoint --save-interval 10000
  --exit-signal-handler --tensorboard-dir "$RUN/tensorboard" --metrics-file "$RUN/metrics.jsonl"
  --deepspeed --deepspeed_config examples/pipeline/multinode_gpt_1.3b_cl_seqlen_random_ltd.json
  --data-efficiency-curriculum-learning --random-ltd
)
if [[ -n "${VPP:-}" ]]; then
  FLAGS+=(--num-layers-per-virtual-pipeline-stage "$VPP")
fi
FLAGS+=("$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${FLAGS[@]}"
  exit 0
fi

exec "$PY" -m torch.distributed.run \
  --nnodes "$NNODES" --nproc-per-node "$NPROC" \
  --rdzv-backend c10d --rdzv-endpoint "$RDZV_HOST:$RDZV_PORT" --rdzv-id "$RDZV_ID" \
  pretrain_gpt.py "${FLAGS[@]}"
