#!/usr/bin/env bash
# BERT on CPU: the KJV Bible -> a WordPiece vocabulary trained on it -> sentence-split tokens -> a small BERT
# pretrained with masked-LM + next-sentence losses for 200 iterations, printing both validation losses.
# Data goes to data/ (reused when present), the run to runs/bert_cpu/ (replaced).
#
#   bash examples/pretrain_bert_cpu.sh [MODE] [extra pretrain_bert.py flags, e.g. --train-iters 50]
#
# MODE (first argument; default baseline) adds the data efficiency library, as quickstart_cpu.sh does for GPT:
#   cl      tools/analyze_data.py --dataset-type bert scores every training sample's vocab rarity (real tokens
#           only); the curriculum starts from the easiest 10% and sequences grow 32 -> 128 (quickstart/bert_cl.json)
#   ltd     random-LTD on encoder layers 1-2 of 4, 32 -> 128 kept tokens over 120 steps (quickstart/bert_ltd.json)
# Each mode writes to runs/bert_cpu_MODE/.
#
# Sizes: 4 layers, hidden 256, 4 heads, sequence 128, 16 sequences per step, an 8,192-token lower-case vocabulary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=runs/bert_cpu
MODE=baseline
case "${1:-}" in baseline|cl|ltd) MODE=$1; shift ;; esac
DE_FLAGS=()
case "$MODE" in
  cl) DE_FLAGS=(--deepspeed_config examples/quickstart/bert_cl.json --data-efficiency-curriculum-learning) ;;
  ltd) DE_FLAGS=(--deepspeed_config examples/quickstart/bert_ltd.json --random-ltd) ;;
esac
[ "$MODE" = baseline ] || RUN=${RUN}_$MODE
# The data flags the analysis and the training must share (sample ids are positions in this training split).
DATA_FLAGS=(--data-path data/kjv_bert_text_sentence --split 949,50,1 --seq-length 128 --seed 1234
            --tokenizer-type BertWordPieceLowerCase --vocab-file data/kjv_wordpiece/vocab.txt)
mkdir -p data

if [ ! -f data/kjv.jsonl ]; then
  "$PY" tools/prepare_corpus.py --corpus kjv --output data/kjv.jsonl
fi
if [ ! -f data/kjv_wordpiece/vocab.txt ]; then
  "$PY" tools/train_tokenizer.py --input data/kjv.jsonl --type wordpiece --lowercase --vocab-size 8192 \
    --output-dir data/kjv_wordpiece
fi
if [ ! -f data/kjv_bert_text_sentence.idx ]; then
  "$PY" tools/preprocess_data.py --input data/kjv.jsonl --output-prefix data/kjv_bert --split-sentences \
    --tokenizer-type BertWordPieceLowerCase --vocab-file data/kjv_wordpiece/vocab.txt --workers 2
fi

if [ "$MODE" = cl ] && [ ! -f data/analysis_bert/done ]; then
  "$PY" tools/analyze_data.py --dataset-type bert "${DATA_FLAGS[@]}" --metrics vocab_rarity \
    --save-path data/analysis_bert --num-threads 2 --no-progress
  touch data/analysis_bert/done
fi

if [ -e "$RUN" ]; then
  echo "pretrain_bert_cpu: replacing the previous run in $RUN/; copy it elsewhere first to keep it"
fi
rm -rf "$RUN"
"$PY" pretrain_bert.py \
  --num-layers 4 --hidden-size 256 --num-attention-heads 4 --max-position-embeddings 128 \
  "${DATA_FLAGS[@]}" "${DE_FLAGS[@]}" \
  --micro-batch-size 8 --global-batch-size 16 --train-iters 200 \
  --lr 5e-4 --min-lr 5e-5 --lr-decay-style linear --lr-warmup-iters 20 \
  --weight-decay 0.01 --clip-grad 1.0 \
  --eval-interval 50 --eval-iters 10 --log-interval 10 \
  --save "$RUN/checkpoints" --save-interval 100 \
  --metrics-file "$RUN/metrics.jsonl" --tensorboard-dir "$RUN/tensorboard" \
  "$@"

"$PY" - "$RUN/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
print("\nvalidation losses by iteration (masked LM, next sentence):")
for r in rows:
    if r["kind"] in ("valid", "test"):
        lm, sop = r.get("loss/lm"), r.get("loss/sop")
        parts = f"lm {lm:.3f}" + (f"  sop {sop:.3f}" if sop is not None else "")
        print(f"  {r['kind']:5s} iteration {r['iteration']:4d}: {parts}")
PYEOF

echo
echo "outputs of this run (replaced by the next run of this mode):"
echo "  checkpoints: $RUN/checkpoints/"
echo "  metrics:     $RUN/metrics.jsonl"
echo "  tensorboard: $RUN/tensorboard/   (tensorboard --logdir $RUN/tensorboard)"
