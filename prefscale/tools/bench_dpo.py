"""`prefscale bench dpo`: DPO training throughput (trained tokens/s) and model FLOPs utilisation (MFU).

One TRL `DPOTrainer` built exactly as `prefscale.training.dpo` builds it (`build_dpo_config`), on a model with random
weights and synthetic pairs whose sequences all have exactly `seq_len` tokens, so every step trains the same
`2 x batch_pairs x seq_len` tokens (chosen and rejected). The first `--warmup` steps are discarded; each timed
step is bracketed by `torch.cuda.synchronize()` on a GPU.

FLOPs counted per trained token (N = parameters in matrix multiplies: every linear layer including the LM head
and the LoRA adapters, not the embedding lookup; L layers, d model width, T sequence length; attention scores
and values at the full T, no causal discount, as in PaLM's MFU):

- policy forward + backward: 6·N + 12·L·d·T (the usual 6N convention, although LoRA skips the frozen weights'
  gradients, about 2N of it);
- reference forward: 2·N + 4·L·d·T, unless `--precompute-ref` (then it runs before training, untimed);
- recomputation under gradient checkpointing: 2·N + 4·L·d·T, counted in HFU only.

MFU = (policy + reference) FLOPs/s over the peak; HFU adds the recomputation. The peak is `--peak-tflops`, or
else measured on the spot: the best of a few large matrix multiplies in the training dtype (fp32 on CPU, bf16
on a GPU), so MFU reads as "share of what this device's matmul reaches", not of a datasheet number.

Presets: `tiny` (the embedded recipe's 0.8 M-parameter Llama shape, CPU, fp32) and `mistral-7b` (Mistral-7B's
shape: 32 layers, d 4096, GQA 32/8 heads, MLP 14336, vocab 32000; bf16, LoRA r=16 on all linear layers,
8 pairs x 2 x 1024 tokens per step, gradient checkpointing), which needs a GPU with about 40 GB.

Wire-up: `add_parser(benches)` adds the `dpo` sub-command to `prefscale bench`; `python -m prefscale.tools.bench_dpo`
runs it stand-alone with the same flags.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefscale.compute import resolve_compute
from prefscale.config.training import DPOSettings
from prefscale.report import print_bench_result
from prefscale.training.dpo import build_dpo_config

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "arch": "llama",
        "hidden_size": 128,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 4,
        "intermediate_size": 256,
        "vocab_size": 1024,
        "batch_pairs": 8,
        "seq_len": 128,
        "prompt_len": 32,
        "lora_r": 16,
        "gradient_checkpointing": False,
        "device": "cpu",
        "steps": 5,
        "warmup": 1,
    },
    "mistral-7b": {
        "arch": "mistral",
        "hidden_size": 4096,
        "num_layers": 32,
        "num_heads": 32,
        "num_kv_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 32000,
        "batch_pairs": 8,
        "seq_len": 1024,
        "prompt_len": 128,
        "lora_r": 16,
        "gradient_checkpointing": True,
        "device": "cuda",
        "steps": 5,
        "warmup": 2,
    },
}


@dataclass
class DPOBenchResult:
    preset: str
    device: str
    dtype: str
    shape: dict[str, Any]
    lora_r: int | None
    gradient_checkpointing: bool
    precompute_ref: bool
    params_total: int
    params_matmul: int  # N: linear layers + LM head (+ LoRA)
    params_trainable: int
    tokens_per_step: int
    step_seconds: list[float]  # timed steps only
    losses: list[float]
    flops_per_token: dict[str, float]
    peak_tflops: float
    peak_source: str
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        return sorted(self.step_seconds)[len(self.step_seconds) // 2] if self.step_seconds else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.seconds_per_step

    def _tflops(self, keys: tuple[str, ...]) -> float:
        return sum(self.flops_per_token[k] for k in keys) * self.tokens_per_second / 1e12

    @property
    def model_tflops(self) -> float:
        return self._tflops(("policy_fwd_bwd", "reference_fwd"))

    @property
    def mfu(self) -> float:
        return self.model_tflops / self.peak_tflops

    @property
    def mfu_policy_only(self) -> float:
        return self._tflops(("policy_fwd_bwd",)) / self.peak_tflops

    @property
    def hfu(self) -> float:
        return self._tflops(("policy_fwd_bwd", "reference_fwd", "recompute")) / self.peak_tflops

    @property
    def ok(self) -> bool:
        import math

        return bool(self.step_seconds) and all(math.isfinite(x) for x in self.losses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": "dpo",
            **asdict(self),
            "seconds_per_step": self.seconds_per_step,
            "tokens_per_second": self.tokens_per_second,
            "model_tflops": self.model_tflops,
            "mfu": self.mfu,
            "mfu_policy_only": self.mfu_policy_only,
            "hfu": self.hfu,
            "ok": self.ok,
        }

    def summary_lines(self) -> list[str]:
        s = self.shape
        lora = f"LoRA r={self.lora_r} all-linear" if self.lora_r else "full fine-tune"
        ref = "precomputed" if self.precompute_ref else "forward each step"
        f = self.flops_per_token
        return [
            f"bench dpo [{self.preset}] on {self.device} ({self.dtype}): {s['num_layers']} layers, d={s['hidden_size']}, "
            f"heads {s['num_heads']}/{s['num_kv_heads']}, MLP {s['intermediate_size']}, vocab {s['vocab_size']}; "
            f"{self.params_total / 1e6:.2f} M parameters ({self.params_matmul / 1e6:.2f} M in matmuls, "
            f"{self.params_trainable / 1e6:.3f} M trainable); {lora}; reference {ref}; "
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}",
            f"step: 2 x {s['batch_pairs']} pairs x {s['seq_len']} tokens = {self.tokens_per_step} tokens; "
            f"median of {len(self.step_seconds)} timed steps: {self.seconds_per_step * 1000:.1f} ms",
            f"throughput: {self.tokens_per_second:,.0f} trained tokens/s",
            f"FLOPs per token: policy fwd+bwd {f['policy_fwd_bwd']:.3g} (6N+12LdT), reference fwd "
            f"{f['reference_fwd']:.3g} (2N+4LdT), recompute {f['recompute']:.3g}",
            f"model FLOP/s: {self.model_tflops * 1000:.2f} GFLOP/s; peak {self.peak_tflops * 1000:.1f} GFLOP/s "
            f"({self.peak_source})",
            f"MFU {self.mfu:.1%} (policy only {self.mfu_policy_only:.1%}); HFU {self.hfu:.1%}",
        ]


def flops_per_token(
    n_matmul: int, layers: int, hidden: int, seq_len: int, *, precompute_ref: bool, ckpt: bool
) -> dict:
    fwd = 2 * n_matmul + 4 * layers * hidden * seq_len
    return {
        "policy_fwd_bwd": 3.0 * fwd,
        "reference_fwd": 0.0 if precompute_ref else float(fwd),
        "recompute": float(fwd) if ckpt else 0.0,
    }


def measure_peak_tflops(device: str, dtype: Any, size: int | None = None, repeats: int = 5) -> float:
    """Best matmul throughput of `size`² x `size`² products in `dtype` on `device` (TFLOP/s)."""
    import torch

    size = size or (8192 if device.startswith("cuda") else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * size**3 / best / 1e12


def _tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def _pairs(n: int, prompt_len: int, seq_len: int, vocab_size: int, seed: int) -> list[dict[str, str]]:
    """Text pairs that tokenize to exactly `seq_len` tokens each (prompt + completion + EOS)."""
    import random

    rng = random.Random(seed)
    completion = seq_len - prompt_len - 1

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(2, vocab_size)}" for _ in range(k))

    return [
        {"prompt": words(prompt_len) + " ", "chosen": words(completion), "rejected": words(completion)}
        for _ in range(n)
    ]


def _model(shape: dict[str, Any], device: str, dtype: Any, seed: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

    kw = {
        "vocab_size": shape["vocab_size"],
        "hidden_size": shape["hidden_size"],
        "intermediate_size": shape["intermediate_size"],
        "num_hidden_layers": shape["num_layers"],
        "num_attention_heads": shape["num_heads"],
        "num_key_value_heads": shape["num_kv_heads"],
        "max_position_embeddings": max(4096, shape["seq_len"]),
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 1,
    }
    cfg = MistralConfig(**kw, sliding_window=None) if shape["arch"] == "mistral" else LlamaConfig(**kw)
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def bench_dpo(
    preset: str = "tiny",
    *,
    device: str | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    batch_pairs: int | None = None,
    seq_len: int | None = None,
    prompt_len: int | None = None,
    lora_r: int | None = -1,
    gradient_checkpointing: bool | None = None,
    precompute_ref: bool = False,
    peak_tflops: float | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: Any = None,
) -> DPOBenchResult:
    """Time `steps` DPO steps (after `warmup`) of the preset's shape; `lora_r=None` is full fine-tuning."""
    import tempfile

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    say = progress or (lambda _m: None)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {sorted(PRESETS)}")
    p = dict(PRESETS[preset])
    for k, v in {"batch_pairs": batch_pairs, "seq_len": seq_len, "prompt_len": prompt_len}.items():
        if v is not None:
            p[k] = v
    if lora_r != -1:
        p["lora_r"] = lora_r
    if gradient_checkpointing is not None:
        p["gradient_checkpointing"] = gradient_checkpointing
    steps = steps or p["steps"]
    warmup = p["warmup"] if warmup is None else warmup
    if p["prompt_len"] + 2 > p["seq_len"]:
        raise ValueError(f"prompt_len {p['prompt_len']} leaves no completion in seq_len {p['seq_len']}")
    dev = device or p["device"]
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"bench dpo --preset {preset} runs on {dev}, but CUDA is not available here "
            "(the mistral-7b shape needs a GPU with about 40 GB; --device cpu forces it, very slowly)"
        )
    compute = resolve_compute(dev, threads)
    for name in ("transformers", "trl", "peft", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)

    say(f"building a random-weight {preset} model on {compute.device} ({compute.dtype})")
    model = _model(p, compute.device, compute.dtype, seed)
    tokenizer = _tokenizer(p["vocab_size"])
    total = warmup + steps
    data = Dataset.from_list(
        _pairs(total * p["batch_pairs"], p["prompt_len"], p["seq_len"], p["vocab_size"], seed)
    )
    settings = DPOSettings(
        learning_rate=1e-5,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        num_train_epochs=1,
        per_device_train_batch_size=p["batch_pairs"],
        max_length=p["seq_len"],
        gradient_checkpointing=p["gradient_checkpointing"],
        precompute_ref_log_probs=precompute_ref,
        save_steps=None,
        lora=None if p["lora_r"] is None else {"r": p["lora_r"], "alpha": 2 * p["lora_r"]},
    )
    timings: list[float] = []
    sync = torch.cuda.synchronize if compute.device.startswith("cuda") else (lambda: None)

    class StepTimer(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            timings.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as work:
        args = build_dpo_config(settings, Path(work), compute, seed)
        args.max_steps = total
        peft_config = None
        if settings.lora is not None:
            peft_config = LoraConfig(
                r=settings.lora.r,
                lora_alpha=settings.lora.alpha,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
        ref_model = None
        if peft_config is None and not precompute_ref:  # full fine-tune: a frozen copy is the reference
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[StepTimer()],
        )
        trainer.remove_callback(PrinterCallback)
        say(f"training {warmup} warm-up + {steps} timed steps")
        trainer.train()
        losses = [float(r["loss"]) for r in trainer.state.log_history if "loss" in r]
        trained = trainer.model
        n_total = sum(x.numel() for x in trained.parameters())
        n_trainable = sum(x.numel() for x in trained.parameters() if x.requires_grad)
        n_matmul = sum(
            m.weight.numel()
            for m in trained.modules()
            if isinstance(m, torch.nn.Linear) and m.weight is not None
        )
    if peak_tflops is None:
        say("measuring the matmul peak")
        peak, source = measure_peak_tflops(compute.device, compute.dtype), f"measured {compute.dtype} matmul"
    else:
        peak, source = float(peak_tflops), "--peak-tflops"
    tokens = 2 * p["batch_pairs"] * p["seq_len"]
    return DPOBenchResult(
        preset=preset,
        device=compute.describe(),
        dtype=str(compute.dtype).removeprefix("torch."),
        shape={
            k: p[k]
            for k in (
                "arch",
                "hidden_size",
                "num_layers",
                "num_heads",
                "num_kv_heads",
                "intermediate_size",
                "vocab_size",
                "batch_pairs",
                "seq_len",
                "prompt_len",
            )
        },
        lora_r=p["lora_r"],
        gradient_checkpointing=p["gradient_checkpointing"],
        precompute_ref=precompute_ref,
        params_total=n_total,
        params_matmul=n_matmul,
        params_trainable=n_trainable,
        tokens_per_step=tokens,
        step_seconds=timings[warmup:],
        losses=losses,
        flops_per_token=flops_per_token(
            n_matmul,
            p["num_layers"],
            p["hidden_size"],
            p["seq_len"],
            precompute_ref=precompute_ref,
            ckpt=p["gradient_checkpointing"],
        ),
        peak_tflops=peak,
        peak_source=source,
        machine={
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            **{pkg: version(pkg) for pkg in ("torch", "transformers", "trl", "peft")},
        },
    )


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    try:
        result = _bench_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return print_bench_result(result, args.json)


def _bench_from_args(args: argparse.Namespace) -> DPOBenchResult:
    return bench_dpo(
        args.preset,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        batch_pairs=args.batch_pairs,
        seq_len=args.seq_len,
        prompt_len=args.prompt_len,
        lora_r=None if args.full else (args.lora_r if args.lora_r is not None else -1),
        gradient_checkpointing=args.gradient_checkpointing,
        precompute_ref=args.precompute_ref,
        peak_tflops=args.peak_tflops,
        threads=args.threads,
        seed=args.seed,
        progress=_progress,
    )


def add_parser(benches: Any) -> argparse.ArgumentParser:
    """Add `dpo` to the `prefscale bench` sub-commands (`benches` is its add_subparsers() object)."""
    p = benches.add_parser(
        "dpo",
        help="DPO training throughput (trained tokens/s) and MFU on a random-weight model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="tiny", help="model shape (default tiny, CPU)"
    )
    p.add_argument("--device", help="cpu | cuda[:i] (default: the preset's)")
    p.add_argument("--steps", type=int, help="timed steps (default: the preset's)")
    p.add_argument("--warmup", type=int, help="discarded steps first (default: the preset's)")
    p.add_argument("--batch-pairs", type=int, help="pairs per step (default: the preset's)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: the preset's)")
    p.add_argument("--prompt-len", type=int, help="prompt tokens per sequence (default: the preset's)")
    p.add_argument("--lora-r", type=int, help="LoRA rank on all linear layers (default: the preset's, 16)")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ckpt = p.add_mutually_exclusive_group()
    ckpt.add_argument(
        "--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", default=None
    )
    ckpt.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--precompute-ref", action="store_true", help="precompute reference log-probs (untimed)")
    p.add_argument("--peak-tflops", type=float, help="peak for MFU (default: measured matmul peak)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, or PREFSCALE_TORCH_THREADS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=_run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefscale bench")
    add_parser(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(["dpo", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
