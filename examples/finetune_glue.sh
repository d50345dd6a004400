#!/usr/bin/env bash
# BERT fine-tuning on GLUE with Megatron-DeepSpeed's bert/finetune_glue recipe, then the single GLUE score.
#
#   bash examples/finetune_glue.sh GLUE_DIR CHECKPOINT_DIR [OUTPUT_DIR] [extra tasks/main.py flags]
#
# GLUE_DIR: the download_glue_data.py layout: MNLI/ QQP/ QNLI/ SST-2/ CoLA/ STS-B/ MRPC/ RTE/, each with train.tsv
#   and dev.tsv (MNLI: dev_matched.tsv and dev_mismatched.tsv, both evaluated and pooled).
# CHECKPOINT_DIR: the pretraining run's --save directory (its latest iteration; the architecture and tokenizer come
#   from its config.json). Pretrain with the binary head: the pooler comes from it.
# OUTPUT_DIR (default runs/glue): one results file per run, OUTPUT_DIR/{TASK}_lr{LR}_seed{SEED}.json (the names
#   tools/glue_average.py documents); runs whose file exists are skipped, so an interrupted grid continues.
#
# Recipe (examples_deepspeed/data_efficiency/bert/finetune_glue): 3 epochs, sequence 512, global batch 32 of micro 8,
# lr 2e-5 (grid 2e-5 3e-5 4e-5 5e-5) x seeds 1234-1238, linear decay, warmup fraction 0.1, weight decay 0.1,
# clip 1.0, fp16 on a GPU. The global batch of 32 is micro 8 x NPROC data-parallel processes x accumulation steps,
# so NPROC is 1, 2 or 4 (default: 4 GPUs when visible, else 2, else 1; one process is CPU-only without GPUs).
# Environment: LRS (default "2e-5"; the paper's grid: LRS="2e-5 3e-5 4e-5 5e-5"), SEEDS ("1234 1235 1236 1237
# 1238"), TASKS ("MNLI QQP QNLI SST2 COLA STSB MRPC RTE"), NPROC, EPOCHS (3), SEQ (512), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
GLUE=${1:?usage: bash examples/finetune_glue.sh GLUE_DIR CHECKPOINT_DIR [OUTPUT_DIR] [flags]}
CKPT=${2:?usage: bash examples/finetune_glue.sh GLUE_DIR CHECKPOINT_DIR [OUTPUT_DIR] [flags]}
OUT=${3:-runs/glue}
shift $(( $# < 3 ? $# : 3 ))
LRS=${LRS:-2e-5}
SEEDS=${SEEDS:-1234 1235 1236 1237 1238}
TASKS=${TASKS:-MNLI QQP QNLI SST2 COLA STSB MRPC RTE}
EPOCHS=${EPOCHS:-3}
SEQ=${SEQ:-512}
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
NPROC=${NPROC:-$(( GPUS >= 4 ? 4 : (GPUS >= 2 ? 2 : 1) ))}
PRECISION=()
[ "$GPUS" -gt 0 ] && PRECISION=(--fp16)
LAUNCH=("$PY")
[ "$NPROC" -gt 1 ] && LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC")
declare -A DIRS=([MNLI]=MNLI [QQP]=QQP [QNLI]=QNLI [SST2]=SST-2 [COLA]=CoLA [STSB]=STS-B [MRPC]=MRPC [RTE]=RTE)
mkdir -p "$OUT"

for TASK in $TASKS; do
  DATA="$GLUE/${DIRS[$TASK]}"
  VALID=("$DATA/dev.tsv")
  [ "$TASK" = MNLI ] && VALID=("$DATA/dev_matched.tsv" "$DATA/dev_mismatched.tsv")
  for LR in $LRS; do
    for SEED in $SEEDS; do
      RESULT="$OUT/${TASK}_lr${LR}_seed${SEED}.json"
      if [ -f "$RESULT" ]; then echo "skipping $TASK lr $LR seed $SEED: $RESULT exists"; continue; fi
      echo "=== $TASK lr $LR seed $SEED ==="
      "${LAUNCH[@]}" tasks/main.py --task "$TASK" --train-data "$DATA/train.tsv" --valid-data "${VALID[@]}" \
        --pretrained-checkpoint "$CKPT" --epochs "$EPOCHS" --seq-length "$SEQ" \
        --micro-batch-size 8 --global-batch-size 32 \
        --lr "$LR" --lr-decay-style linear --lr-warmup-fraction 0.1 --weight-decay 0.1 --clip-grad 1.0 \
        --seed "$SEED" "${PRECISION[@]}" --log-interval 100 --results-file "$RESULT" "$@" \
        2>&1 | tee "$OUT/${TASK}_lr${LR}_seed${SEED}.log"
    done
  done
done

"$PY" tools/glue_average.py "$OUT"
