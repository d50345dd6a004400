"""Megatron-LM flags with no counterpart here, by feature family, and the other spellings of flags that work here.

Megatron-LM's parser (``megatron/training/arguments.py`` plus the flags it generates from megatron-core's config
dataclasses) has several hundred flags for features this project does not build: mixture of experts, FP8, FSDP,
reinforcement learning, inference serving, cluster tooling. :data:`FAMILIES` lists them, one family per feature, each
with one status and one note:

* ``ignored``: the flag is accepted and changes nothing, for the reason in the note (kernel, memory and
  communication choices whose results are the same; tooling of NVIDIA's clusters); the run lists the ones it was
  given in one log line;
* ``refused``: the flag asks for something not built here; validation stops the run with the note, which says what
  to use instead. ``allowed`` values ask for nothing (``--expert-model-parallel-size 1``) and count as ignored.

:class:`MegatronLMCompat` is generated from :data:`FAMILIES` (one field per flag, the field metadata contract of
``training.compat``) and is the base of ``MegatronCompatConfig``, so the flags parse with every entry script.
``docs/megatron_lm_flags.md`` is the audit table; ``tests/training/test_megatron_lm_flags.py`` checks both.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Family", "FAMILIES", "MegatronLMCompat", "ignored_field", "refused_field", "FLAG_ALIASES",
           "VALUE_ALIASES"]


def ignored_field(why: str, default: Any = None, **meta: Any) -> Any:
    """A compat field accepted with no effect, for reason ``why``."""
    return field(default=default, metadata={"ignored": why, "help": f"Accepted, no effect: {why}.", **meta})


def refused_field(instead: str, default: Any = None, allowed: tuple = (), **meta: Any) -> Any:
    """A compat field that stops the run with ``instead`` unless given one of the ``allowed`` values."""
    help_text = f"Not supported: {instead}." + (f" Accepted values: {list(allowed)}." if allowed else "")
    return field(default=default, metadata={"refused": instead, "allowed": allowed, "help": help_text, **meta})


# ---- other spellings of flags that work here (read by PretrainConfig.build_parser) ---------------------------------
FLAG_ALIASES: dict[str, tuple[str, str, Any]] = {
    "--checkpoint-activations": ("model", "recompute_granularity", "full"),
    "--deepspeed-activation-checkpointing": ("model", "recompute_granularity", "full"),
    "--disable-bias-linear": ("model", "add_bias_linear", False),
    "--use-rotary-position-embeddings": ("model", "position_embedding_type", "rope"),
    "--deepscale": ("data_efficiency", "deepspeed", True),
}
"""Switches that set a field to a value (Megatron-LM / Megatron-DeepSpeed spelling -> (room, field, value))."""

VALUE_ALIASES: dict[str, tuple[str, type]] = {
    "--encoder-seq-length": ("seq_length", int),
    "--encoder-num-layers": ("num_layers", int),
    "--rotary-position-embeddings-theta": ("rotary_base", int),
    "--norm-epsilon": ("layernorm_epsilon", float),
    "--deepscale_config": ("deepspeed_config", str),
    "--persistent-save-interval": ("save_interval", int),
}
"""Other spellings of flags that take a value (spelling -> (field, value type))."""


@dataclass(frozen=True)
class Family:
    """Megatron-LM flags of one feature that share a status and a note.

    ``flags`` is whitespace-separated entries ``name[|alias...][:type[+|*]][=allowed,...]``: ``name`` is the flag
    without its dashes (a switch unless ``:int``, ``:float`` or ``:str`` gives its value type; ``+``/``*`` take
    one-or-more / any number of values), ``|alias`` adds spellings of the same flag, ``=v,...`` the values that ask
    for nothing (refused families only).
    """

    name: str
    status: Literal["ignored", "refused"]
    note: str
    flags: str


_KERNEL = "kernel or fusion choice; the PyTorch path computes the same math"
_COMM = "communication tuning; results are the same"
_MEMORY = "memory-saving option; results are the same"
_PIPE = "pipeline communication detail; results are the same"
_NOT_TE = "Transformer Engine option; Transformer Engine is not used"
_CKPT_DIST = "torch_dist/async checkpoint tuning; checkpoints here are written synchronously in the torch layout"
_INFER = "inference-server option; this project trains"
_CLUSTER = "NVIDIA cluster tooling (loggers, watchdogs, restarts); use --exit-signal-handler, --save and --load"

FAMILIES: tuple[Family, ...] = (
    Family("Mixture of experts", "refused", "mixture of experts is not implemented; dense models only (drop the "
           "MoE flags)", """
        expert-model-parallel-size:int=1 expert-tensor-parallel-size:int=1
        expert-tensor-parallel-num-weight-shards:int overlap-moe-expert-parallel-comm delay-wgrad-compute
        overlap-dispatch-backward-with-experts-wgrad ep-overlap-early-attn-memory-release
        high-priority-a2a-comm-stream use-fused-weighted-squared-relu moe-shared-expert-intermediate-size:int
        moe-shared-expert-gate moe-shared-expert-overlap use-grouped-gemm-for-shared-expert
        moe-shared-expert-glu-interleave-size:int moe-ffn-hidden-size:int moe-router-topk:int
        moe-enable-routing-replay moe-router-padding-for-quantization moe-router-padding-for-fp8
        moe-router-num-groups:int moe-router-group-topk:int moe-router-pre-softmax
        moe-router-topk-scaling-factor:float moe-router-score-function:str moe-router-dtype:str
        moe-router-enable-expert-bias moe-router-bias-update-rate:float
        moe-router-quantile-balancing-ema:float moe-router-force-load-balancing moe-router-force-biased:float
        use-grouped-gemm-for-dense-mlp moe-grouped-gemm moe-use-grouped-tensor moe-single-grouped-weight
        moe-single-grouped-bias moe-z-loss-coeff:float moe-input-jitter-eps:float
        moe-token-dispatcher-type:str moe-enable-deepep moe-flex-dispatcher-backend:str
        moe-permute-fusion-into-hybridep moe-hybridep-pad-uneven-dispatch-inputs moe-per-layer-logging
        moe-expert-capacity-factor:float moe-pad-expert-input-to-capacity
        moe-pad-experts-for-cuda-graph-inference moe-token-drop-policy:str moe-layer-recompute
        moe-permute-fusion moe-router-fusion moe-apply-probs-on-input moe-latent-size:int
        moe-flex-dispatcher-num-sms:int moe-deepep-num-sms:int moe-hybridep-num-sms:int
        moe-hybridep-num-blocks-permute:int moe-hybridep-num-blocks-unpermute:int
        moe-hybridep-num-sms-preprocessing:int moe-ncclep-zero-copy moe-dispatch-fwd-dtype:str
        moe-combine-bwd-dtype:str moe-mlp-glu-interleave-size:int moe-expert-rank-capacity-factor:float
        moe-paged-stash moe-paged-stash-page-size:int moe-paged-stash-buffer-size-factor-cuda:float
        moe-paged-stash-buffer-size-factor-cpu:float moe-layer-freq:str moe-use-upcycling
        moe-router-load-balancing-type:str+ moe-aux-loss-coeff:float+ moe-upcycling-granularity:int
        moe-routing-trace-path:str moe-routing-trace-max-training-iters:int moe-routing-trace-capture-logits
        moe-routing-trace-capture-hidden-states moe-routing-trace-dump-weights
        save-tokens-per-expert-interval:int inference-moe-disable-fused-quant-kernels
        inference-moe-token-dispatcher-type:str"""),
    Family("FP8 / FP4 / low-precision recipes", "refused", "fp8/fp4 training is not implemented; use --bf16 or "
           "--fp16", """
        fp8-format:str fp8-recipe:str fp8-quantizer-factory:str fp8-output-proj first-last-layers-bf16
        num-layers-at-start-in-bf16:int num-layers-at-end-in-bf16:int use-kitchen-attention
        kitchen-attention-backend:str fp4-format:str fp4-recipe:str fp4-quantizer-factory:str fp4-param-gather
        fp8-param-gather te-precision-config-file:str keep-fp8-transpose-cache
        reuse-grad-buf-for-mxfp8-param-ag disable-fp8-wgrad"""),
    Family("Context parallelism", "refused", "context parallelism is not implemented; keep "
           "--context-parallel-size 1 and drop these flags", """
        hierarchical-context-parallel-sizes:int+ max-seqlen-per-dp-cp-rank:int hybrid-context-parallel
        cp-comm-type:str+=p2p"""),
    Family("Other architectures (MLA, sparse/linear attention, Mamba/hybrid, multi-token prediction, muP, "
           "hyper-connections, heterogeneous layers)", "refused", "only the GPT and BERT transformers of "
           "--model-flavor/--num-layers/--hidden-size are built; this architecture option is not implemented", """
        multi-latent-attention q-lora-rank:int kv-lora-rank:int qk-head-dim:int qk-pos-emb-head-dim:int
        v-head-dim:int rotary-scaling-factor:float mscale:float mscale-all-dim:float cache-mla-latents
        mla-down-proj-fusion experimental-attention-variant:str linear-attention-freq:str
        dsa-indexer-n-heads:int dsa-indexer-head-dim:int dsa-indexer-topk:int dsa-indexer-topk-freq:int
        dsa-indexer-skip-topk-offset:int dsa-indexer-loss-coeff:float dsa-indexer-use-sparse-loss
        dsa-kernel-backend:str dsa-indexer-rope-interleaved
        no-dsa-indexer-rotate-activation|disable-dsa-indexer-rotate-activation
        no-dsa-indexer-scoring-relu|disable-dsa-indexer-scoring-relu dsa-indexer-k-norm-epsilon:float
        dsa-indexer-k-norm-fp32 linear-conv-kernel-dim:int linear-key-head-dim:int linear-value-head-dim:int
        linear-num-key-heads:int linear-num-value-heads:int is-hybrid-model mamba-state-dim:int
        mamba-head-dim:int mamba-num-groups:int mamba-num-heads:int gdp-num-householder:int
        disable-mamba-mem-eff-path gdp-cutedsl-kernel gdp-num-chunk-states-to-recompute:int
        mamba-training-ssm-states-dtype:str hybrid-layer-pattern:str hybrid-override-pattern:str spec:str*
        mtp-standalone mtp-num-layers:int mtp-loss-scaling-factor:float mtp-use-repeated-layer
        mtp-detach-heads mtp-hsm mtp-hybrid-override-pattern:str use-mup mup-width-mult:float
        mup-base-hidden-size:int mup-embedding-mult:float mup-output-mult:float mup-base-head-dim:float
        mup-attn-scale-power:float enable-mhc-connections mhc-num-residual-streams:int
        mhc-sinkhorn-iterations:int mhc-init-gating-factor:float mhc-recompute-layer-num:int
        heterogeneous-layers-config-path:str heterogeneous-layers-config-encoded-json:str
        relative-attention-num-buckets:int relative-attention-max-distance:int"""),
    Family("Attention and position-embedding variants", "refused", "not implemented: attention is softmax(QK^T/sqrt(d))"
           " with learned absolute or plain rotary position embeddings (--position-embedding-type, --rotary-base, "
           "--rotary-percent), without QK normalization, extra biases or windows", """
        softmax-type:str=vanilla add-qkv-bias rotary-interleaved qk-layernorm qk-l2-norm qk-clip
        qk-clip-alpha:float qk-clip-threshold:float attention-output-gate window-size:str
        window-attn-skip-freq:str yarn-original-max-position-embeddings:int yarn-beta-fast:float
        yarn-beta-slow:float yarn-correction-range-round-to-int no-yarn-correction-range-round-to-int
        rotary-seq-len-interpolation-factor:int=1 use-rope-scaling rope-scaling-factor:float
        rope-type:str=rope mrope-section:int+ no-rope-freq:str apply-wd-to-qk-layernorm
        no-weight-decay-cond-type:str"""),
    Family("MLP activation and initialization variants", "refused", "not implemented: the MLP is GeLU (or SwiGLU with "
           "--swiglu) and every weight is drawn from normal(0, --init-method-std)", """
        quick-geglu glu-linear-offset:float=0.0 activation-func-clamp-value:float
        embedding-init-method-std:float"""),
    Family("Kernel and fusion choices", "ignored", _KERNEL, """
        cross-entropy-loss-fusion cross-entropy-fusion-impl:str flash-attention-version:int
        apply-query-key-layer-scaling fused-residual-rmsnorm no-bias-swiglu-fusion disable-jit-fuser
        batch-invariant-backend:str"""),
    Family("Transformer Engine details", "ignored", _NOT_TE, """
        use-transformer-engine-op-fuser use-te-activation-func te-rng-tracker inference-rng-tracker"""),
    Family("Numerics switches not offered", "refused", "not configurable here (drop the flag): matmuls use "
           "PyTorch's defaults, gradients are reduced and accumulated in fp32, optimizer states are fp32, logits are "
           "in the model dtype and the loss in fp32", """
        disable-bf16-reduced-precision-matmul deterministic-mode batch-invariant-mode grad-reduce-in-bf16
        output-logit-dtype:str use-precision-aware-optimizer main-grads-dtype:str=fp32
        main-params-dtype:str=fp32 exp-avg-dtype:str=fp32 exp-avg-sq-dtype:str=fp32"""),
    Family("Tensor-parallel communication overlap", "ignored", _COMM, """
        tp-comm-overlap no-tp-comm-bulk-wgrad|disable-tp-comm-bulk-wgrad
        no-tp-comm-bulk-dgrad|disable-tp-comm-bulk-dgrad no-tp-comm-overlap-ag|disable-tp-comm-overlap-ag
        no-tp-comm-overlap-rs|disable-tp-comm-overlap-rs tp-comm-overlap-rs-dgrad
        no-tp-comm-split-ag|disable-tp-comm-split-ag no-tp-comm-split-rs|disable-tp-comm-split-rs
        tp-comm-bootstrap-backend:str tp-comm-overlap-cfg:str tensor-parallel-num-weight-shards:int
        gtp-remat-opt-in-modules:str+ gtp-remat-reduce-scatter-with-fp32-accumulation gtp-remat-nccl-ub
        gtp-expert-remat-nccl-ub"""),
    Family("Pipeline communication and scheduling details", "ignored", _PIPE, """
        pipeline-model-parallel-comm-backend:str overlap-p2p-communication-warmup-flush
        no-overlap-p2p-communication microbatch-group-size-per-virtual-pipeline-stage:int
        defer-embedding-wgrad-compute wgrad-deferral-limit:int"""),
    Family("Uneven pipeline splits", "refused", "pipeline stages hold equal layer counts; choose --num-layers "
           "divisible by --pipeline-model-parallel-size (and by --num-layers-per-virtual-pipeline-stage when "
           "interleaving)", """
        decoder-first-pipeline-num-layers:int decoder-last-pipeline-num-layers:int
        pipeline-model-parallel-layout:str num-virtual-stages-per-pipeline-rank:int
        account-for-embedding-in-pipeline-split account-for-loss-in-pipeline-split"""),
    Family("Data-parallel and process-group tuning", "ignored", _COMM, """
        no-align-grad-reduce|disable-align-grad-reduce no-align-param-gather nccl-communicator-config-path:str
        use-tp-pp-dp-mapping disable-gloo-process-groups use-sharp sharp-enabled-group:str
        high-priority-stream-groups:str+ distributed-timeout-seconds-after-init:int ddp-num-buckets:int
        ddp-bucket-size:int ddp-pad-buckets-for-high-nccl-busbw ddp-reduce-scatter-with-fp32-accumulation
        ddp-param-name-patterns-for-fp32-local-accumulation:str+ ddp-average-in-collective
        overlap-param-gather-with-optimizer-step use-nccl-ub disable-symmetric-registration
        create-all-gather-group no-gradient-reduce-div-fusion suggested-communication-unit-size:int
        flight-recorder-dump-path:str flight-recorder-trace-buffer-size:int
        no-flight-recorder-dump-on-timeout|disable-flight-recorder-dump-on-timeout
        flight-recorder-include-stack-trace
        no-flight-recorder-include-only-active|disable-flight-recorder-include-only-active
        no-flight-recorder-extra-dump-on-exec|disable-flight-recorder-extra-dump-on-exec"""),
    Family("FSDP and sharded optimizers", "refused", "FSDP is not supported; shard optimizer state with "
           "--use-distributed-optimizer (ZeRO-1)", """
        use-megatron-fsdp megatron-fsdp-version:int no-use-layer-wise-param-layout fsdp-manual-registration
        data-parallel-sharding-strategy:str=no_shard outer-dp-sharding-strategy:str=no_shard
        fsdp-double-buffer enable-full-sharding-in-hsdp num-distributed-optimizer-instances:int=1
        torch-fsdp2-no-reshard-after-forward megatron-fsdp-main-params-dtype:str
        megatron-fsdp-main-grads-dtype:str megatron-fsdp-grad-comm-dtype:str
        megatron-fsdp-enable-fine-grained-param-gather megatron-fsdp-max-pool-double-buffer
        fsdp-db-use-persist-buf-on-alloc-fail fake-process-group"""),
    Family("Activation and optimizer offloading, CUDA graphs, garbage collection", "ignored", _MEMORY, """
        cpu-offloading-num-layers:int cpu-offloading-retain-pinned-cpu-buffers
        fine-grained-activation-offloading offload-modules:str+ min-offloaded-tensor-size:int
        delay-offload-until-cuda-graph delta-offload-bytes-across-pp-ranks:int
        activation-offload-fraction:float fine-grained-offloading-max-inflight-offloads:int
        init-model-with-meta-device recompute-modules:str+
        no-clone-scatter-output-in-embedding|disable-clone-scatter-output-in-embedding
        mlp-chunks-for-training:int optimizer-cpu-offload optimizer-cuda-graph
        optimizer-offload-fraction:float use-torch-optimizer-for-cpu-offload overlap-cpu-optimizer-d2h-h2d
        no-pin-cpu-grads no-pin-cpu-params enable-cuda-graph cuda-graph-warmup-steps:int external-cuda-graph
        cuda-graph-impl:str cuda-graph-scope:str+ cuda-graph-modules:str+ manual-gc manual-gc-interval:int
        no-manual-gc-eval|disable-manual-gc-eval train-sync-interval:int"""),
    Family("Optimizers other than Adam", "refused", "only Adam(W) is implemented (--optimizer adam, --adam-beta1/2, "
           "--adam-eps, --weight-decay)", """
        muon-momentum:float muon-no-split-qkv muon-nesterov muon-scale-mode:str muon-fp32-matmul-prec:str
        muon-coefficient-type:str muon-num-ns-steps:int muon-tp-mode:str muon-use-syrk
        muon-extra-scale-factor:float muon-scalar-optimizer:str lion-beta1:float lion-beta2:float"""),
    Family("Learning-rate and batch schedules", "refused", "not implemented; schedule with --lr-decay-style "
           "(constant/linear/cosine/inverse-square-root), --lr-warmup-* and --rampup-batch-size", """
        lr-wsd-decay-style:str lr-wsd-decay-iters:int lr-wsd-decay-samples:int decoupled-lr:float
        decoupled-min-lr:float freeze-all-layers step-batch-size-schedule:str decrease-batch-size-if-needed
        iterations-to-skip:int+"""),
    Family("Checkpoint formats and debug dumps", "refused", "checkpoints are torch-layout iter_*/mp_rank_* files "
           "resumed with --load (--finetune for weights only); import other formats with "
           "tools/checkpoint/import_megatron.py", """
        use-dist-ckpt dist-ckpt-format:str=torch auto-detect-ckpt-format ckpt-convert-format:str
        ckpt-convert-save:str ckpt-convert-update-legacy-dist-opt-format pretrained-checkpoint:str
        ckpt-step:int override-ckpt-iteration:int use-mp-args-from-checkpoint-args load-main-params-from-ckpt
        non-persistent-save-interval:int non-persistent-ckpt-type:str non-persistent-global-ckpt-dir:str
        non-persistent-local-ckpt-dir:str non-persistent-local-ckpt-algo:str replication replication-jump:int
        replication-factor:int verify-integrity save-params-interval:int save-activations-interval:int
        save-wgrads-interval:int save-dgrads-interval:int save-retain-interval:int
        dump-param-to-param-group-map:str"""),
    Family("Distributed-checkpoint tuning", "ignored", _CKPT_DIST, """
        no-ckpt-fully-parallel-save ckpt-fully-parallel-save async-strategy:str use-persistent-ckpt-worker
        async-ckpt-cpu-priority:int async-ckpt-io-priority:int async-ckpt-use-cpu-shm ckpt-fully-parallel-load
        ckpt-fully-parallel-load-exchange-algo:str ckpt-fully-parallel-load-per-rank-objects
        ckpt-fully-parallel-save-process-group:str ckpt-fully-parallel-load-process-group:str
        ckpt-assume-constant-structure ckpt-pg-tensors-cache-path:str ckpt-pg-tensors-cache-create
        no-ckpt-load-validate-sharding-integrity|disable-ckpt-load-validate-sharding-integrity
        no-strict-fsdp-dtensor-load|disable-strict-fsdp-dtensor-load dist-ckpt-strictness:str
        dist-ckpt-save-pre-mcore-014 dist-ckpt-optim-fully-reshardable
        distrib-optim-fully-reshardable-mem-efficient dist-ckpt-workers:int ckpt-drop-redundant-extra-state
        no-use-tokenizer-model-from-checkpoint-args|disable-use-tokenizer-model-from-checkpoint-args
        no-save-tokenizer-assets|disable-save-tokenizer-assets"""),
    Family("Validation variants", "refused", "validation runs --eval-iters batches of the training batch size every "
           "--eval-interval iterations on the --split / --valid-data-path set", """
        start-eval-at-iter:int eval-global-batch-size:int eval-micro-batch-size:int test-mode full-validation
        multiple-validation-sets validation-set-names:str+"""),
    Family("Data options not offered", "refused", "not implemented; give the data with --data-path (or "
           "--train-data-path/--valid-data-path/--test-data-path) and --split; documents are separated with "
           "--reset-attention-mask/--reset-position-ids", """
        phase-transition-iterations:str data-args-path:str per-split-data-args-path:str
        per-dataset-sequences-path:str dataloader-inter-document-masking allow-ambiguous-pad-tokens fim-data
        fim-rate:float fim-spm-rate:float fim-split-sample:str fim-fragment-rate:float fim-no-prefix:str
        fim-prefix-token:str fim-middle-token:str fim-suffix-token:str fim-pad-token:str fim-eod-token:str sft
        sft-tokenizer-prompt-format:str"""),
    Family("Data loading speed-ups", "ignored", "data-loading speed option; the samples are the same", """
        dataloader-fast-cache-load dataloader-defer-npy-index-mmap num-dataset-builder-threads:int
        object-storage-cache-path:str mid-level-dataset-surplus:float enable-msc disable-msc"""),
    Family("Tokenizer options not offered", "refused", "not implemented; choose the tokenizer with --tokenizer-type, "
           "--vocab-file/--merge-file or --tokenizer-model, and the vocabulary padding with "
           "--make-vocab-size-divisible-by (1 = no padding)", """
        padded-vocab-size:int no-pad-vocab-size|disable-pad-vocab-size tokenizer-metadata:str
        tokenizer-special-tokens:str+ tiktoken-pattern:str tiktoken-num-special-tokens:int
        tokenizer-sentencepiece-legacy
        no-tokenizer-sentencepiece-ignore-extra-whitespaces|disable-tokenizer-sentencepiece-ignore-extra-whitespaces
        tokenizer-hf-no-use-fast tokenizer-hf-no-include-special-tokens null-tokenizer-eod-id:int
        null-tokenizer-pad-id:int chat-template:str use-gigatoken"""),
    Family("Logging and profiling", "ignored", "logging/profiling detail not offered; every log line has loss, "
           "learning rate, throughput and peak memory (--log-interval, --tensorboard-dir, --metrics-file); profile "
           "with torch.profiler around a short run", """
        log-memory-interval:int log-device-memory-used log-max-attention-logit wandb-entity:str
        logging-level:int log-energy config-logger-dir:str otel-enabled otel-service-name:str
        otel-span-groups:str profile-step-start:int profile-step-end:int use-pytorch-profiler
        pytorch-profiler-collect-shapes pytorch-profiler-collect-callstack pytorch-profiler-collect-chakra
        record-memory-history memory-snapshot-path:str record-shapes nvtx-ranges enable-experimental
        disable-log-loss-scale-to-tensorboard"""),
    Family("Cluster tooling", "ignored", _CLUSTER, """
        log-straggler straggler-ctrlr-port:int straggler-minmax-count:int disable-straggler-on-startup
        run-workload-inspector-server no-one-logger one-logger-project:str one-logger-run-name:str
        one-logger-async app-tag-run-name:str app-tag-run-version:str inprocess-restart
        inprocess-max-iterations:int inprocess-monitor-thread-interval:float
        inprocess-monitor-process-interval:float inprocess-progress-watchdog-interval:float
        inprocess-heartbeat-interval:float inprocess-soft-timeout:float inprocess-hard-timeout:float
        inprocess-heartbeat-timeout:float inprocess-barrier-timeout:float inprocess-completion-timeout:float
        inprocess-last-call-wait:float inprocess-termination-grace-time:float inprocess-granularity:str
        inprocess-active-world-size:int inprocess-empty-cuda-cache enable-ft-package calc-ft-timeouts
        ft-num-warmup-iters:int check-weight-hash-across-dp-replicas-interval:int gpu-sniff-test-interval:int
        exit-signal-handler-for-dataloader exit-signal-handler-for-training"""),
    Family("Signals, fault injection and re-runs", "refused", "not implemented; --exit-signal-handler saves and exits "
           "on SIGTERM, --check-for-nan-in-loss-and-grad stops on a bad loss", """
        exit-signal:str=SIGTERM error-injection-rate:int=0 error-injection-type:str rerun-mode:str=disabled
        check-for-spiky-loss check-for-large-grads result-rejected-tracker-filename:str
        fault-injector-ranks:str fault-injector-num-ranks:int fault-injector-fault-types:str
        fault-injector-fault-probabilities:str fault-injector-fault-delay:float
        fault-injector-delay-start-iteration:int fault-injector-mtti-seconds:float
        fault-injector-offset-seconds:float fault-injector-seed:int yaml-cfg:str"""),
    Family("Knowledge distillation from saved logits", "refused", "knowledge distillation is not implemented; drop "
           "the --logits-* flags", """
        logits-save-top-k:int logits-save-top-p:float logits-save-top-p-min-k:int logits-save-dir:str
        logits-save-dtype:str logits-load-dir:str logits-load-decode-threads:int
        logits-load-prefetch-factor:int logits-load-msc-prefetch-depth:int logits-load-kd-loss-alpha:float
        logits-load-ignore-errors"""),
    Family("Reinforcement learning", "refused", "reinforcement learning (GRPO) is not implemented; drop the "
           "RL flags (this project pretrains and fine-tunes with the language-model loss)", """
        perform-rl-step rl-prompts-per-eval:int grpo-prompts-per-step:int grpo-group-size:int
        rl-generation-lag:float rl-max-inflight-requests:int rl-submission-granularity:str
        rl-consumption-granularity:str rl-durable-rollout-bank rl-rollout-bank-dir:str
        rl-rollout-bank-max-bytes:int grpo-iterations:int grpo-clamp-eps-lower:float
        grpo-clamp-eps-upper:float grpo-kl-beta:float grpo-entropy-term-weight:float
        grpo-filter-groups-with-same-reward langrl-env-config:str rl-default-temperature:float
        rl-default-top-p:float rl-default-top-k:int rl-offload-optimizer-during-inference
        rl-kv-cache-management-mode:str rl-persist-cuda-graphs|no-rl-persist-cuda-graphs
        rl-partial-rollouts|no-rl-partial-rollouts
        rl-inference-logprobs-is-correction|no-rl-inference-logprobs-is-correction
        rl-importance-sampling-truncation-coef:float rl-use-sequence-packing|no-rl-use-sequence-packing
        rl-sequence-packing-max-sequences-per-bin:int rl-sequence-packing-algo:str
        rl-training-cuda-graphs|no-rl-training-cuda-graphs rl-inference-tensor-model-parallel-size:int
        rl-inference-pipeline-model-parallel-size:int rl-inference-expert-model-parallel-size:int
        rl-inference-expert-tensor-model-parallel-size:int rl-inference-model-unified-memory-level:int
        rl-offload-inference-model-weights-when-idle|no-rl-offload-inference-model-weights-when-idle
        refit-method:str rl-verify-model-weights-swap|no-rl-verify-model-weights-swap
        rl-skip-bos-token|no-rl-skip-bos-token rl-profile rl-profile-dir:str rl-inference-parsers:str*"""),
    Family("Inference serving", "ignored", _INFER, """
        inference-cuda-graph-scope:str flash-decode symmetric-ar-type:str nccl-all-reduce-for-prefill
        inference-fuse-tp-communication inference-disable-triton-nvls-kernels
        inference-grouped-gemm-backend:str mlp-chunks-for-prefill:int use-legacy-static-engine
        inference-max-requests:int inference-max-seq-length:int inference-dynamic-batching
        inference-dynamic-batching-buffer-size-gb:float inference-dynamic-batching-paused-buffer-size-gb:float
        inference-dynamic-batching-mamba-memory-ratio:float inference-dynamic-batching-block-size:int
        inference-dynamic-batching-max-requests:int inference-dynamic-batching-max-tokens:int
        inference-dynamic-batching-num-cuda-graphs:int inference-dynamic-batching-track-paused-request-events
        inference-dynamic-batching-track-generated-token-events decode-only-cuda-graphs
        inference-cuda-graph-all-prefills inference-cuda-graph-max-tokens:int
        inference-dynamic-batching-unified-memory-level:int enable-chunked-prefill num-speculative-tokens:int
        inference-dynamic-batching-prefix-caching|no-inference-dynamic-batching-prefix-caching
        inference-dynamic-batching-prefix-caching-eviction-policy:str
        inference-dynamic-batching-prefix-caching-coordinator-policy:str
        inference-dynamic-batching-prefix-caching-routing-alpha:float
        inference-dynamic-batching-prefix-caching-mamba-gb:float
        inference-dynamic-batching-cuda-graph-mixed-prefill-count:int
        inference-dynamic-batching-cuda-graph-sizing-distribution:str
        inference-dynamic-batching-sampling-backend:str use-same-sampling-seed-across-dp-ranks
        inference-dynamic-batching-async-sched-mode:str inference-dynamic-batching-logprobs-mode:str
        inference-logging-step-interval:int
        inference-text-gen-server-logging|no-inference-text-gen-server-logging
        inference-wandb-logging|no-inference-wandb-logging inference-coordinator-port:int
        mamba-inference-conv-states-dtype:str mamba-inference-ssm-states-dtype:str
        inference-use-synchronous-zmq-collectives|no-inference-use-synchronous-zmq-collectives
        inference-disable-ep-consensus|no-inference-disable-ep-consensus inference-shards:str"""),
)
"""The Megatron-LM flags handled here by family (Megatron-LM ``d98e8a6``, 2026-08-22; see the docs table)."""

_ENTRY = re.compile(r"^(?P<names>[a-z0-9|-]+)(?::(?P<type>int|float|str)(?P<nargs>[+*]?))?(?:=(?P<allowed>\S+))?$")
_TYPES = {"int": int, "float": float, "str": str}


def _family_fields(family: Family) -> list[tuple[str, Any, Any]]:
    """``(field name, annotation, dataclasses.field)`` of each flag of ``family``."""
    out = []
    for entry in family.flags.split():
        m = _ENTRY.match(entry)
        if m is None:
            raise ValueError(f"bad flag entry {entry!r} in family {family.name!r}")
        first, *aliases = m["names"].split("|")
        kind = _TYPES.get(m["type"] or "")
        allowed = tuple(kind(v) for v in m["allowed"].split(",")) if m["allowed"] else ()
        if allowed and family.status != "refused":
            raise ValueError(f"{entry!r}: only refused flags have accepted values")
        if m["nargs"]:
            allowed = tuple([v] for v in allowed)  # a list flag's value is a list
        meta: dict[str, Any] = {"aliases": [f"--{a}" for a in aliases], "family": family.name}
        if m["nargs"]:
            meta["nargs"] = m["nargs"]
        tp: Any = bool if kind is None else (list[kind] | None if m["nargs"] else kind | None)
        default = False if kind is None else None
        made = (ignored_field(family.note, default, **meta) if family.status == "ignored"
                else refused_field(family.note, default, allowed=allowed, **meta))
        out.append((first.replace("-", "_"), tp, made))
    return out


def _build() -> type:
    fields = [f for family in FAMILIES for f in _family_fields(family)]
    names = [name for name, _, _ in fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"Megatron-LM compat flags listed twice: {twice}")
    cls = dataclasses.make_dataclass("MegatronLMCompat", fields, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = "Megatron-LM flags of :data:`FAMILIES`, one field each (see the module doc)."
    return cls


MegatronLMCompat = _build()
