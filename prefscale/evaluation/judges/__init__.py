"""Pairwise judges in alpaca_eval's format: one module per judge, and a registry."""
