"""Stage 7, evaluation: the SME rubric, held-out evaluation, AlpacaEval metrics, best-of-N, judges."""
