"""Stage 4, rewards: reward sources (one registry), their ensemble, the weak-supervision reward model, PairRM."""
