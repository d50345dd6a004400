"""Downstream evaluation and fine-tuning (Megatron's ``tasks/``): zero-/few-shot GPT evaluation (LAMBADA,
WikiText perplexity, multiple choice), BERT fine-tuning on GLUE and RACE. The room above ``training``: it composes
the model, data and training rooms; ``tasks/main.py`` is its command line.
"""
