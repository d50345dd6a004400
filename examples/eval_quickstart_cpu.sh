#!/usr/bin/env bash
# Evaluate the quickstart GPT offline: zero- and 10-shot with tasks/main.py, then the same task through the Hugging
# Face export and lm-evaluation-harness, side by side. Nothing is downloaded: the tasks are built from KJV chapters
# the quickstart held out of its training split (the proxy tasks of tools/reproduce_paper.py: last word and next
# sentence, 4-way multiple choice).
#
#   bash examples/quickstart_cpu.sh          # first: runs/quickstart_cpu/checkpoints
#   bash examples/eval_quickstart_cpu.sh [CHECKPOINT_DIR]
#
# Outputs: runs/eval_quickstart/ (tasks/, results/{0,10}shot/*.json, hf/, lm_eval/); replaced on each run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CKPT=${1:-runs/quickstart_cpu/checkpoints}
OUT=runs/eval_quickstart
[ -f "$CKPT/latest_checkpointed_iteration.txt" ] || {
  echo "no checkpoint in $CKPT: run 'bash examples/quickstart_cpu.sh' first" >&2; exit 2; }
[ -e "$OUT" ] && echo "eval_quickstart_cpu: replacing the previous results in $OUT/"
rm -rf "$OUT"
mkdir -p "$OUT/tasks"
# The quickstart's --split 949,50,1 trains on the first 94.9% of the 1,189 chapters in order; the rest (about 60
# chapters) are its validation and test splits, never trained on. The proxy tasks come from the last 13 of them.
"$PY" - "$OUT/tasks" <<'PYEOF'
import json, sys
from megatron.data.preprocessing.corpora import kjv_documents
from megatron.interop.lm_eval_tasks import multiple_choice_task_yaml
from megatron.reproduce.proxy_tasks import build_gpt_proxy_tasks
docs = [d["text"] for d in kjv_documents()][-13:]
tasks = build_gpt_proxy_tasks(docs, sys.argv[1], examples=100, max_words=25)
for name, files in tasks.items():
    yaml = multiple_choice_task_yaml(f"quickstart_{name}", files["test"], "{{context}}")
    open(f"{sys.argv[1]}/quickstart_{name}.yaml", "w").write(yaml)
print(json.dumps(tasks))
PYEOF
for SHOTS in 0 10; do
  for TASK in lastword_mc next_sentence_mc; do
    FEW=()
    [ "$SHOTS" = 0 ] || FEW=(--num-fewshot "$SHOTS" --train-data "$OUT/tasks/${TASK}_train.jsonl")
    "$PY" tasks/main.py --task MC --load "$CKPT" --valid-data "$OUT/tasks/${TASK}_test.jsonl" "${FEW[@]}" \
      --eval-micro-batch-size 16 --results-file "$OUT/results/${SHOTS}shot/$TASK.json"
  done
done
"$PY" tools/checkpoint/convert.py --model-type GPT --loader megatron --saver hf --load-dir "$CKPT" --save-dir "$OUT/hf"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" -m lm_eval --model hf --model_args "pretrained=$OUT/hf,dtype=float32" \
  --include_path "$OUT/tasks" --tasks quickstart_lastword_mc,quickstart_next_sentence_mc --num_fewshot 0 \
  --batch_size 16 --device cpu --output_path "$OUT/lm_eval"
echo "0-shot accuracy from tasks/main.py (lm-eval's acc above should match):"
for TASK in lastword_mc next_sentence_mc; do
  "$PY" -c "import json,sys; print(f'  {sys.argv[1]}: {json.load(open(sys.argv[2]))[\"metrics\"][\"accuracy\"]:.4f}')" \
    "$TASK" "$OUT/results/0shot/$TASK.json"
done
echo "results: $OUT/results/ (ours, 0- and 10-shot), $OUT/lm_eval/ (lm-eval), Hugging Face model: $OUT/hf"
