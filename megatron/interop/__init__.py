"""Interoperability with other ecosystems: conversion between our training checkpoints and Hugging Face
``transformers`` directories (:mod:`megatron.interop.huggingface`), and re-splitting a checkpoint for another
tensor-parallel size (:func:`megatron.interop.checkpoint.reshard_megatron`).

This room sits above ``model`` and ``training``: it reads and writes checkpoints through
``megatron.training.checkpointing`` and builds models from ``megatron.model``. Only ``tools/`` and tests import
it. ``transformers`` is imported lazily, inside the functions that need it.
"""

from megatron.interop.checkpoint import reshard_megatron
from megatron.interop.huggingface import hf_to_megatron, megatron_to_hf, pretrain_flags

__all__ = ["megatron_to_hf", "hf_to_megatron", "reshard_megatron", "pretrain_flags"]
