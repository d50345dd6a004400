"""Room 3b: transformer configs and the GPT/BERT models built from parallel layers."""
