#!/usr/bin/env bash
# Curriculum learning recipes of the Data Efficiency paper (arXiv 2212.03597, GPT-3 1.3B, 300B tokens): the
# curriculum ends after 110k steps; seqlen metrics grow 80 -> 2048 in steps of 8 (linear), vocab rarity admits
# the easiest 1% -> 100% of samples (square root pacing). Cases (first argument) and their configs:
#   seqlen_truncate              gpt_1.3b_cl_seqlen_truncate.json
#   seqlen_reshape               gpt_1.3b_cl_seqlen_reshape.json
#   vocab_rarity                 gpt_1.3b_cl_vocab_rarity.json                (needs analyze_gpt_1.3b.sh first)
#   vocab_rarity_seqlen_truncate gpt_1.3b_cl_vocab_rarity_seqlen_truncate.json (the paper's best CL; analysis)
#   vocab_rarity_seqlen_reshape  gpt_1.3b_cl_vocab_rarity_seqlen_reshape.json  (analysis)
#
#   NPROC=8 DATA_PATH=data/pile_text_document bash examples/curriculum/pretrain_gpt_1.3b_cl.sh seqlen_truncate
#
# For the 200B/150B budgets pass TRAIN_TOKENS=200000000000 LR=3e-4 (150B: LR=4e-4) and shorten
# total_curriculum_step to 73k/55k in a copy of the config. Launch settings: gpt_1.3b_launch.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CASE=${1:?usage: pretrain_gpt_1.3b_cl.sh CASE [flags]; CASE in seqlen_truncate seqlen_reshape vocab_rarity vocab_rarity_seqlen_truncate vocab_rarity_seqlen_reshape}
shift
case "$CASE" in
  seqlen_truncate|seqlen_reshape|vocab_rarity|vocab_rarity_seqlen_truncate|vocab_rarity_seqlen_reshape) ;;
  *) echo "unknown case '$CASE'" >&2; exit 2 ;;
esac
exec bash "$HERE/gpt_1.3b_launch.sh" "examples/curriculum/gpt_1.3b_cl_$CASE.json" \
  --data-efficiency-curriculum-learning "$@"
