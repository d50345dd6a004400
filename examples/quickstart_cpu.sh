#!/usr/bin/env bash
# Quick start on CPU: the KJV Bible -> GPT-2 BPE tokens -> a small GPT pretrained for 200 iterations, printing the
# validation loss as it falls. Data goes to data/ (reused when present), the run to runs/quickstart_cpu/ (replaced).
#
#   bash examples/quickstart_cpu.sh [extra pretrain_gpt.py flags, e.g. --train-iters 50]
#
# Sizes: 4 layers, hidden 256, 4 heads, sequence 128, 4 sequences per step (about 16M parameters, most of them
# the 50,304 x 256 tied embedding). A few minutes on two idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=runs/quickstart_cpu
mkdir -p data

if [ ! -f data/kjv.jsonl ]; then
  "$PY" tools/prepare_corpus.py --corpus kjv --output data/kjv.jsonl
fi
if [ ! -f data/kjv_text_document.idx ]; then
  "$PY" tools/preprocess_data.py --input data/kjv.jsonl --output-prefix data/kjv \
    --tokenizer-type GPT2BPETokenizer --append-eod --workers 2
fi

rm -rf "$RUN"
"$PY" pretrain_gpt.py \
  --num-layers 4 --hidden-size 256 --num-attention-heads 4 \
  --seq-length 128 --max-position-embeddings 128 \
  --micro-batch-size 4 --global-batch-size 4 --train-iters 200 \
  --lr 1e-3 --min-lr 1e-4 --lr-decay-style cosine --lr-warmup-iters 20 \
  --weight-decay 0.1 --adam-beta2 0.95 --clip-grad 1.0 \
  --hidden-dropout 0.0 --attention-dropout 0.0 \
  --data-path data/kjv_text_document --tokenizer-type GPT2BPETokenizer --split 949,50,1 \
  --eval-interval 50 --eval-iters 5 --log-interval 10 \
  --save "$RUN/checkpoints" --save-interval 100 \
  --metrics-file "$RUN/metrics.jsonl" --tensorboard-dir "$RUN/tensorboard" \
  "$@"

"$PY" - "$RUN/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
print("\nvalidation loss by iteration:")
for r in rows:
    if r["kind"] in ("valid", "test"):
        key = "val_loss" if r["kind"] == "valid" else "test_loss"
        print(f"  {r['kind']:5s} iteration {r['iteration']:4d}: loss {r[key]:.3f}")
PYEOF
