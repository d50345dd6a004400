"""Room 1: bytes on disk to training samples: the .bin/.idx format, GPT/BERT datasets, blending, samplers; with
``tokenizers/`` below the datasets and ``preprocessing/`` (the offline tools' library code) above them."""
