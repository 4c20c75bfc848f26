"""Stage 5, pairs: chosen/rejected selection strategies and their checks."""
