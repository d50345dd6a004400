"""Data routing: random layerwise token dropping (random-LTD): the keep schedule and the layer wrapper.

``wrap_layers(model.layers, layer_ids, scheduler, rng_tracker)`` returns the controller the training loop drives; the
settings are ``data_efficiency.config.RandomLTDConfig`` (the JSON block), taken by ``RandomLTDScheduler``.
"""

from megatron.data_efficiency.routing.random_ltd import (
    RandomLTDController,
    RandomLTDLayer,
    default_layer_ids,
    gather_rotary_pos_emb,
    wrap_layers,
)
from megatron.data_efficiency.routing.scheduler import RandomLTDScheduler, kept_tokens_fixed_linear

__all__ = [
    "RandomLTDController",
    "RandomLTDLayer",
    "RandomLTDScheduler",
    "default_layer_ids",
    "gather_rotary_pos_emb",
    "kept_tokens_fixed_linear",
    "wrap_layers",
]
