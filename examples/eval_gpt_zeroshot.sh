#!/usr/bin/env bash
# Zero- and few-shot evaluation of a GPT checkpoint on the benchmarks tasks/main.py reads natively, one results
# JSON per task and shot count, then the average (tools/average_task_results.py). See tasks/README.md.
#
#   bash examples/eval_gpt_zeroshot.sh runs/gpt3_125m/checkpoints [results/gpt3_125m]
#   NPROC=8 SHOTS="0 10" DATA=data/eval bash examples/eval_gpt_zeroshot.sh CKPT OUT -- --eval-micro-batch-size 16
#
# Files looked for under $DATA (a task whose file is missing is skipped with a note):
#   lambada_test.jsonl                        LAMBADA (OpenAI's detokenized test set, {"text": ...} per line)
#   wikitext-103/wiki.test.tokens             WikiText-103 perplexity (0-shot only)
#   hellaswag_val.jsonl, hellaswag_train.jsonl
#   piqa/valid.jsonl + valid-labels.lst, piqa/train.jsonl + train-labels.lst
#   ARC-Challenge-Test.jsonl, ARC-Challenge-Train.jsonl, ARC-Easy-Test.jsonl, ARC-Easy-Train.jsonl
#   boolq/dev.jsonl, boolq/train.jsonl
#   winogrande/dev.jsonl, winogrande/train_xl.jsonl
#   RACE/test/high/, RACE/train/high/         (directories of *.txt)
# Few-shot demonstrations come from the *train* file when present, else from the other test questions.
# Extra flags for every run go after "--" (e.g. --eval-micro-batch-size, --tensor-model-parallel-size).
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?usage: eval_gpt_zeroshot.sh CHECKPOINT_DIR [OUT_DIR] [-- extra flags]}
shift
OUT=results/$(basename "$(dirname "$(realpath "$CKPT")")")
if [[ $# -gt 0 && "$1" != "--" ]]; then
  OUT=$1
  shift
fi
if [[ "${1:-}" == "--" ]]; then
  shift
fi
EXTRA=("$@")
PY=${PYTHON:-.venv/bin/python}
NPROC=${NPROC:-1}
DATA=${DATA:-data/eval}
SHOTS=${SHOTS:-"0 10"}

launch() {
  if (( NPROC > 1 )); then
    "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" tasks/main.py "$@"
  else
    "$PY" tasks/main.py "$@"
  fi
}

# evaluate NAME SHOTS VALID TRAIN FLAGS...: one run, results in $OUT/${SHOTS}shot/NAME.json
evaluate() {
  local name=$1 shots=$2 valid=$3 train=$4
  shift 4
  if [[ ! -e "$valid" ]]; then
    echo "skipping $name: $valid not found" >&2
    return
  fi
  local fewshot=()
  if (( shots > 0 )); then
    fewshot=(--num-fewshot "$shots")
    [[ -e "$train" ]] && fewshot+=(--train-data "$train")
  fi
  echo "== $name, $shots-shot" >&2
  launch --load "$CKPT" --valid-data "$valid" "${fewshot[@]}" "$@" \
    --results-file "$OUT/${shots}shot/$name.json" "${EXTRA[@]}"
}

for shots in $SHOTS; do
  if (( shots == 0 )); then
    # The paper's "lambada" is lm-eval's lambada_openai: the whole last word is the target (--strict-lambada).
    evaluate lambada 0 "$DATA/lambada_test.jsonl" "" --task LAMBADA --strict-lambada
    evaluate wikitext 0 "$DATA/wikitext-103/wiki.test.tokens" "" --task WIKITEXT103
  else
    echo "note: LAMBADA runs 0-shot only here; its $shots-shot score comes from lm-eval (tasks/README.md)" >&2
  fi
  evaluate hellaswag "$shots" "$DATA/hellaswag_val.jsonl" "$DATA/hellaswag_train.jsonl" --task MC --mc-format hellaswag
  evaluate piqa "$shots" "$DATA/piqa/valid.jsonl" "$DATA/piqa/train.jsonl" --task MC --mc-format piqa
  evaluate arc_challenge "$shots" "$DATA/ARC-Challenge-Test.jsonl" "$DATA/ARC-Challenge-Train.jsonl" \
    --task MC --mc-format arc
  evaluate arc_easy "$shots" "$DATA/ARC-Easy-Test.jsonl" "$DATA/ARC-Easy-Train.jsonl" --task MC --mc-format arc
  evaluate boolq "$shots" "$DATA/boolq/dev.jsonl" "$DATA/boolq/train.jsonl" --task MC --mc-format boolq
  evaluate winogrande "$shots" "$DATA/winogrande/dev.jsonl" "$DATA/winogrande/train_xl.jsonl" \
    --task MC --mc-format winogrande
  evaluate race "$shots" "$DATA/RACE/test/high" "$DATA/RACE/train/high" --task MC --mc-format race
  if compgen -G "$OUT/${shots}shot/*.json" > /dev/null; then
    "$PY" tools/average_task_results.py --results-dir "$OUT/${shots}shot" --output "$OUT/${shots}shot/average.md"
  fi
done
