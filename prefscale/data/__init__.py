"""Stage 1, data: the embedded demo domain and the prompt pool (shards per iteration, held-out split)."""
