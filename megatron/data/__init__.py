"""Room 1: bytes on disk to training samples (tokenizers, the .bin/.idx format, GPT/BERT datasets, blending, samplers)."""
