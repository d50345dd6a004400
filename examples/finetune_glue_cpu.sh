#!/usr/bin/env bash
# BERT fine-tuning on CPU: the BERT of examples/pretrain_bert_cpu.sh (saved in runs/bert_cpu/checkpoints) fine-tuned
# on PROXY GLUE tasks made from the KJV Bible, then the GLUE-style average. Real GLUE data is not installed here;
# tools/make_proxy_glue.py writes files in the exact GLUE formats whose labels are learnable stand-ins (SST-2: which
# testament a verse is from; MRPC/RTE/QNLI: are two verses consecutive; CoLA: a verse vs its words shuffled; STS-B:
# 5 x word overlap; QQP: a verse vs itself minus a word; MNLI: next verse / same book / other testament). The scores
# say whether the pipeline works, not how good the model is at GLUE.
#
#   bash examples/pretrain_bert_cpu.sh              # first, once: writes runs/bert_cpu/checkpoints
#   bash examples/finetune_glue_cpu.sh [extra tasks/main.py flags]
#
# Sizes: 1,000 training and 200 dev examples per task (data/proxy_glue, reused when present), sequence 128,
# batch 16, 3 epochs, lr 3e-4 with 10% warmup (a small, briefly pretrained model needs more than BERT's 2e-5),
# one seed. A few minutes per task on two cores. After the 200 pretraining iterations the single-sentence proxies
# learn (measured: SST-2 70% accuracy, CoLA Matthews 0.37, STS-B Spearman 0.13, MNLI 36%) while the pair proxies
# (consecutive verses: MRPC, RTE, QNLI; QQP) stay at chance; longer pretraining is what moves them.
# Results: runs/glue_cpu/{TASK}_lr{LR}_seed{SEED}.json (replaced) and the table of tools/glue_average.py.
# Environment: CKPT (default runs/bert_cpu/checkpoints), TASKS (default all eight), TRAIN_SIZE, DEV_SIZE, EPOCHS,
# LR, SEED, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CKPT=${CKPT:-runs/bert_cpu/checkpoints}
OUT=runs/glue_cpu
DATA=data/proxy_glue
TASKS=${TASKS:-SST2 MRPC RTE COLA STSB QNLI QQP MNLI}
TRAIN_SIZE=${TRAIN_SIZE:-1000}
DEV_SIZE=${DEV_SIZE:-200}
EPOCHS=${EPOCHS:-3}
LR=${LR:-3e-4}
SEED=${SEED:-1234}
declare -A DIRS=([MNLI]=MNLI [QQP]=QQP [QNLI]=QNLI [SST2]=SST-2 [COLA]=CoLA [STSB]=STS-B [MRPC]=MRPC [RTE]=RTE)

if [ ! -f "$CKPT/latest_checkpointed_iteration.txt" ]; then
  echo "no BERT checkpoint in $CKPT: run bash examples/pretrain_bert_cpu.sh first (or set CKPT)" >&2
  exit 2
fi
if [ ! -f "$DATA/done_${TRAIN_SIZE}_${DEV_SIZE}" ]; then
  "$PY" tools/make_proxy_glue.py --output-dir "$DATA" --train-size "$TRAIN_SIZE" --dev-size "$DEV_SIZE"
  touch "$DATA/done_${TRAIN_SIZE}_${DEV_SIZE}"
fi
rm -rf "$OUT"
mkdir -p "$OUT"

for TASK in $TASKS; do
  DIR="$DATA/${DIRS[$TASK]}"
  VALID=("$DIR/dev.tsv")
  [ "$TASK" = MNLI ] && VALID=("$DIR/dev_matched.tsv" "$DIR/dev_mismatched.tsv")
  echo "=== $TASK (proxy) ==="
  "$PY" tasks/main.py --task "$TASK" --train-data "$DIR/train.tsv" --valid-data "${VALID[@]}" \
    --pretrained-checkpoint "$CKPT" --epochs "$EPOCHS" --seq-length 128 \
    --micro-batch-size 16 --global-batch-size 16 \
    --lr "$LR" --lr-decay-style linear --lr-warmup-fraction 0.1 --weight-decay 0.1 --clip-grad 1.0 \
    --seed "$SEED" --log-interval 20 --results-file "$OUT/${TASK}_lr${LR}_seed${SEED}.json" "$@"
done

"$PY" tools/glue_average.py "$OUT"
