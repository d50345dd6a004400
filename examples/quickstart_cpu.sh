#!/usr/bin/env bash
# Quick start on CPU: the KJV Bible -> GPT-2 BPE tokens -> a small GPT pretrained for 200 iterations, printing the
# validation loss as it falls. Data goes to data/ (reused when present), the run to runs/quickstart_cpu/ (replaced).
#
#   bash examples/quickstart_cpu.sh [MODE] [extra pretrain_gpt.py flags, e.g. --train-iters 50]
#
# MODE (first argument, or the MODE environment variable; default baseline) adds the data efficiency library:
#   cl      curriculum learning: tools/analyze_data.py scores every training sample's vocab rarity, then the
#           curriculum sampler starts from the easiest 10% and widens to all samples while sequences grow 32 -> 128
#           over 120 steps (examples/quickstart/cl.json)
#   ltd     random-LTD: layers 1-2 of 4 keep 32 -> 128 random tokens per sample over 120 steps (ltd.json)
#   cl_ltd  both (cl_ltd.json)
#   cl_blend  the cl curriculum over a weighted blend: the Old and the New Testament as two datasets, 0.5 each
#           (the New Testament is 22% of the text, so it is upsampled); each is analyzed on its own
#           (data/analysis_quickstart_blend/dataset0|1) and gets its own thresholds (cl_blend.json)
# Each mode writes to runs/quickstart_cpu_MODE/ and prints the difficulty / kept tokens and validation losses.
#
# Sizes: 4 layers, hidden 256, 4 heads, sequence 128, 4 sequences per step (about 16M parameters, most of them
# the 50,304 x 256 tied embedding). A few minutes on two idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODE=${MODE:-baseline}
case "${1:-}" in baseline|cl|ltd|cl_ltd|cl_blend) MODE=$1; shift ;; esac
RUN=runs/quickstart_cpu
DE_FLAGS=()
case "$MODE" in
  baseline) ;;
  cl) DE_FLAGS=(--deepspeed --deepspeed_config examples/quickstart/cl.json --data-efficiency-curriculum-learning) ;;
  ltd) DE_FLAGS=(--deepspeed --deepspeed_config examples/quickstart/ltd.json --random-ltd) ;;
  cl_ltd) DE_FLAGS=(--deepspeed --deepspeed_config examples/quickstart/cl_ltd.json
                    --data-efficiency-curriculum-learning --random-ltd) ;;
  cl_blend) DE_FLAGS=(--deepspeed --deepspeed_config examples/quickstart/cl_blend.json
                      --data-efficiency-curriculum-learning) ;;
  *) echo "unknown MODE '$MODE' (baseline, cl, ltd, cl_ltd or cl_blend)" >&2; exit 2 ;;
esac
[ "$MODE" = baseline ] || RUN=${RUN}_$MODE
# The data flags the analysis and the training must share (sample ids are positions in this training split).
DATA=(data/kjv_text_document) SPLIT=949,50,1
# The New Testament has 260 chapters: 2% of them (5) for the test split, as 0.1% would leave none.
[ "$MODE" = cl_blend ] && DATA=(0.5 data/kjv_ot_text_document 0.5 data/kjv_nt_text_document) SPLIT=90,8,2
DATA_FLAGS=(--data-path "${DATA[@]}" --tokenizer-type GPT2BPETokenizer --split $SPLIT
            --seq-length 128 --seed 1234)
mkdir -p data

if [ ! -f data/kjv.jsonl ]; then
  "$PY" tools/prepare_corpus.py --corpus kjv --output data/kjv.jsonl
fi
if [ ! -f data/kjv_text_document.idx ]; then
  "$PY" tools/preprocess_data.py --input data/kjv.jsonl --output-prefix data/kjv \
    --tokenizer-type GPT2BPETokenizer --append-eod --workers 2
fi

if [ "$MODE" = cl_blend ] && [ ! -f data/kjv_nt_text_document.idx ]; then
  # One chapter per line in book order: the Old Testament ends before Matthew 1.
  "$PY" - <<'PYEOF'
import json
lines = open("data/kjv.jsonl", encoding="utf-8").readlines()
nt = next(i for i, line in enumerate(lines) if json.loads(line)["id"] == "Matthew 1")
for name, part in (("ot", lines[:nt]), ("nt", lines[nt:])):
    with open(f"data/kjv_{name}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(part)
PYEOF
  for part in ot nt; do
    "$PY" tools/preprocess_data.py --input data/kjv_$part.jsonl --output-prefix data/kjv_$part \
      --tokenizer-type GPT2BPETokenizer --append-eod --workers 2
  done
fi

ANALYSIS=data/analysis_quickstart
[ "$MODE" = cl_blend ] && ANALYSIS=data/analysis_quickstart_blend
if [[ "$MODE" == cl* ]] && [ ! -f "$ANALYSIS/done" ]; then
  "$PY" tools/analyze_data.py "${DATA_FLAGS[@]}" --metrics vocab_rarity --save-path "$ANALYSIS" \
    --num-threads 2 --no-progress
  touch "$ANALYSIS/done"
fi

if [ -e "$RUN" ]; then
  echo "quickstart: replacing the previous run in $RUN/ (checkpoints, metrics, TensorBoard events); copy it elsewhere first to keep it"
fi
rm -rf "$RUN"
"$PY" pretrain_gpt.py \
  --num-layers 4 --hidden-size 256 --num-attention-heads 4 \
  --max-position-embeddings 128 "${DATA_FLAGS[@]}" "${DE_FLAGS[@]}" \
  --micro-batch-size 4 --global-batch-size 4 --train-iters 200 \
  --lr 1e-3 --min-lr 1e-4 --lr-decay-style cosine --lr-warmup-iters 20 \
  --weight-decay 0.1 --adam-beta2 0.95 --clip-grad 1.0 \
  --hidden-dropout 0.0 --attention-dropout 0.0 \
  --eval-interval 50 --eval-iters 20 --log-interval 10 \
  --save "$RUN/checkpoints" --save-interval 100 \
  --metrics-file "$RUN/metrics.jsonl" --tensorboard-dir "$RUN/tensorboard" \
  "$@"

"$PY" - "$RUN/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
train = [r for r in rows if r["kind"] == "train"]
if any("difficulty" in r or "ltd_kept_tokens" in r for r in train):
    print("\ndata efficiency by iteration:")
    for r in train[:: max(1, len(train) // 10)] + train[-1:]:
        extra = {k: r[k] for k in ("difficulty", "ltd_kept_tokens", "consumed_layer_tokens") if k in r}
        print(f"  iteration {r['iteration']:4d}: consumed tokens {r['consumed_tokens']:7d}  {extra}")
print("\nvalidation loss by iteration:")
for r in rows:
    if r["kind"] in ("valid", "test"):
        key = "val_loss" if r["kind"] == "valid" else "test_loss"
        print(f"  {r['kind']:5s} iteration {r['iteration']:4d}: loss {r[key]:.3f}")
PYEOF

echo
echo "outputs of this run (replaced by the next run of this mode):"
echo "  checkpoints: $RUN/checkpoints/"
echo "  metrics:     $RUN/metrics.jsonl"
echo "  tensorboard: $RUN/tensorboard/   (tensorboard --logdir $RUN/tensorboard)"
