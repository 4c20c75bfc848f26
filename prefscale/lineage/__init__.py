"""Lineage: MLflow runs and registered models, evaluation runs, audits of a checkpoint back to its inputs."""
