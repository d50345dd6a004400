"""Megatron-LM's command-line flags as data: every spelling its pretraining parser accepts, with a value for those
that take one (facts about Megatron-LM's ``megatron/training/arguments.py`` and the flags it generates from
megatron-core's config dataclasses; the grouping follows its argument groups; the values are ours).

Recorded from NVIDIA/Megatron-LM commit :data:`COMMIT` (:data:`COMMIT_DATE`) by building its parser and listing
every option string. ``tests/training/test_megatron_lm_flags.py`` parses each of them with our entry scripts'
parsers and checks the class each lands in (works / accepted-ignored / refused) against ``docs/megatron_lm_flags.md``.
A value is ``--flag=VALUE``: the first of Megatron-LM's choices where it has choices, else a value of its type.
"""

from __future__ import annotations

__all__ = ["COMMIT", "COMMIT_DATE", "GROUPS", "flags"]

COMMIT = "d98e8a64ddf34856e74b24714e3bedb2f5a39553"
"""The Megatron-LM commit the list was taken from."""
COMMIT_DATE = "2026-08-22"
"""Its commit date."""

GROUPS: dict[str, str] = {
    "transformer configuration": """
        --tensor-model-parallel-size=1 --tensor-parallel-num-weight-shards=1
        --pipeline-model-parallel-comm-backend=nccl --pipeline-model-parallel-size=1 --sequence-parallel
        --context-parallel-size=1 --hierarchical-context-parallel-sizes=1 --max-seqlen-per-dp-cp-rank=1
        --hybrid-context-parallel --expert-model-parallel-size=1 --expert-tensor-parallel-size=1
        --expert-tensor-parallel-num-weight-shards=1 --no-initialization --use-cpu-initialization --fp16 --bf16
        --deterministic-mode --tp-comm-overlap --no-tp-comm-bulk-wgrad --disable-tp-comm-bulk-wgrad
        --no-tp-comm-bulk-dgrad --disable-tp-comm-bulk-dgrad --no-tp-comm-overlap-ag
        --disable-tp-comm-overlap-ag --no-tp-comm-overlap-rs --disable-tp-comm-overlap-rs
        --tp-comm-overlap-rs-dgrad --no-tp-comm-split-ag --disable-tp-comm-split-ag --no-tp-comm-split-rs
        --disable-tp-comm-split-rs --cross-entropy-loss-fusion --cross-entropy-fusion-impl=native
        --tp-comm-bootstrap-backend=nccl --overlap-moe-expert-parallel-comm --delay-wgrad-compute
        --overlap-dispatch-backward-with-experts-wgrad --ep-overlap-early-attn-memory-release
        --use-ring-exchange-p2p --defer-embedding-wgrad-compute --wgrad-deferral-limit=1
        --overlap-p2p-communication-warmup-flush --microbatch-group-size-per-virtual-pipeline-stage=1
        --mtp-standalone --cpu-offloading-num-layers=1 --cpu-offloading-retain-pinned-cpu-buffers --num-layers=1
        --mtp-num-layers=1 --mtp-loss-scaling-factor=0.5 --mtp-use-repeated-layer --mtp-detach-heads --mtp-hsm
        --mtp-hybrid-override-pattern=x --account-for-embedding-in-pipeline-split
        --account-for-loss-in-pipeline-split --hidden-size=1 --num-attention-heads=1 --attention-backend=flash
        --flash-attention-version=2 --softmax-type=vanilla --num-query-groups=1 --ffn-hidden-size=1
        --kv-channels=1 --hidden-dropout=0.5 --attention-dropout=0.5 --fp32-residual-connection
        --apply-residual-connection-post-layernorm --norm-epsilon=0.5 --apply-layernorm-1p --disable-bias-linear
        --add-qkv-bias --glu-linear-offset=0.5 --activation-func-clamp-value=0.5 --rotary-interleaved
        --normalization=LayerNorm --qk-layernorm --qk-l2-norm --qk-clip --qk-clip-alpha=0.5
        --qk-clip-threshold=0.5 --attention-output-gate --calculate-per-token-loss --multi-latent-attention
        --experimental-attention-variant=gdn --dsa-indexer-n-heads=1 --dsa-indexer-head-dim=1
        --dsa-indexer-topk=1 --dsa-indexer-topk-freq=1 --dsa-indexer-skip-topk-offset=1
        --dsa-indexer-loss-coeff=0.5 --dsa-indexer-use-sparse-loss --dsa-kernel-backend=none
        --dsa-indexer-rope-interleaved --no-dsa-indexer-rotate-activation
        --disable-dsa-indexer-rotate-activation --no-dsa-indexer-scoring-relu --disable-dsa-indexer-scoring-relu
        --dsa-indexer-k-norm-epsilon=0.5 --dsa-indexer-k-norm-fp32 --linear-conv-kernel-dim=1
        --linear-key-head-dim=1 --linear-value-head-dim=1 --linear-num-key-heads=1 --linear-num-value-heads=1
        --init-method-std=0.5 --embedding-init-method-std=0.5 --init-model-with-meta-device --use-mup
        --mup-width-mult=0.5 --mup-base-hidden-size=1 --mup-embedding-mult=0.5 --mup-output-mult=0.5
        --mup-base-head-dim=0.5 --mup-attn-scale-power=0.5 --apply-query-key-layer-scaling
        --disable-bf16-reduced-precision-matmul --use-fused-weighted-squared-relu --fused-residual-rmsnorm
        --use-transformer-engine-op-fuser --recompute-granularity=full --recompute-method=uniform
        --recompute-num-layers=1 --distribute-saved-activations --recompute-modules=x --fp8-format=e4m3
        --fp8-recipe=tensorwise --fp8-quantizer-factory=x --fp8-margin=1 --fp8-interval=1
        --fp8-amax-history-len=1 --fp8-amax-compute-algo=most_recent --no-fp8-wgrad --disable-fp8-wgrad
        --fp8-output-proj --first-last-layers-bf16 --num-layers-at-start-in-bf16=1 --num-layers-at-end-in-bf16=1
        --use-kitchen-attention --kitchen-attention-backend=sdpa --fp4-format=e2m1 --fp4-recipe=nvfp4
        --fp4-quantizer-factory=x --high-priority-a2a-comm-stream --moe-shared-expert-intermediate-size=1
        --moe-shared-expert-gate --moe-shared-expert-overlap --use-grouped-gemm-for-shared-expert
        --moe-shared-expert-glu-interleave-size=1 --moe-ffn-hidden-size=1 --moe-router-topk=1
        --moe-enable-routing-replay --moe-router-padding-for-quantization --moe-router-padding-for-fp8
        --moe-router-num-groups=1 --moe-router-group-topk=1 --moe-router-pre-softmax
        --moe-router-topk-scaling-factor=0.5 --moe-router-score-function=softmax --moe-router-dtype=fp32
        --moe-router-enable-expert-bias --moe-router-bias-update-rate=0.5
        --moe-router-quantile-balancing-ema=0.5 --moe-router-force-load-balancing --moe-router-force-biased=0.5
        --use-grouped-gemm-for-dense-mlp --moe-grouped-gemm --moe-use-grouped-tensor --moe-single-grouped-weight
        --moe-single-grouped-bias --moe-z-loss-coeff=0.5 --moe-input-jitter-eps=0.5
        --moe-token-dispatcher-type=allgather --moe-enable-deepep --moe-flex-dispatcher-backend=deepep
        --moe-permute-fusion-into-hybridep --moe-hybridep-pad-uneven-dispatch-inputs --moe-per-layer-logging
        --moe-expert-capacity-factor=0.5 --moe-pad-expert-input-to-capacity
        --moe-pad-experts-for-cuda-graph-inference --moe-token-drop-policy=probs --moe-layer-recompute
        --moe-permute-fusion --moe-router-fusion --moe-apply-probs-on-input --moe-latent-size=1
        --gtp-remat-opt-in-modules=x --moe-flex-dispatcher-num-sms=1 --moe-deepep-num-sms=1
        --moe-hybridep-num-sms=1 --moe-hybridep-num-blocks-permute=1 --moe-hybridep-num-blocks-unpermute=1
        --moe-hybridep-num-sms-preprocessing=1 --moe-ncclep-zero-copy --moe-dispatch-fwd-dtype=bf16
        --moe-combine-bwd-dtype=bf16 --moe-mlp-glu-interleave-size=1 --moe-expert-rank-capacity-factor=0.5
        --enable-cuda-graph --cuda-graph-warmup-steps=1 --external-cuda-graph --cuda-graph-impl=none
        --inference-cuda-graph-scope=none --enable-mhc-connections --mhc-num-residual-streams=1
        --mhc-sinkhorn-iterations=1 --mhc-init-gating-factor=0.5 --mhc-recompute-layer-num=1
        --no-clone-scatter-output-in-embedding --disable-clone-scatter-output-in-embedding --config-logger-dir=x
        --flash-decode --batch-invariant-mode --batch-invariant-backend=te_native --use-te-activation-func
        --symmetric-ar-type=two_shot --nccl-all-reduce-for-prefill --inference-fuse-tp-communication
        --inference-disable-triton-nvls-kernels --inference-grouped-gemm-backend=flashinfer
        --inference-moe-disable-fused-quant-kernels --inference-moe-token-dispatcher-type=nccl --mrope-section=1
        --is-hybrid-model --mamba-state-dim=1 --mamba-head-dim=1 --mamba-num-groups=1 --mamba-num-heads=1
        --gdp-num-householder=1 --disable-mamba-mem-eff-path --gdp-cutedsl-kernel
        --gdp-num-chunk-states-to-recompute=1 --mlp-chunks-for-prefill=1 --mlp-chunks-for-training=1
        --transformer-impl=local --fine-grained-activation-offloading --offload-modules=x
        --min-offloaded-tensor-size=1 --delay-offload-until-cuda-graph --delta-offload-bytes-across-pp-ranks=1
        --activation-offload-fraction=0.5 --moe-paged-stash --moe-paged-stash-page-size=1
        --moe-paged-stash-buffer-size-factor-cuda=0.5 --moe-paged-stash-buffer-size-factor-cpu=0.5
        --fine-grained-offloading-max-inflight-offloads=1""",
    "network size": """
        --encoder-num-layers=1 --decoder-num-layers=1 --group-query-attention --window-size=x
        --window-attn-skip-freq=x --max-position-embeddings=1 --position-embedding-type=learned_absolute
        --yarn-original-max-position-embeddings=1 --yarn-beta-fast=0.5 --yarn-beta-slow=0.5
        --yarn-correction-range-round-to-int --no-yarn-correction-range-round-to-int
        --relative-attention-num-buckets=1 --relative-attention-max-distance=1 --use-rotary-position-embeddings
        --rotary-base=1 --rotary-percent=0.5 --rotary-seq-len-interpolation-factor=1 --use-rope-scaling
        --rope-scaling-factor=0.5 --no-rope-freq=x --no-position-embedding --make-vocab-size-divisible-by=1
        --openai-gelu --squared-relu --swiglu --quick-geglu --onnx-safe=x --bert-no-binary-head
        --untie-embeddings-and-output-weights""",
    "regularization": """
        --weight-decay=0.5 --apply-wd-to-qk-layernorm --clip-grad=0.5 --adam-beta1=0.5 --adam-beta2=0.5
        --adam-eps=0.5 --sgd-momentum=0.5 --muon-momentum=0.5 --muon-no-split-qkv --muon-nesterov
        --muon-scale-mode=spectral --muon-fp32-matmul-prec=low --muon-coefficient-type=x --muon-num-ns-steps=1
        --muon-tp-mode=blockwise --muon-use-syrk --muon-extra-scale-factor=0.5 --muon-scalar-optimizer=adam
        --lion-beta1=0.5 --lion-beta2=0.5 --no-weight-decay-cond-type=apply_wd_to_qk_layernorm""",
    "profiling": """
        --profile --profile-step-start=1 --profile-step-end=1 --use-pytorch-profiler
        --pytorch-profiler-collect-shapes --pytorch-profiler-collect-callstack --pytorch-profiler-collect-chakra
        --profile-ranks=1 --record-memory-history --memory-snapshot-path=x --record-shapes --nvtx-ranges""",
    "training": """
        --micro-batch-size=1 --global-batch-size=1 --rampup-batch-size=1 --step-batch-size-schedule=x
        --decrease-batch-size-if-needed --empty-unused-memory-level=0
        --check-weight-hash-across-dp-replicas-interval=1 --gpu-sniff-test-interval=1 --train-sync-interval=1
        --train-iters=1 --train-samples=1 --exit-interval=1 --exit-duration-in-mins=1 --exit-signal-handler
        --exit-signal=SIGHUP --exit-signal-handler-for-dataloader --exit-signal-handler-for-training --manual-gc
        --manual-gc-interval=1 --no-manual-gc-eval --disable-manual-gc-eval --iterations-to-skip=1
        --batch-size=1 --recompute-activations --no-check-for-nan-in-loss-and-grad --check-for-large-grads
        --result-rejected-tracker-filename=x --tp-comm-overlap-cfg=x --checkpoint-activations
        --no-masked-softmax-fusion --no-bias-gelu-fusion --no-bias-swiglu-fusion --no-bias-dropout-fusion
        --no-rope-fusion --rope-type=rope --use-flash-attn --optimizer=adam --optimizer-cpu-offload
        --optimizer-cuda-graph --optimizer-offload-fraction=0.5 --use-torch-optimizer-for-cpu-offload
        --overlap-cpu-optimizer-d2h-h2d --dump-param-to-param-group-map=x --no-pin-cpu-grads --no-pin-cpu-params
        --dataloader-type=single --no-persist-layer-norm --no-gradient-accumulation-fusion --use-mcore-models""",
    "rl": """
        --perform-rl-step --rl-prompts-per-eval=1 --grpo-prompts-per-step=1 --grpo-group-size=1
        --rl-generation-lag=0.5 --rl-max-inflight-requests=1 --rl-submission-granularity=R
        --rl-consumption-granularity=R --rl-durable-rollout-bank --rl-rollout-bank-dir=x
        --rl-rollout-bank-max-bytes=1 --grpo-iterations=1 --grpo-clamp-eps-lower=0.5 --grpo-clamp-eps-upper=0.5
        --grpo-kl-beta=0.5 --grpo-entropy-term-weight=0.5 --grpo-filter-groups-with-same-reward
        --langrl-env-config=x --rl-default-temperature=0.5 --rl-default-top-p=0.5 --rl-default-top-k=1
        --rl-offload-optimizer-during-inference --rl-kv-cache-management-mode=persist --rl-persist-cuda-graphs
        --no-rl-persist-cuda-graphs --rl-partial-rollouts --no-rl-partial-rollouts
        --rl-inference-logprobs-is-correction --no-rl-inference-logprobs-is-correction
        --rl-importance-sampling-truncation-coef=0.5 --rl-use-sequence-packing --no-rl-use-sequence-packing
        --rl-sequence-packing-max-sequences-per-bin=1 --rl-sequence-packing-algo=fifo --rl-training-cuda-graphs
        --no-rl-training-cuda-graphs --rl-inference-tensor-model-parallel-size=1
        --rl-inference-pipeline-model-parallel-size=1 --rl-inference-expert-model-parallel-size=1
        --rl-inference-expert-tensor-model-parallel-size=1 --rl-inference-model-unified-memory-level=0
        --rl-offload-inference-model-weights-when-idle --no-rl-offload-inference-model-weights-when-idle
        --refit-method=nccl --rl-verify-model-weights-swap --no-rl-verify-model-weights-swap --rl-skip-bos-token
        --no-rl-skip-bos-token --rl-profile --rl-profile-dir=x --rl-inference-parsers=x""",
    "RNG and initialization": """
        --seed=1 --te-rng-tracker --inference-rng-tracker --data-parallel-random-init
        --init-method-xavier-uniform""",
    "learning rate and weight decay": """
        --lr-decay-style=constant --lr-wsd-decay-style=exponential --lr-decay-iters=1 --lr-decay-samples=1
        --lr-wsd-decay-iters=1 --lr-wsd-decay-samples=1 --lr-warmup-fraction=0.5 --lr-warmup-iters=1
        --lr-warmup-samples=1 --lr-warmup-init=0.5 --override-opt_param-scheduler --override-opt-param-scheduler
        --use-checkpoint-opt_param-scheduler --use-checkpoint-opt-param-scheduler --start-weight-decay=0.5
        --end-weight-decay=0.5 --weight-decay-incr-style=constant --lr=0.5 --warmup=1 --min-lr=0.5
        --decoupled-lr=0.5 --decoupled-min-lr=0.5 --freeze-all-layers""",
    "checkpointing": """
        --save=x --save-interval=1 --persistent-save-interval=1 --save-params-interval=1
        --save-activations-interval=1 --save-tokens-per-expert-interval=1 --save-wgrads-interval=1
        --save-dgrads-interval=1 --save-retain-interval=1 --load=x --load-main-params-from-ckpt
        --non-persistent-save-interval=1 --non-persistent-ckpt-type=global --non-persistent-global-ckpt-dir=x
        --non-persistent-local-ckpt-dir=x --non-persistent-local-ckpt-algo=fully_parallel --finetune
        --pretrained-checkpoint=x --ckpt-step=1 --use-checkpoint-args --use-mp-args-from-checkpoint-args
        --no-use-tokenizer-model-from-checkpoint-args --disable-use-tokenizer-model-from-checkpoint-args
        --exit-on-missing-checkpoint --ckpt-format=torch --auto-detect-ckpt-format --ckpt-convert-format=torch
        --ckpt-convert-save=x --ckpt-convert-update-legacy-dist-opt-format --no-ckpt-fully-parallel-save
        --async-save --async-strategy=nvrx --use-persistent-ckpt-worker --async-ckpt-cpu-priority=1
        --async-ckpt-io-priority=1 --async-ckpt-use-cpu-shm --ckpt-fully-parallel-load
        --ckpt-fully-parallel-load-exchange-algo=broadcast --ckpt-fully-parallel-load-per-rank-objects
        --ckpt-fully-parallel-save-process-group=dp --ckpt-fully-parallel-load-process-group=dp
        --ckpt-assume-constant-structure --ckpt-pg-tensors-cache-path=x --ckpt-pg-tensors-cache-create
        --no-ckpt-load-validate-sharding-integrity --disable-ckpt-load-validate-sharding-integrity
        --no-strict-fsdp-dtensor-load --disable-strict-fsdp-dtensor-load
        --dist-ckpt-strictness=assume_ok_unexpected --dist-ckpt-save-pre-mcore-014
        --dist-ckpt-optim-fully-reshardable --distrib-optim-fully-reshardable-mem-efficient
        --no-save-tokenizer-assets --disable-save-tokenizer-assets --replication --replication-jump=1
        --replication-factor=1 --verify-integrity --no-save-optim --no-save-rng --no-load-optim --no-load-rng
        --override-ckpt-iteration=1 --use-dist-ckpt --dist-ckpt-format=x --dist-ckpt-workers=1
        --ckpt-fully-parallel-save --ckpt-drop-redundant-extra-state""",
    "mixed precision": """
        --grad-reduce-in-bf16 --loss-scale=0.5 --initial-loss-scale=0.5 --min-loss-scale=0.5
        --loss-scale-window=1000 --hysteresis=1 --attention-softmax-in-fp32 --accumulate-allreduce-grads-in-fp32
        --fp16-lm-cross-entropy --output-logit-dtype=bf16 --reuse-grad-buf-for-mxfp8-param-ag
        --mamba-training-ssm-states-dtype=fp32""",
    "distributed init": """
        --distributed-backend=nccl --distributed-timeout-minutes=1 --no-align-grad-reduce
        --disable-align-grad-reduce --local-rank=1 --lazy-mpu-init --use-megatron-fsdp --use-torch-fsdp2
        --nccl-communicator-config-path=x --use-tp-pp-dp-mapping --disable-gloo-process-groups --use-sharp
        --sharp-enabled-group=dp --high-priority-stream-groups=x --distributed-timeout-seconds-after-init=1
        --flight-recorder-dump-path=x --flight-recorder-trace-buffer-size=1 --no-flight-recorder-dump-on-timeout
        --disable-flight-recorder-dump-on-timeout --flight-recorder-include-stack-trace
        --no-flight-recorder-include-only-active --disable-flight-recorder-include-only-active
        --no-flight-recorder-extra-dump-on-exec --disable-flight-recorder-extra-dump-on-exec --disable-jit-fuser
        --decoder-first-pipeline-num-layers=1 --decoder-last-pipeline-num-layers=1
        --pipeline-model-parallel-layout=x --model-parallel-size=1 --num-layers-per-virtual-pipeline-stage=1
        --num-virtual-stages-per-pipeline-rank=1 --no-overlap-p2p-communication --overlap-grad-reduce
        --ddp-num-buckets=1 --ddp-bucket-size=1 --ddp-pad-buckets-for-high-nccl-busbw
        --ddp-reduce-scatter-with-fp32-accumulation --gtp-remat-reduce-scatter-with-fp32-accumulation
        --ddp-param-name-patterns-for-fp32-local-accumulation=x --ddp-average-in-collective
        --overlap-param-gather --overlap-param-gather-with-optimizer-step --no-align-param-gather
        --use-distributed-optimizer --megatron-fsdp-version=1 --no-use-layer-wise-param-layout --use-nccl-ub
        --disable-symmetric-registration --gtp-remat-nccl-ub --gtp-expert-remat-nccl-ub
        --fsdp-manual-registration --create-all-gather-group --data-parallel-sharding-strategy=no_shard
        --outer-dp-sharding-strategy=no_shard --no-gradient-reduce-div-fusion --fsdp-double-buffer
        --suggested-communication-unit-size=1 --keep-fp8-transpose-cache --enable-full-sharding-in-hsdp
        --num-distributed-optimizer-instances=1 --torch-fsdp2-no-reshard-after-forward --cp-comm-type=x
        --fake-process-group""",
    "validation": """
        --eval-iters=1 --eval-interval=1 --start-eval-at-iter=1 --eval-global-batch-size=1
        --eval-micro-batch-size=1 --skip-train --test-mode --full-validation --multiple-validation-sets
        --validation-set-names=x""",
    "data and dataloader": """
        --data-path=x --phase-transition-iterations=x --split=x --train-data-path=x --valid-data-path=x
        --test-data-path=x --data-args-path=x --per-split-data-args-path=x --per-dataset-sequences-path=x
        --dataloader-fast-cache-load --dataloader-defer-npy-index-mmap --data-cache-path=x --no-mmap-bin-files
        --mock-data --seq-length=1 --encoder-seq-length=1 --decoder-seq-length=1 --sample-rate=0.5
        --mask-prob=0.5 --short-seq-prob=0.5 --num-workers=1 --reset-position-ids --reset-attention-mask
        --dataloader-inter-document-masking --eod-mask-loss --no-create-attention-mask-in-dataloader
        --num-dataset-builder-threads=1 --object-storage-cache-path=x --mid-level-dataset-surplus=0.5
        --allow-ambiguous-pad-tokens --fim-data --fim-rate=0.5 --fim-spm-rate=0.5 --fim-split-sample=x
        --fim-fragment-rate=0.5 --fim-no-prefix=x --fim-prefix-token=x --fim-middle-token=x --fim-suffix-token=x
        --fim-pad-token=x --fim-eod-token=x""",
    "tokenizer": """
        --vocab-size=1 --padded-vocab-size=1 --no-pad-vocab-size --disable-pad-vocab-size --vocab-file=x
        --merge-file=x --vocab-extra-ids=1 --tokenizer-type=BertWordPieceLowerCase --tokenizer-model=x
        --tokenizer-metadata=x --tokenizer-special-tokens=x --tiktoken-pattern=v1
        --tiktoken-num-special-tokens=1 --tokenizer-sentencepiece-legacy
        --no-tokenizer-sentencepiece-ignore-extra-whitespaces
        --disable-tokenizer-sentencepiece-ignore-extra-whitespaces --tokenizer-hf-no-use-fast
        --tokenizer-hf-no-include-special-tokens --trust-remote-code --null-tokenizer-eod-id=1
        --null-tokenizer-pad-id=1 --chat-template=x --use-gigatoken""",
    "autoresume": """
        --adlr-autoresume --adlr-autoresume-interval=1""",
    "biencoder": """
        --ict-head-size=1 --biencoder-projection-dim=1 --biencoder-shared-query-context-model --ict-load=x
        --bert-load=x --titles-data-path=x --query-in-block-prob=0.5 --use-one-sent-docs --evidence-data-path=x
        --retriever-report-topk-accuracies=1 --retriever-score-scaling --block-data-path=x --embedding-path=x
        --indexer-batch-size=1 --indexer-log-interval=1""",
    "vision": """
        --num-classes=1 --img-h=1 --img-w=1 --num-channels=1 --patch-dim=1 --classes-fraction=0.5
        --data-per-class-fraction=0.5 --no-data-sharding --head-lr-mult=0.5 --vision-pretraining
        --vision-pretraining-type=classify --vision-backbone-type=vit --swin-backbone-type=tiny
        --mask-type=random --mask-factor=0.5 --iter-per-epoch=1 --dino-local-img-size=1
        --dino-local-crops-number=1 --dino-head-hidden-size=1 --dino-bottleneck-size=1
        --dino-freeze-last-layer=0.5 --dino-norm-last-layer --dino-warmup-teacher-temp=0.5
        --dino-teacher-temp=0.5 --dino-warmup-teacher-temp-epochs=1""",
    "moe": """
        --num-experts=1 --moe-layer-freq=x --moe-use-upcycling --moe-router-load-balancing-type=aux_loss
        --moe-aux-loss-coeff=0.5 --moe-upcycling-granularity=1""",
    "mla": """
        --q-lora-rank=1 --kv-lora-rank=1 --qk-head-dim=1 --qk-pos-emb-head-dim=1 --v-head-dim=1
        --rotary-scaling-factor=0.5 --mscale=0.5 --mscale-all-dim=0.5 --cache-mla-latents --mla-down-proj-fusion""",
    "experimental_attention_variant": """
        --linear-attention-freq=x""",
    "heterogeneous architecture": """
        --heterogeneous-layers-config-path=x --heterogeneous-layers-config-encoded-json=x""",
    "logging": """
        --log-interval=1 --log-params-norm --log-throughput --log-progress --timing-log-level=0
        --timing-log-option=max --tensorboard-dir=x --tensorboard-log-interval=1 --tensorboard-queue-size=1
        --log-timers-to-tensorboard --no-log-loss-scale-to-tensorboard --disable-log-loss-scale-to-tensorboard
        --log-validation-ppl-to-tensorboard --log-memory-to-tensorboard --log-memory-interval=1
        --log-device-memory-used --log-num-zeros-in-grad --log-max-attention-logit
        --no-barrier-with-level-1-timing --log-world-size-to-tensorboard --wandb-project=x --wandb-exp-name=x
        --wandb-save-dir=x --wandb-entity=x --logging-level=1 --log-energy --moe-routing-trace-path=x
        --moe-routing-trace-max-training-iters=1 --moe-routing-trace-capture-logits
        --moe-routing-trace-capture-hidden-states --moe-routing-trace-dump-weights""",
    "opentelemetry": """
        --otel-enabled --otel-service-name=x --otel-span-groups=x""",
    "Logits Distillation": """
        --logits-save-top-k=1 --logits-save-top-p=0.5 --logits-save-top-p-min-k=1 --logits-save-dir=x
        --logits-save-dtype=fp16 --logits-load-dir=x --logits-load-decode-threads=1
        --logits-load-prefetch-factor=1 --logits-load-msc-prefetch-depth=1 --logits-load-kd-loss-alpha=0.5
        --logits-load-ignore-errors""",
    "straggler": """
        --log-straggler --straggler-ctrlr-port=1 --straggler-minmax-count=1 --disable-straggler-on-startup""",
    "workload inspector": """
        --run-workload-inspector-server""",
    "inference": """
        --inference-batch-times-seqlen-threshold=1 --max-tokens-to-oom=1 --output-bert-embeddings
        --bert-embedder-type=megatron --cuda-graph-scope=x --cuda-graph-modules=x --use-legacy-static-engine
        --inference-max-requests=1 --inference-max-seq-length=1 --inference-dynamic-batching
        --inference-dynamic-batching-buffer-size-gb=0.5 --inference-dynamic-batching-paused-buffer-size-gb=0.5
        --inference-dynamic-batching-mamba-memory-ratio=0.5 --inference-dynamic-batching-block-size=1
        --inference-dynamic-batching-max-requests=1 --inference-dynamic-batching-max-tokens=1
        --inference-dynamic-batching-num-cuda-graphs=1 --inference-dynamic-batching-track-paused-request-events
        --inference-dynamic-batching-track-generated-token-events --decode-only-cuda-graphs
        --inference-cuda-graph-all-prefills --inference-cuda-graph-max-tokens=1
        --inference-dynamic-batching-unified-memory-level=0 --enable-chunked-prefill --num-speculative-tokens=1
        --inference-dynamic-batching-prefix-caching --no-inference-dynamic-batching-prefix-caching
        --inference-dynamic-batching-prefix-caching-eviction-policy=ref_zero
        --inference-dynamic-batching-prefix-caching-coordinator-policy=longest_prefix
        --inference-dynamic-batching-prefix-caching-routing-alpha=0.5
        --inference-dynamic-batching-prefix-caching-mamba-gb=0.5
        --inference-dynamic-batching-cuda-graph-mixed-prefill-count=1
        --inference-dynamic-batching-cuda-graph-sizing-distribution=exponential
        --inference-dynamic-batching-sampling-backend=torch --use-same-sampling-seed-across-dp-ranks
        --inference-dynamic-batching-async-sched-mode=legacy
        --inference-dynamic-batching-logprobs-mode=raw_logprobs --inference-logging-step-interval=1
        --inference-text-gen-server-logging --no-inference-text-gen-server-logging --inference-wandb-logging
        --no-inference-wandb-logging --inference-coordinator-port=1 --mamba-inference-conv-states-dtype=bf16
        --mamba-inference-ssm-states-dtype=bf16 --inference-use-synchronous-zmq-collectives
        --no-inference-use-synchronous-zmq-collectives --inference-disable-ep-consensus
        --no-inference-disable-ep-consensus --inference-shards=x""",
    "Transformer-Engine": """
        --fp4-param-gather --fp8-param-gather --te-precision-config-file=x""",
    "experimental": """
        --enable-experimental --spec=x --hybrid-layer-pattern=x --hybrid-override-pattern=x --yaml-cfg=x
        --use-precision-aware-optimizer --main-grads-dtype=fp32 --main-params-dtype=fp32 --exp-avg-dtype=fp32
        --exp-avg-sq-dtype=fp32 --megatron-fsdp-main-params-dtype=fp32 --megatron-fsdp-main-grads-dtype=fp32
        --megatron-fsdp-grad-comm-dtype=fp32 --megatron-fsdp-enable-fine-grained-param-gather
        --megatron-fsdp-max-pool-double-buffer --fsdp-db-use-persist-buf-on-alloc-fail""",
    "one logger": """
        --no-one-logger --one-logger-project=x --one-logger-run-name=x --one-logger-async --app-tag-run-name=x
        --app-tag-run-version=x""",
    "In-process restart": """
        --inprocess-restart --inprocess-max-iterations=1 --inprocess-monitor-thread-interval=0.5
        --inprocess-monitor-process-interval=0.5 --inprocess-progress-watchdog-interval=0.5
        --inprocess-heartbeat-interval=0.5 --inprocess-soft-timeout=0.5 --inprocess-hard-timeout=0.5
        --inprocess-heartbeat-timeout=0.5 --inprocess-barrier-timeout=0.5 --inprocess-completion-timeout=0.5
        --inprocess-last-call-wait=0.5 --inprocess-termination-grace-time=0.5 --inprocess-granularity=node
        --inprocess-active-world-size=1 --inprocess-empty-cuda-cache""",
    "ft_package": """
        --enable-ft-package --calc-ft-timeouts --ft-num-warmup-iters=1""",
    "rerun engine": """
        --error-injection-rate=1 --error-injection-type=correct_result --rerun-mode=disabled
        --check-for-spiky-loss""",
    "msc": """
        --enable-msc --disable-msc""",
    "sft": """
        --sft --sft-tokenizer-prompt-format=x""",
    "fault injector": """
        --fault-injector-ranks=x --fault-injector-num-ranks=1 --fault-injector-fault-types=x
        --fault-injector-fault-probabilities=x --fault-injector-fault-delay=0.5
        --fault-injector-delay-start-iteration=1 --fault-injector-mtti-seconds=0.5
        --fault-injector-offset-seconds=0.5 --fault-injector-seed=1""",
}
"""Megatron-LM's argument-group title -> its flags (876 spellings)."""


def flags() -> list[tuple[str, str | None]]:
    """Every recorded ``(spelling, value)``; ``value`` is None for a switch."""
    out = []
    for block in GROUPS.values():
        for entry in block.split():
            flag, _, value = entry.partition("=")
            out.append((flag, value or None))
    return out
