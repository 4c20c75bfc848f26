"""The embedded base policy: a byte-level BPE tokenizer and a tiny Llama trained offline on the demo corpus."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from prefscale.compute import Compute
from prefscale.config.policy import EmbeddedModel
from prefscale.policy.chat import BOS, CHAT_TEMPLATE, END, PAD, SPECIAL_TOKENS, chat_text
from prefscale.policy.io import save_policy


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
