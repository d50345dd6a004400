"""Tokenizers: one module per family (``bpe``, ``wordpiece``, ``sentencepiece``, ``hf``), ``config`` and ``build``."""
