"""A GPT split into pipeline stages: the stage modules, the tied-embedding gradient sync and random-LTD per stage.

Stage 0 holds the embeddings, the last stage the final norm, the output layer (or a copy of the tied word
embedding) and the per-token loss; the transformer layers are split evenly (:func:`pipeline_layer_ranges`), with
``num_layers_per_virtual_pipeline_stage`` into several chunks per rank (interleaved schedule). Each stage builds
only its own parameters, from the same per-name seeds as :class:`~megatron.model.gpt.GPTModel`, so every parameter
equals the full model's of the same name (layer ``i`` keeps its global seed, its global ``layer_number`` and the
global depth of the scaled init). Schedules that run the stages live in ``training.pipeline_schedule``.

Per-batch side inputs under pipeline parallelism: the activations are the only tensors sent between stages. Every
stage receives the micro-batch's ``position_ids`` and ``attention_mask`` from the data (rotary angles and masks are
needed in every layer; curriculum learning's truncated length is just the batch's shape), the first stage its
``tokens``, the last its ``labels`` and ``loss_mask``. Random-LTD's kept-token draws are not sent either: every stage
with random-LTD layers holds its own copy of the token-routing stream, seeded as in the unpipelined model, and its
first random-LTD layer makes the one draw for all random-LTD layers of the model (:class:`StageRandomLTDController`),
exactly as layer ``layer_ids[0]`` does without pipelining, then keeps its own rows. Each stage draws once per
training micro-batch, in micro-batch order, under every schedule (activation recomputation replays the stream), so
the kept tokens equal the unpipelined run's.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from megatron.data_efficiency.config import ModelType
from megatron.data_efficiency.routing.random_ltd import RandomLTDController, RandomLTDLayer, resolve_layer_ids
from megatron.data_efficiency.routing.scheduler import RandomLTDScheduler
from megatron.model.config import TransformerConfig
from megatron.model.gpt import check_tensor_parallel_divisibility
from megatron.model.language_model import build_compiled_loss, per_token_cross_entropy, tied_vocab_parallel_logits
from megatron.model.transformer import TransformerBlock, TransformerLayer, build_norm, rotary_embedding
from megatron.parallel.layers import ColumnParallelLinear, VocabParallelEmbedding, init_master_weight, normal_init
from megatron.parallel.pipeline_state import PipelineParallelState, pipeline_layer_ranges, stage_indices_of_rank
from megatron.parallel.random import (
    DATA_PARALLEL_RNG,
    MODEL_PARALLEL_RNG,
    MODEL_PARALLEL_SEED_OFFSET,
    TOKEN_ROUTING_RNG,
    TOKEN_ROUTING_SEED_OFFSET,
    RNGStatesTracker,
    derive_seed,
)
from megatron.parallel.state import ParallelState

__all__ = [
    "PIPELINE_SEED_OFFSET",
    "GPTStage",
    "build_gpt_stages",
    "stage_rng_tracker",
    "allreduce_tied_embedding_grads",
    "StageRandomLTDController",
    "wrap_stage_layers",
]

PIPELINE_SEED_OFFSET = 100
"""Megatron seeds pipeline rank ``p`` with ``seed + 100 * p``; a stage's dropout streams use its stage index."""


def stage_rng_tracker(seed: int, parallel_state: ParallelState, stage_index: int) -> RNGStatesTracker:
    """The RNG streams of one (virtual) stage.

    The data-parallel and model-parallel (dropout) streams start from ``seed + 100 * stage_index`` (Megatron's
    per-stage offset: different stages must not repeat each other's dropout masks; stage 0 equals the unpipelined
    model). The token-routing stream has no stage offset: every stage replays the unpipelined model's random-LTD
    draws (see the module docstring).
    """
    base = seed + PIPELINE_SEED_OFFSET * stage_index
    tracker = RNGStatesTracker()
    tracker.add(DATA_PARALLEL_RNG, base)
    tracker.add(MODEL_PARALLEL_RNG, base + MODEL_PARALLEL_SEED_OFFSET + parallel_state.tp_rank)
    tracker.add(TOKEN_ROUTING_RNG, seed + TOKEN_ROUTING_SEED_OFFSET)
    return tracker


