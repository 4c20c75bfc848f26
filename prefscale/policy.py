"""The base policy: a tiny Llama trained offline on the demo corpus, a pretrained model resolved by id/path, or
a GGUF checkpoint dequantized into a trainable model folder.

Downstream code only ever calls `from_pretrained` on the folder this module writes.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from prefscale.compute import Compute
from prefscale.recipe import EmbeddedModel, is_local_path

PAD, BOS, END, USER, ASSISTANT = "<|pad|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, END, USER, ASSISTANT]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the project's chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def chat_text(tokenizer: Any, prompt: str, response: str | None = None) -> str:
    """The chat-formatted text of a prompt (with the generation prompt) or of a whole exchange."""
    messages = [{"role": "user", "content": prompt}]
    if response is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(messages, tokenize=False)


@dataclass(frozen=True)
class PretrainReport:
    steps: int
    first_loss: float
    final_loss: float
    seconds: float
    n_parameters: int
    n_examples: int


def pretrain_tiny_llama(
    corpus: pl.DataFrame,
    cfg: EmbeddedModel,
    out_dir: Path,
    compute: Compute,
    seed: int,
) -> PretrainReport:
    """Train tokenizer + `LlamaForCausalLM` on `corpus` (prompt/response) and save both to `out_dir`."""
    if corpus.height == 0:
        raise ValueError("pre-training corpus is empty")
    torch.manual_seed(seed)
    random.seed(seed)
    texts_for_bpe = list(corpus["prompt"]) + list(corpus["response"])
    tokenizer = train_tokenizer(texts_for_bpe, cfg.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(compute.device)
    texts = [chat_text(tokenizer, p, r) for p, r in zip(corpus["prompt"], corpus["response"], strict=True)]
    enc = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=cfg.max_position_embeddings)
    ids = enc["input_ids"]
    # Sort by length into buckets so batches carry little padding; shuffle the batches.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, cfg.train_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, cfg.train_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(seed)
    model.train()
    t0 = time.perf_counter()
    first = last = float("nan")
    for step in range(cfg.train_steps):
        batch = batches[rng.randrange(len(batches))]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(input_ids)
        for row, i in enumerate(batch):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            attn[row, : len(ids[i])] = 1
        labels = input_ids.masked_fill(attn == 0, -100)
        out = model(
            input_ids=input_ids.to(compute.device),
            attention_mask=attn.to(compute.device),
            labels=labels.to(compute.device),
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        last = float(out.loss.detach())
        if step == 0:
            first = last
    seconds = time.perf_counter() - t0
    model.eval()
    save_policy(model, tokenizer, out_dir)
    return PretrainReport(
        steps=cfg.train_steps,
        first_loss=first,
        final_loss=last,
        seconds=seconds,
        n_parameters=sum(p.numel() for p in model.parameters()),
        n_examples=len(ids),
    )


def save_policy(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save a model folder (safetensors + tokenizer + generation config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def load_policy(model_dir: str | Path, compute: Compute, revision: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a model folder or hub id, in the compute's dtype, left-padded for generation."""
    ref = str(model_dir)
    if isinstance(model_dir, Path) or is_local_path(ref):
        ref = str(Path(ref).expanduser())
        if not Path(ref).is_dir():
            raise FileNotFoundError(f"model folder not found: {ref}")
        if not (Path(ref) / "config.json").is_file():
            raise FileNotFoundError(f"not a model folder (no config.json): {ref}")
    tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(ref, revision=revision, dtype=compute.dtype)
    model.to(compute.device)
    model.eval()
    return model, tokenizer


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: the identity of a saved model."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class GGUFConversion:
    """What `convert_gguf` made: the source file's hash, the architecture and size, and how long it took."""

    gguf_file: str
    gguf_sha256: str
    model_type: str
    n_parameters: int
    vocab_size: int
    has_chat_template: bool
    seconds: float


def convert_gguf(gguf_path: str | Path, out_dir: Path) -> GGUFConversion:
    """Dequantize a GGUF checkpoint into a float32 model folder that trains and saves like any other.

    `from_pretrained(..., gguf_file=...)` dequantizes the tensors, but the model it returns carries a GGUF
    `quantization_config` and cannot be saved or trained as loaded; its weights are copied into a fresh model of
    the same architecture built from the config without it. The tokenizer (with its chat template) comes from
    the same file. Writes to `out_dir` (the caller publishes it atomically).
    """
    from prefscale.storage import file_sha256

    src = Path(gguf_path).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"gguf file not found: {src}")
    t0 = time.perf_counter()
    digest = file_sha256(src)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(src.parent), gguf_file=src.name, dtype=torch.float32
        )
    except ImportError as e:
        raise RuntimeError(f"reading {src} needs the `gguf` package (pip install gguf): {e}") from e
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side's state dict; anything else is a real mismatch.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(
            f"gguf {src.name}: weights do not match the architecture: {missing=} {unexpected=}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    save_policy(model, tokenizer, out_dir)
    return GGUFConversion(
        gguf_file=src.name,
        gguf_sha256=digest,
        model_type=str(config.model_type),
        n_parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=int(config.vocab_size),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        seconds=time.perf_counter() - t0,
    )
