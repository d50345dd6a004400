"""Megatron-DE: Megatron-style GPT/BERT pretraining with a composable data efficiency library.

Rooms (lower never imports higher): ``config``/``logging`` <- ``data``, ``parallel``, ``kernels`` <-
``data_efficiency``, ``model`` <- ``training``. ``tests/test_import_arrows.py`` enforces the arrows.
"""

__version__ = "0.1.0"
