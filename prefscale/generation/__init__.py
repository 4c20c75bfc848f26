"""Stage 2, candidates: generation backends (a protocol, one module per backend, a registry)."""