class _StageDecoder(TransformerBlock):
    """A :class:`TransformerBlock` over global layers ``[start, end)``, with the final norm on the last stage only.

    Reuses the block's forward (layer calls, activation recomputation per stage, as Megatron counts
    ``recompute_num_layers`` per stage); only the construction differs: layer ``i`` is built with its global index
    and seed, so it equals the full model's layer ``i``.
    """

    def __init__(
        self, config: TransformerConfig, parallel_state: ParallelState, layer_range: tuple[int, int], *,
        rng_tracker: RNGStatesTracker, init_seed: int, final_norm: bool,
    ) -> None:
        nn.Module.__init__(self)
        start, end = layer_range
        self.layers = nn.ModuleList(
            TransformerLayer(config, parallel_state, i, rng_tracker=rng_tracker,
                             init_seed=derive_seed(init_seed, "layers", i))
            for i in range(start, end)
        )
        self.final_layernorm = build_norm(config) if final_norm else nn.Identity()
        if config.torch_compile:
            for layer in self.layers:
                layer.compile()
        self.rng_tracker = rng_tracker
        self.recompute_full = config.recompute_granularity == "full"
        self.recompute_method = config.recompute_method
        self.recompute_num_layers = config.recompute_num_layers


class GPTStage(nn.Module):
    """Pipeline stage ``stage_index`` of ``num_stages`` of a :class:`~megatron.model.gpt.GPTModel`.

    Parameter names are the full model's, with ``decoder.layers`` numbered locally (Megatron's per-stage
    checkpoint layout); :meth:`global_name` maps them back. On the last stage of a pipeline with tied embeddings
    ``word_embeddings.weight`` is a copy of stage 0's (marked ``shared_embedding = True``, Megatron's attribute):
    the two start equal (same seed) and stay equal because their gradients are summed over the embedding group
    (:func:`allreduce_tied_embedding_grads`) before every optimizer step.

    Args:
        config, parallel_state, vocab_size, seed: as for ``GPTModel``.
        stage_index, num_stages: this stage's place in the pipeline (virtual stages count individually).
        layer_range: ``[start, end)`` global indices of its transformer layers.

    Attributes:
        rng_tracker: this stage's streams (:func:`stage_rng_tracker`); checkpoint its ``get_states()``.
    """

    def __init__(
        self, config: TransformerConfig, parallel_state: ParallelState, vocab_size: int, *, stage_index: int,
        num_stages: int, layer_range: tuple[int, int], seed: int = 1234,
    ) -> None:
        super().__init__()
        check_tensor_parallel_divisibility(config, vocab_size, parallel_state.tp_size)
        self.config, self.parallel_state, self.vocab_size = config, parallel_state, vocab_size
        self.stage_index, self.num_stages, self.layer_range = stage_index, num_stages, layer_range
        self.is_first, self.is_last = stage_index == 0, stage_index == num_stages - 1
        self.rng_tracker = stage_rng_tracker(seed, parallel_state, stage_index)
        h, dtype, std = config.hidden_size, config.torch_params_dtype, config.init_method_std
        tied = not config.untie_embeddings_and_output_weights

        self.word_embeddings = self.position_embeddings = self.embedding_dropout = self.output_layer = None
        if self.is_first or (self.is_last and tied):
            self.word_embeddings = VocabParallelEmbedding(
                vocab_size, h, parallel_state=parallel_state, init_method=normal_init(std),
                init_seed=derive_seed(seed, "word_embeddings"), params_dtype=dtype,
            )
            if not self.is_first:
                self.word_embeddings.weight.shared_embedding = True
        if self.is_first:
            if config.position_embedding_type == "learned_absolute":
                self.position_embeddings = nn.Embedding(config.max_position_embeddings, h, dtype=dtype)
                init_master_weight(self.position_embeddings.weight, (config.max_position_embeddings, h), -1,
                                   normal_init(std), derive_seed(seed, "position_embeddings", "weight"),
                                   parallel_state)
            self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.decoder = _StageDecoder(config, parallel_state, layer_range, rng_tracker=self.rng_tracker,
                                     init_seed=derive_seed(seed, "decoder"), final_norm=self.is_last)
        if self.is_last and not tied:
            self.output_layer = ColumnParallelLinear(
                h, vocab_size, parallel_state=parallel_state, init_method=normal_init(std),
                init_seed=derive_seed(seed, "output_layer"), bias=False, params_dtype=dtype,
            )
        self._compiled_loss = build_compiled_loss(config, parallel_state) if self.is_last else None

    @property
    def layers(self) -> nn.ModuleList:
        """This stage's transformer layers (``decoder.layers``, local numbering), the hook point for wrappers."""
        return self.decoder.layers

    def global_name(self, name: str) -> str:
        """The full model's name of parameter/state key ``name``: ``decoder.layers.{j}.`` -> ``{start + j}``."""
        prefix = "decoder.layers."
        if not name.startswith(prefix):
            return name
        local, rest = name[len(prefix):].split(".", 1)
        return f"{prefix}{self.layer_range[0] + int(local)}.{rest}"

    def global_state_dict(self) -> dict[str, torch.Tensor]:
        """``state_dict()`` under the full model's keys: the union over all stages is ``GPTModel.state_dict()``
        (the tied copy of the last stage repeats ``word_embeddings.weight``), whatever the pipeline split."""
        return {self.global_name(k): v for k, v in self.state_dict().items()}

    def load_global_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load this stage's entries from a full-model state dict (keys as ``GPTModel.state_dict()``), e.g. one
        merged from the stages of another pipeline split.

        Raises:
            ValueError: if ``state`` lacks keys this stage needs.
        """
        local_keys = list(self.state_dict())
        missing = [self.global_name(k) for k in local_keys if self.global_name(k) not in state]
        if missing:
            raise ValueError(f"pipeline stage {self.stage_index} needs keys missing from the state dict: {missing}")
        self.load_state_dict({k: state[self.global_name(k)] for k in local_keys})

    def forward(
        self, inputs: torch.Tensor, position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run this stage on one micro-batch.

        Args:
            inputs: stage 0: token ids ``[b, s]``; later stages: the previous stage's hidden states ``[s, b, h]``.
            position_ids: ``[b|1, s]``; None means ``0..s-1``. Every stage needs them for rotary embeddings.
            attention_mask: bool ``[b|1, 1, s, s]``, True = masked; None means causal.
            labels: ``[b, s]`` next-token targets (read by the last stage only).

        Returns:
            Hidden states ``[s, b, h]`` for the next stage; on the last stage the per-token loss ``[b, s]`` fp32
            (identical on all TP ranks), or vocab-parallel logits ``[b, s, V/tp]`` without ``labels``.
        """
        if self.is_first:
            hidden = self._embed(inputs, position_ids)
        else:
            hidden = inputs  # [s, b, h]
        s = hidden.size(0)
        rotary = None
        if self.config.position_embedding_type == "rope":
            if position_ids is None:
                position_ids = torch.arange(s, device=hidden.device).unsqueeze(0)  # [1, s]
            rotary = rotary_embedding(position_ids, self.config.rotary_dim, self.config.rotary_base)
        hidden = self.decoder(hidden, attention_mask=attention_mask, rotary_pos_emb=rotary, is_causal=True)
        if not self.is_last:
            return hidden
        logits = self._logits(hidden.transpose(0, 1).contiguous())  # [b, s, V/tp]
        if labels is None:
            return logits
        return per_token_cross_entropy(logits, labels, self.parallel_state.tp_group, self._compiled_loss)

    def _embed(self, tokens: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
        """``tokens [b, s] -> [s, b, h]``: word (+ learned position) embeddings and embedding dropout."""
        s = tokens.size(1)
        if s > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {s} exceeds max_position_embeddings ({self.config.max_position_embeddings})"
            )
        hidden = self.word_embeddings(tokens)  # [b, s, h]
        if self.position_embeddings is not None:
            if position_ids is None:
                position_ids = torch.arange(s, device=tokens.device).unsqueeze(0)
            hidden = hidden + self.position_embeddings(position_ids)
        return self.embedding_dropout(hidden.transpose(0, 1).contiguous())

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.output_layer is not None:
            return self.output_layer(hidden)
        return tied_vocab_parallel_logits(hidden, self.word_embeddings.weight, self.parallel_state.tp_group)


