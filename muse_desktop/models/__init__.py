"""Model files: downloads from the hub, Get MUsE, the random-weight demo models, tokenizer checks."""
