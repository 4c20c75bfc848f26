"""Tools over the pipeline's stages: `prefscale score`, the pair ablation, benchmarks."""
