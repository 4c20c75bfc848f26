"""`prefscale bench candidates`: the backend's decoding loop against `model.generate` on a recipe's real policy.

A tiny pretrained Llama stands in for SmolLM2 (a recipe with `policy.source: pretrained` pointing at it, the
smollm2-lumora recipe's sampling settings); the real run is in BENCHMARKS.md.
"""

from __future__ import annotations

import json

import yaml

from prefscale.cli import main
from prefscale.compute import resolve_compute
from prefscale.config.policy import EmbeddedModel
from prefscale.config.recipe import resolve_recipe_path
from prefscale.data import domain
from prefscale.policy.tiny import pretrain_tiny_llama


def _recipe(tmp_path) -> str:
    model = tmp_path / "tiny-model"
    corpus = domain.make_corpus(domain.make_prompt_pool(30, 1), 2, 2)
    cfg = EmbeddedModel(
        vocab_size=350,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        train_steps=5,
        batch_size=8,
    )
    pretrain_tiny_llama(corpus, cfg, model, resolve_compute("cpu"), seed=0)
    data = yaml.safe_load(resolve_recipe_path("smollm2-lumora").read_text())
    data["policy"] = {
        "source": "pretrained",
        "model": str(model),
        "system_prompt": data["policy"]["system_prompt"],
    }
    data["generation"]["max_new_tokens"] = 12
    path = tmp_path / "stand-in.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_bench_candidates_json_same_texts_both_ways(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    argv = ["bench", "candidates", "--recipe", recipe, "--prompts", "3", "--samples", "2"]
    rc = main([*argv, "--work-dir", str(tmp_path / "work"), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert out["same_texts"] is True
    assert out["prompts"] == 3 and out["samples"] == 2 and out["batch_size"] == 6
    assert (
        out["tokens"] > 0 and out["baseline_tokens_per_second"] > 0 and out["prefscale_tokens_per_second"] > 0
    )
    assert out["dtype"] == "float32" and out["peak_tflops"] > 0
    fast = out["tokens"] / out["prefscale_seconds"]
    assert out["fraction_of_peak"] == round(2 * out["parameters"] * fast / (out["peak_tflops"] * 1e12), 3)


def test_bench_candidates_refuses_the_embedded_policy(tmp_path, capsys):
    rc = main(["bench", "candidates", "--recipe", "embedded", "--work-dir", str(tmp_path), "--json"])
    assert rc == 2
    assert "uses the embedded policy" in capsys.readouterr().err
