"""Megatron-LM / Megatron-DeepSpeed flags that have no meaning here, or that ask for something not built here.

``MegatronCompatConfig`` is the one place such flags live, so that existing launch scripts parse unchanged. Each
field's metadata says what happens when the flag is given:

* ``ignored``: accepted with no effect, for the reason given; :func:`ignored_flags_note` lists, once per run, the
  ones a command line gave;
* ``refused``: a ``NotImplementedError`` from :func:`check_refused_flags` (run by ``PretrainConfig.validate``)
  that says what to use instead; ``allowed`` values are the ones that ask for nothing (``--num-experts 1``,
  ``--transformer-impl local``): those are accepted like ignored flags.

Flags that work here belong to their rooms' configs; ``docs/megatron_deepspeed_flags.md`` is the audit of
Megatron-DeepSpeed's flags, ``docs/megatron_lm_flags.md`` that of Megatron-LM's (whose families live in
``training.compat_megatron_lm``).
The help text of these fields is their metadata (``help``), shown by ``--help``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from megatron.config import flag_name
from megatron.training.compat_megatron_lm import MegatronLMCompat, ignored_field, refused_field

__all__ = ["MegatronCompatConfig", "given_compat_flags", "ignored_flags_note", "check_refused_flags"]

_NO_PIPELINE = ("a detail of Megatron's own pipeline communication; pipeline stages here run on "
                "torch.distributed.pipelining's schedules")
_KERNEL = "kernel fusion choice; the math is the same"
_MEMORY = "activation-memory option; results are the same"
_ZERO3 = "ZeRO-3 memory option; ZeRO-3 is not supported"
_TB = "TensorBoard detail; scalars are written each --log-interval"
_MOE = "mixture of experts is not implemented; drop the MoE flags (dense models only)"
_OTHER_MODEL = ("belongs to another Megatron model (T5, Retro, ICT/REALM, ViT); only GPT and BERT are built here "
                "(pretrain_gpt.py, pretrain_bert.py)")
_KD = "knowledge distillation is not implemented; drop the teacher (--kd*) flags"
_SEQ_PAR = "DeepSpeed-Ulysses sequence parallelism is not implemented; use --tensor-model-parallel-size"


_ignored = ignored_field
_refused = refused_field


@dataclass(kw_only=True)
class MegatronCompatConfig(MegatronLMCompat):
    """Megatron / Megatron-DeepSpeed flags accepted so that existing launch scripts parse (see the module doc); the
    Megatron-LM feature families of ``training.compat_megatron_lm`` come with the base class."""

    # ---- checked against supported values by check_unsupported (training.config) ---------------------------------
    context_parallel_size: int = 1
    """Context parallelism; only 1 is supported."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage: 1 shards optimizer state over data-parallel ranks (as --use-distributed-optimizer);
    higher stages are not supported."""
    deepspeed_gradient_accumulation_steps: int | None = field(default=None, metadata={"cli": False})
    """gradient_accumulation_steps of the DeepSpeed config, checked against the batch flags in validate()."""

    # ---- accepted, no effect ---------------------------------------------------------------------------------------
    no_pipeline_parallel: bool = _ignored(_NO_PIPELINE, False)
    data_impl: Literal["mmap", "infer"] | None = _ignored("only the mmap .bin/.idx format exists (read as mmap)")
    log_timers_to_tensorboard: bool = _ignored("timings are always logged", False)
    log_batch_size_to_tensorboard: bool = _ignored("the global batch size is always logged", False)
    log_validation_ppl_to_tensorboard: bool = _ignored("validation perplexity is always logged", False)
    log_optimizer_states_to_tensorboard: bool = _ignored("optimizer-state statistics are not logged", False)
    log_memory_to_tensorboard: bool = _ignored("peak memory is part of every log line", False)
    log_world_size_to_tensorboard: bool = _ignored(_TB, False)
    no_log_learnig_rate_to_tensorboard: bool = _ignored(_TB, False)
    no_log_loss_scale_to_tensorboard: bool = _ignored(_TB, False)
    tensorboard_queue_size: int | None = _ignored("scalars are written synchronously; there is no queue")
    tensorboard_log_interval: int | None = _ignored(_TB)
    log_params_norm: bool = _ignored("the parameter norm is not logged", False)
    log_num_zeros_in_grad: bool = _ignored("zero-gradient counts are not logged", False)
    log_throughput: bool = _ignored("throughput is part of every log line", False)
    timing_log_level: int | None = _ignored("timer detail; the loop logs its step timings")
    timing_log_option: str | None = _ignored("timer detail; the loop logs its step timings")
    no_barrier_with_level_1_timing: bool = _ignored("timer detail", False)
    wandb_project: str | None = _ignored("no Weights & Biases writer; use --metrics-file or --tensorboard-dir")
    wandb_exp_name: str | None = _ignored("no Weights & Biases writer; use --metrics-file or --tensorboard-dir")
    wandb_save_dir: str | None = _ignored("no Weights & Biases writer; use --metrics-file or --tensorboard-dir")
    local_rank: int | None = _ignored("the rank comes from torchrun's environment (LOCAL_RANK)",
                                      aliases=["--local_rank"])
    deepspeed_mpi: bool = _ignored("processes are started by torchrun", False, aliases=["--deepspeed_mpi"])
    return_data_index: bool = _ignored("every sample already carries its dataset position (its curriculum id)", False)
    train_desc_path: str | None = _ignored("the forced index files are checked against the data instead")
    mmap_warmup: bool = _ignored("the data files are memory-mapped without a warm-up read", False)
    repeated_dataloader: bool = _ignored("the samplers already cycle through the data", False)
    trust_remote_code: bool = _ignored("tokenizers load from local files only", False)
    aml_data_download_path: str | None = _ignored("Azure ML data download; pass local --data-path files")
    use_dataset_only: str | None = _ignored("builds datasets for an external trainer; not used here")
    checkpoint_num_layers: int | None = _ignored("checkpoint chunk size: activation memory only; use "
                                                 "--recompute-num-layers to choose it")
    distribute_saved_activations: bool = _ignored(_MEMORY, False)
    distribute_checkpointed_activations: bool = _ignored(_MEMORY, False)
    partition_activations: bool = _ignored(_MEMORY, False)
    contigious_checkpointing: bool = _ignored(_MEMORY, False)
    checkpoint_in_cpu: bool = _ignored(_MEMORY, False)
    synchronize_each_layer: bool = _ignored(_MEMORY, False)
    profile_backward: bool = _ignored(_MEMORY, False)
    empty_unused_memory_level: int | None = _ignored("allocator cache clearing; memory only")
    sequence_parallel: bool = _ignored("Megatron sequence parallelism saves activation memory; tensor-parallel "
                                       "results are the same without it", False)
    no_async_tensor_model_parallel_allreduce: bool = _ignored("communication overlap; results are the same", False)
    no_gradient_accumulation_fusion: bool = _ignored(_KERNEL, False)
    no_masked_softmax_fusion: bool = _ignored(_KERNEL, False)
    no_bias_gelu_fusion: bool = _ignored(_KERNEL, False)
    no_bias_dropout_fusion: bool = _ignored(_KERNEL, False)
    no_persist_layer_norm: bool = _ignored(_KERNEL, False)
    disable_mem_efficient_ln: bool = _ignored(_KERNEL, False)
    no_rope_fusion: bool = _ignored(_KERNEL, False)
    use_flash_attn: bool = _ignored("attention runs through torch's scaled_dot_product_attention, which picks "
                                    "flash attention itself where available", False, aliases=["--use-flash-attn-v1"])
    use_flash_attn_v2: bool = _ignored("attention runs through torch's scaled_dot_product_attention", False)
    use_flash_attn_triton: bool = _ignored("attention runs through torch's scaled_dot_product_attention", False)
    use_flash_attn_builder: bool = _ignored("attention runs through torch's scaled_dot_product_attention", False)
    attention_softmax_in_fp32: bool = _ignored("the attention softmax is always computed in fp32 here", False)
    no_query_key_layer_scaling: bool = _ignored("query-key layer scaling changes no result, only fp16 range; the "
                                                "softmax here is fp32", False)
    accumulate_allreduce_grads_in_fp32: bool = _ignored("gradients always accumulate and reduce in fp32 here",
                                                        False)
    fp16_lm_cross_entropy: bool = _ignored("the cross entropy is always computed in fp32 here", False)
    use_cpu_initialization: bool = _ignored("initialization is already the same at every tensor-parallel size",
                                            False)
    no_initialization: bool = _ignored("parameters are always initialized; loaded weights replace them", False)
    no_save_optim: bool = _ignored("checkpoints always hold the optimizer, so resumes are exact", False)
    no_save_rng: bool = _ignored("checkpoints always hold the RNG states, so resumes are exact", False)
    ddp_impl: Literal["local", "torch", "FSDP"] | None = _refused(
        "FSDP is not supported; data parallelism is Megatron's (local) gradient all-reduce", allowed=("local", "torch"),
        aliases=["--DDP-impl"])
    no_contiguous_buffers_in_local_ddp: bool = _ignored("gradients always live in one contiguous fp32 buffer",
                                                        False)
    overlap_grad_reduce: bool = _ignored("communication overlap; results are the same", False)
    overlap_param_gather: bool = _ignored("communication overlap; results are the same", False)
    no_scatter_gather_tensors_in_pipeline: bool = _ignored(_NO_PIPELINE, False)
    use_ring_exchange_p2p: bool = _ignored(_NO_PIPELINE, False)
    overlap_p2p_communication: bool = _ignored(_NO_PIPELINE, False)
    pipeline_model_parallel_split_rank: int | None = _ignored(_NO_PIPELINE)
    standalone_embedding_stage: bool = _refused("the first pipeline stage holds the embeddings and its share of the "
                                                "layers; drop --standalone-embedding-stage", False, allowed=(False,))
    enable_zbh1_pipeline: bool = _ignored(_NO_PIPELINE, False)
    enable_zbh1_exact_semantics: bool = _ignored(_NO_PIPELINE, False)
    lazy_mpu_init: list[str] | None = _ignored("process groups are always created by the training script",
                                               nargs="*")  # a switch in Megatron-LM, a value in Megatron-DeepSpeed
    cpu_optimizer: bool = _ignored("optimizer implementation choice: the same Adam update runs on the device", False)
    cpu_torch_adam: bool = _ignored("optimizer implementation choice: the same Adam update", False,
                                    aliases=["--cpu_torch_adam"])
    ds_fused_adam: bool = _ignored("optimizer implementation choice: the same Adam update", False,
                                   aliases=["--ds_fused_adam"])
    zero_reduce_scatter: bool = _ignored("ZeRO communication option", False)
    zero_contigious_gradients: bool = _ignored("ZeRO communication option", False)
    zero_reduce_bucket_size: int | None = _ignored("ZeRO communication option")
    zero_allgather_bucket_size: int | None = _ignored("ZeRO communication option")
    scattered_embeddings: bool = _ignored(_ZERO3, False)
    split_transformers: bool = _ignored(_ZERO3, False)
    memory_centric_tiled_linear: bool = _ignored(_ZERO3, False)
    tile_factor: int | None = _ignored(_ZERO3)
    use_pin_memory: bool = _ignored(_ZERO3, False)
    sgd_momentum: float | None = _ignored("used only by --optimizer sgd, which is not available")
    onnx_safe: str | None = _ignored("ONNX export option")
    inference: bool = _ignored("inference-only option", False)
    ds_inference: bool = _ignored("DeepSpeed inference engine option", False)
    inference_batch_times_seqlen_threshold: int | None = _ignored("inference-only option")
    max_tokens_to_oom: int | None = _ignored("inference-only option")
    adlr_autoresume: bool = _ignored("NVIDIA cluster auto-resume; use --exit-signal-handler or "
                                     "--exit-duration-in-mins with --save", False)
    adlr_autoresume_interval: int | None = _ignored("NVIDIA cluster auto-resume")
    profile: list[str] | None = _ignored("profiling hook; use torch.profiler around a short run",
                                         nargs="*")  # a switch in Megatron-LM, a value in Megatron-DeepSpeed
    profile_steps: str | None = _ignored("profiling hook", aliases=["--profile_steps"])
    profile_ranks: list[int] | None = _ignored("profiling hook")
    no_create_attention_mask_in_dataloader: bool = _ignored("no mask is built in the data loader unless "
                                                            "--create-attention-mask-in-dataloader", False)
    no_mmap_bin_files: bool = _ignored("the .bin files are always memory-mapped", False)
    use_mcore_models: bool = _ignored("one model implementation exists", False)
    use_legacy_models: bool = _ignored("one model implementation exists", False)
    attention_backend: str | None = _ignored("attention runs through torch's scaled_dot_product_attention")
    async_save: bool = _ignored("checkpoints are written synchronously (atomically)", False)
    log_progress: bool = _ignored("progress is in every log line", False)

    # ---- refused unless harmless -----------------------------------------------------------------------------------
    model_parallel_size: int | None = _refused("use --tensor-model-parallel-size")
    batch_size: int | None = _refused("use --micro-batch-size (and --global-batch-size)")
    warmup: int | None = _refused("use --lr-warmup-fraction, --lr-warmup-iters, --lr-warmup-samples or "
                                  "--lr-warmup-tokens")
    no_position_embedding: bool = _refused("a model without position embeddings needs rotary ones: pass "
                                           "--use-rotary-position-embeddings (or --position-embedding-type rope)",
                                           False)
    apply_layernorm_1p: bool = _refused("zero-centered LayerNorm is not implemented; drop the flag", False)
    squared_relu: bool = _refused("the MLP uses GeLU; squared ReLU is not implemented; drop the flag", False)
    openai_gelu: bool = _refused("the MLP uses exact GeLU; the tanh approximation is not implemented; drop the flag",
                                 False)
    fp32_residual_connection: bool = _refused("the residual stream is kept in the model dtype; train in fp32 "
                                              "(no --fp16/--bf16) for fp32 residuals", False)
    embedding_weights_in_fp32: bool = _refused("embedding weights are stored in the model dtype; train in fp32 (no "
                                               "--fp16/--bf16) for fp32 embeddings", False)
    init_method_xavier_uniform: bool = _refused("initialization is normal(0, --init-method-std)", False)
    data_parallel_random_init: bool = _refused("every data-parallel rank starts from the same weights; drop the flag",
                                               False)
    transformer_impl: str | None = _refused("Transformer Engine is not used; drop the flag (or pass local)",
                                            allowed=("local",))
    fp8_e4m3: bool = _refused("fp8 training is not implemented; use --bf16 or --fp16", False)
    fp8_hybrid: bool = _refused("fp8 training is not implemented; use --bf16 or --fp16", False)
    no_fp8_wgrad: bool = _refused("fp8 training is not implemented; use --bf16 or --fp16", False)
    fp8_margin: int | None = _refused("fp8 training is not implemented; use --bf16 or --fp16")
    fp8_interval: int | None = _refused("fp8 training is not implemented; use --bf16 or --fp16")
    fp8_amax_history_len: int | None = _refused("fp8 training is not implemented; use --bf16 or --fp16")
    fp8_amax_compute_algo: str | None = _refused("fp8 training is not implemented; use --bf16 or --fp16")
    start_weight_decay: float | None = _refused("weight decay is constant: use --weight-decay")
    end_weight_decay: float | None = _refused("weight decay is constant: use --weight-decay")
    weight_decay_incr_style: str | None = _refused("weight decay is constant: use --weight-decay",
                                                   allowed=("constant",))
    calculate_per_token_loss: bool = _refused("the loss is the per-micro-batch token mean (Megatron-DeepSpeed's); "
                                              "drop the flag", False)
    sample_rate: float | None = _refused("training reads every sample of its split; subsample with --split or a "
                                         "smaller --data-path", allowed=(1.0,))
    ckpt_format: str | None = _refused("checkpoints are written in the torch layout (iter_*/mp_rank_*/"
                                       "model_optim_rng.pt); import a torch_dist checkpoint with "
                                       "tools/checkpoint/import_megatron.py --loader megatron_lm", allowed=("torch",))
    use_checkpoint_args_compat: bool = _refused(
        "pass the architecture flags (the checkpoint's config.json lists them); tasks/main.py reads them itself",
        False, aliases=["--use-checkpoint-args"])
    no_load_lr_state: bool = _refused("use --override-opt_param-scheduler to take the schedule from the command "
                                      "line", False)
    load_tag: str | None = _refused("--load resumes the iteration in latest_checkpointed_iteration.txt; write the "
                                    "one to load there")
    universal_checkpoint: bool = _refused("DeepSpeed universal checkpoints cannot be loaded; import a model with "
                                          "tools/checkpoint/import_megatron.py", False)
    reset_iteration: bool = _refused("use --finetune to start counting at 0 from loaded weights", False)
    skip_train: bool = _refused("to only evaluate, use tasks/main.py or --train-iters with --eval-iters", False)
    kill_switch_file: str | None = _refused("use --exit-signal-handler (SIGTERM saves and exits) or "
                                            "--exit-duration-in-mins")
    remote_device: str | None = _refused("ZeRO-3 parameter offload is not supported", allowed=("none",))
    ds_sequence_parallel_size: int | None = _refused(_SEQ_PAR, allowed=(1,))
    force_ds_sequence_parallel: bool = _refused(_SEQ_PAR, False)
    ds_sequence_parallel_fpdt: bool = _refused(_SEQ_PAR, False)
    ds_sequence_parallel_fpdt_chunk_size: int | None = _refused(_SEQ_PAR)
    ds_sequence_parallel_fpdt_offloading: bool = _refused(_SEQ_PAR, False)
    use_torch_fsdp2: bool = _refused("FSDP is not supported; use --use-distributed-optimizer (ZeRO-1)", False)
    num_experts: list[int] | None = _refused(_MOE, allowed=([1],))
    mlp_type: str | None = _refused(_MOE, allowed=("standard",))
    topk: int | None = _refused(_MOE, allowed=(1,))
    expert_interval: int | None = _refused(_MOE)
    num_experts_switch: int | None = _refused(_MOE)
    moe_train_capacity_factor: float | None = _refused(_MOE)
    moe_eval_capacity_factor: float | None = _refused(_MOE)
    moe_min_capacity: int | None = _refused(_MOE)
    moe_loss_coeff: float | None = _refused(_MOE)
    moe_expert_parallel_size: int | None = _refused(_MOE, allowed=(1,))
    create_moe_param_group: bool = _refused(_MOE, False)
    disable_moe_token_dropping: bool = _refused(_MOE, False)
    disable_moe_top2_2nd_expert_sampling: bool = _refused(_MOE, False)
    enable_expert_tensor_parallelism: bool = _refused(_MOE, False)
    use_tutel: bool = _refused(_MOE, False)
    kd: bool = _refused(_KD, False)
    kd_alpha_ce: float | None = _refused(_KD)
    kd_beta_ce: float | None = _refused(_KD)
    kd_temp: float | None = _refused(_KD)
    load_teacher: str | None = _refused(_KD)
    num_layers_teacher: int | None = _refused(_KD)
    num_experts_teacher: list[int] | None = _refused(_KD)
    hidden_size_teacher: int | None = _refused(_KD)
    num_attention_heads_teacher: int | None = _refused(_KD)
    mos: bool = _refused(_KD, False)
    decoder_num_layers: int | None = _refused(_OTHER_MODEL)
    decoder_seq_length: int | None = _refused(_OTHER_MODEL)
    retriever_seq_length: int | None = _refused(_OTHER_MODEL)
    output_bert_embeddings: bool = _refused(_OTHER_MODEL, False)
    bert_embedder_type: str | None = _refused(_OTHER_MODEL)
    retro_workdir: str | None = _refused(_OTHER_MODEL)
    retro_add_retriever: bool = _refused(_OTHER_MODEL, False)
    retro_cyclic_train_iters: int | None = _refused(_OTHER_MODEL)
    retro_encoder_layers: int | None = _refused(_OTHER_MODEL)
    retro_encoder_hidden_dropout: float | None = _refused(_OTHER_MODEL)
    retro_encoder_attention_dropout: float | None = _refused(_OTHER_MODEL)
    retro_num_neighbors: int | None = _refused(_OTHER_MODEL)
    retro_num_retrieved_chunks: int | None = _refused(_OTHER_MODEL)
    retro_return_doc_ids: bool = _refused(_OTHER_MODEL, False)
    ict_head_size: int | None = _refused(_OTHER_MODEL)
    biencoder_projection_dim: int | None = _refused(_OTHER_MODEL)
    biencoder_shared_query_context_model: bool = _refused(_OTHER_MODEL, False)
    ict_load: str | None = _refused(_OTHER_MODEL)
    bert_load: str | None = _refused(_OTHER_MODEL)
    titles_data_path: str | None = _refused(_OTHER_MODEL)
    query_in_block_prob: float | None = _refused(_OTHER_MODEL)
    use_one_sent_docs: bool = _refused(_OTHER_MODEL, False)
    evidence_data_path: str | None = _refused(_OTHER_MODEL)
    retriever_report_topk_accuracies: list[int] | None = _refused(_OTHER_MODEL)
    retriever_score_scaling: bool = _refused(_OTHER_MODEL, False)
    block_data_path: str | None = _refused(_OTHER_MODEL)
    embedding_path: str | None = _refused(_OTHER_MODEL)
    indexer_batch_size: int | None = _refused(_OTHER_MODEL)
    indexer_log_interval: int | None = _refused(_OTHER_MODEL)
    num_classes: int | None = _refused(_OTHER_MODEL)
    img_h: int | None = _refused(_OTHER_MODEL)
    img_w: int | None = _refused(_OTHER_MODEL)
    num_channels: int | None = _refused(_OTHER_MODEL)
    patch_dim: int | None = _refused(_OTHER_MODEL)
    classes_fraction: float | None = _refused(_OTHER_MODEL)
    data_per_class_fraction: float | None = _refused(_OTHER_MODEL)
    no_data_sharding: bool = _refused(_OTHER_MODEL, False)
    head_lr_mult: float | None = _refused(_OTHER_MODEL)
    vision_pretraining: bool = _refused(_OTHER_MODEL, False)
    vision_pretraining_type: str | None = _refused(_OTHER_MODEL)
    vision_backbone_type: str | None = _refused(_OTHER_MODEL)
    swin_backbone_type: str | None = _refused(_OTHER_MODEL)
    mask_type: str | None = _refused(_OTHER_MODEL)
    mask_factor: float | None = _refused(_OTHER_MODEL)
    iter_per_epoch: int | None = _refused(_OTHER_MODEL)
    dino_local_img_size: int | None = _refused(_OTHER_MODEL)
    dino_local_crops_number: int | None = _refused(_OTHER_MODEL)
    dino_head_hidden_size: int | None = _refused(_OTHER_MODEL)
    dino_bottleneck_size: int | None = _refused(_OTHER_MODEL)
    dino_freeze_last_layer: float | None = _refused(_OTHER_MODEL)
    dino_norm_last_layer: bool = _refused(_OTHER_MODEL, False)
    dino_warmup_teacher_temp: float | None = _refused(_OTHER_MODEL)
    dino_teacher_temp: float | None = _refused(_OTHER_MODEL)
    dino_warmup_teacher_temp_epochs: int | None = _refused(_OTHER_MODEL)


def _given(value: Any) -> bool:
    return value is not None and value is not False


def _spelling(f: dataclasses.Field) -> str:
    aliases = f.metadata.get("aliases") or []
    return aliases[0] if aliases and not aliases[0].startswith(("--no", "--disable")) else flag_name(f.name)


def given_compat_flags(compat: MegatronCompatConfig, *, rope: bool = False, num_attention_heads: int | None = None
                       ) -> dict[str, list[tuple[str, Any, str]]]:
    """``{"ignored": [...], "refused": [...]}`` of the flags ``compat`` was given: ``(flag, value, reason)`` each.

    A refused flag with one of its ``allowed`` values asks for nothing and counts as ignored; so does
    ``--no-position-embedding`` when the model uses rotary embeddings (``rope``). ``num_attention_heads`` is
    accepted for existing callers and unused (grouped-query attention is the model config's now).
    """
    harmless = {"no_position_embedding": rope}
    out: dict[str, list[tuple[str, Any, str]]] = {"ignored": [], "refused": []}
    for f in dataclasses.fields(compat):
        value = getattr(compat, f.name)
        if not _given(value):
            continue
        if "ignored" in f.metadata:
            out["ignored"].append((_spelling(f), value, f.metadata["ignored"]))
        elif "refused" in f.metadata:
            ok = value in f.metadata.get("allowed", ()) or harmless.get(f.name, False)
            out["ignored" if ok else "refused"].append((_spelling(f), value, f.metadata["refused"]))
    return out


def _shown(flag: str, value: Any) -> str:
    if value is True or value == []:  # a switch, or a list flag given without values (--profile)
        return flag
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"


def ignored_flags_note(compat: MegatronCompatConfig, **context: Any) -> str | None:
    """One line naming every given flag that has no effect here and why; None when there is none. ``context``: the
    model facts of :func:`given_compat_flags`."""
    ignored = given_compat_flags(compat, **context)["ignored"]
    if not ignored:
        return None
    return "Megatron flags accepted without effect: " + "; ".join(f"{_shown(f, v)} ({why})" for f, v, why in ignored)


def check_refused_flags(compat: MegatronCompatConfig, **context: Any) -> None:
    """Raise NotImplementedError naming every given flag that asks for something not built here, with what to use
    instead. ``context``: the model facts of :func:`given_compat_flags`."""
    refused = given_compat_flags(compat, **context)["refused"]
    if refused:
        raise NotImplementedError("; ".join(f"{_shown(f, v)} is not supported: {why}" for f, v, why in refused))