def build_gpt_stages(
    config: TransformerConfig, pstate: PipelineParallelState, vocab_size: int, *, seed: int = 1234,
    num_layers_per_virtual_stage: int | None = None,
) -> list[GPTStage]:
    """The stages this rank runs, in chunk order (one without interleaving; on CPU, move them to the device).

    Raises:
        ValueError: naming ``num_layers``, ``pipeline_model_parallel_size`` or
            ``num_layers_per_virtual_pipeline_stage`` when the layers do not split evenly.
    """
    ranges = pipeline_layer_ranges(config.num_layers, pstate.pp_size, num_layers_per_virtual_stage)
    chunks = len(ranges) // pstate.pp_size
    return [
        GPTStage(config, pstate, vocab_size, stage_index=k, num_stages=len(ranges), layer_range=ranges[k], seed=seed)
        for k in stage_indices_of_rank(pstate.pp_rank, pstate.pp_size, chunks)
    ]


def allreduce_tied_embedding_grads(stages: list[GPTStage], pstate: PipelineParallelState) -> None:
    """Sum the gradients of the two word-embedding copies (first and last stage) over the embedding group.

    Call after the last backward of a step and before the optimizer (gradient clipping included); a no-op with
    untied embeddings, one stage, or on middle stages. Reduces ``main_grad`` when the optimizer keeps one (our
    :class:`MegatronOptimizer`), else ``.grad``.
    """
    if pstate.embedding_group is None or stages[0].config.untie_embeddings_and_output_weights:
        return
    holder = stages[0] if stages[0].is_first else stages[-1]
    assert holder.word_embeddings is not None, f"stage {holder.stage_index} holds no word embedding copy"
    weight = holder.word_embeddings.weight
    grad = getattr(weight, "main_grad", None)
    if grad is None:
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        grad = weight.grad
    dist.all_reduce(grad, group=pstate.embedding_group)


