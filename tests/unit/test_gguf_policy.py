"""GGUF -> trainable model folder (`prefscale.policy.convert_gguf`), on the real SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

import json

import pytest
import torch

from prefscale.policy.chat import chat_text
from prefscale.policy.gguf import convert_gguf
from prefscale.policy.io import load_policy
from prefscale.storage import file_sha256

pytestmark = pytest.mark.slow


def test_converted_folder_loads_and_generates(smollm2_policy, smollm2_gguf, cpu):
    folder = smollm2_policy.folder
    facts = smollm2_policy.facts
    assert facts["source"] == "gguf"
    assert facts["gguf_sha256"] == file_sha256(smollm2_gguf)
    assert facts["model_type"] == "llama"
    assert 130e6 < facts["n_parameters"] < 140e6  # SmolLM2-135M
    assert facts["vocab_size"] == 49152
    assert facts["has_chat_template"]

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float32 model, trainable and savable
    assert config["dtype"] == "float32"

    model, tok = load_policy(folder, cpu)  # AutoModelForCausalLM / AutoTokenizer
    assert type(model).__name__ == "LlamaForCausalLM"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    text = chat_text(tok, "What is the capital of France?")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    enc = tok([text], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer  # the dequantized weights are the real instruct model's


def test_converted_model_trains(smollm2_policy, cpu):
    model, tok = load_policy(smollm2_policy.folder, cpu)
    model.train()
    enc = tok(["Hello there, how are you?"], return_tensors="pt")
    loss = model(**enc, labels=enc["input_ids"]).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads[:5])


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gguf file not found"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_build_base_policy_makes_the_assets_folder(smollm2_policy, tmp_path, cpu):
    """The pair ablation builds its base with `build_base_policy`, as the asset does: the same converted weights
    and record for a `gguf` recipe (it used to send a gguf policy to `from_pretrained("")`)."""
    from prefscale.config.recipe import load_recipe
    from prefscale.policy.build import POLICY_FILE, build_base_policy, plan_base_policy

    recipe = load_recipe("smollm2")
    plan = plan_base_policy(recipe.policy, recipe.seed)
    assert plan.source == "gguf" and plan.params["gguf_sha256"] == smollm2_policy.facts["gguf_sha256"]
    report = build_base_policy(recipe.policy, recipe.seed, tmp_path / "base", cpu, plan)
    assert report.facts["model_type"] == "llama"
    assert json.loads((tmp_path / "base" / POLICY_FILE).read_text()) == smollm2_policy.facts
    for name in ("model.safetensors", "tokenizer.json"):
        assert file_sha256(tmp_path / "base" / name) == file_sha256(smollm2_policy.folder / name)
