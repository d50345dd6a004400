#!/usr/bin/env bash
# Random-LTD recipes of the Data Efficiency / random-LTD papers (GPT-3 1.3B, 300B layer-averaged tokens): layers
# 1-22 of 24 keep 128 -> 2048 random tokens per sample (multiples of 16) over 200k steps; the first and last
# layer see every token. Cases (first argument):
#   ltd     random-LTD alone                   (examples/random_ltd/gpt_1.3b_random_ltd.json)
#   cl_ltd  vocab rarity + seqlen truncation curriculum (110k steps) with random-LTD
#           (examples/curriculum/gpt_1.3b_cl_vocab_rarity_seqlen_truncate_random_ltd.json; run
#           examples/curriculum/analyze_gpt_1.3b.sh first)
#
#   NPROC=8 DATA_PATH=data/pile_text_document bash examples/random_ltd/pretrain_gpt_1.3b_random_ltd.sh ltd
#
# The token budget, LR warmup/decay and --train-tokens count layer-averaged tokens (S(L-n) + r n)/L per sample,
# so random-LTD takes more optimizer steps than the baseline for the same budget (Megatron-DeepSpeed's
# accounting); consumed_tokens in the logs stays the data tokens. 150B: TRAIN_TOKENS=150000000000 LR=4e-4 and
# require_steps 100k (CL: 55k) in a copy of the config. Launch settings: ../curriculum/gpt_1.3b_launch.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CASE=${1:?usage: pretrain_gpt_1.3b_random_ltd.sh ltd|cl_ltd [flags]}
shift
case "$CASE" in
  ltd) exec bash "$HERE/../curriculum/gpt_1.3b_launch.sh" examples/random_ltd/gpt_1.3b_random_ltd.json \
         --random-ltd "$@" ;;
  cl_ltd) exec bash "$HERE/../curriculum/gpt_1.3b_launch.sh" \
            examples/curriculum/gpt_1.3b_cl_vocab_rarity_seqlen_truncate_random_ltd.json \
            --data-efficiency-curriculum-learning --random-ltd "$@" ;;
  *) echo "unknown case '$CASE' (ltd or cl_ltd)" >&2; exit 2 ;;
esac