class StageRandomLTDController(RandomLTDController):
    """A random-LTD controller for the random-LTD layers of one pipeline stage.

    ``layer_ids`` and ``num_layers`` are the whole model's (accounting and checkpoints are unchanged); the stage's
    first random-LTD layer (global ordinal ``first_ordinal``) draws the indices of all of them from this stage's
    token-routing stream, as ordinal 0 does in the unpipelined model, and the stage's layers read their own rows.
    """

    def __init__(
        self, scheduler: RandomLTDScheduler, rng_tracker: RNGStatesTracker, layer_ids: list[int], num_layers: int,
        model_type: ModelType, *, first_ordinal: int, max_cached_draws: int,
    ) -> None:
        super().__init__(scheduler, rng_tracker, layer_ids, num_layers, model_type, max_cached_draws=max_cached_draws)
        self.first_ordinal = first_ordinal

    def layer_indices(self, ordinal: int, hidden: torch.Tensor) -> torch.Tensor:
        if ordinal == self.first_ordinal:
            super().layer_indices(0, hidden)  # draws all rows and caches them for this stage's later layers
            return self.last_indices[ordinal]
        return super().layer_indices(ordinal, hidden)


def wrap_stage_layers(
    stages: list[GPTStage], layer_ids: list[int], scheduler: RandomLTDScheduler, *,
    model_type: ModelType = "decoder", max_cached_draws: int = 1024,
) -> list[StageRandomLTDController]:
    """Wrap the random-LTD layers (global ``layer_ids``) that live in ``stages`` with :class:`RandomLTDLayer`.

    One controller per stage holding such layers, all sharing ``scheduler``: call ``set_step`` on each every step,
    and do the layer-token accounting on the scheduler itself (a rank whose stages hold no random-LTD layer gets no
    controller, yet its token-based LR schedule needs the same counts). ``max_cached_draws`` bounds the draws kept for recomputation: a schedule may run
    every micro-batch's forward before the first backward (GPipe), so it must be at least the micro-batch count.

    Raises:
        ValueError: ids or layer count not those of the scheduler config (``resolve_layer_ids``).
    """
    num_layers = stages[0].config.num_layers
    ids = resolve_layer_ids(layer_ids, num_layers, scheduler.config)  # the one layer-id check (config side)
    controllers = []
    for stage in stages:
        start, end = stage.layer_range
        mine = [(ordinal, i) for ordinal, i in enumerate(ids) if start <= i < end]
        if not mine:
            continue
        controller = StageRandomLTDController(scheduler, stage.rng_tracker, ids, num_layers, model_type,
                                              first_ordinal=mine[0][0], max_cached_draws=max_cached_draws)
        for ordinal, i in mine:
            local = i - start
            if isinstance(stage.layers[local], RandomLTDLayer):
                raise ValueError(f"random-LTD layer {i} is already wrapped; wrap each stage once")
            stage.layers[local] = RandomLTDLayer(stage.layers[local], controller, ordinal)
        controllers.append(controller)
    return controllers
