"""Library code of the offline tools: JSONL -> ``.bin/.idx`` (``preprocess``), tokenizer training, corpora."""
