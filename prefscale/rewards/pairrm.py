"""PairRM rewards through llm-blender, made to run under transformers 5.

llm-blender 0.0.2 (its last release, 2024) was written for transformers 4. Two things it uses are gone in 5:

- `transformers.utils.hub.TRANSFORMERS_CACHE`, imported at module level by `llm_blender.blender` (so
  `import llm_blender` fails) and used as the default `cache_dir` of `Blender.loadranker`;
- the tokenizer method `batch_encode_plus`, called by the ranker's collator (`pair_ranker/collator.py`,
  `encode_texts`) for every batch.

`ensure_llm_blender_compat()` (run when this module is imported, before anything imports `llm_blender`) sets the
first to `huggingface_hub.constants.HF_HUB_CACHE` and adds the second to `PreTrainedTokenizerBase`, the base of
every tokenizer class, as a call of the tokenizer's `__call__`. Each is set only where it is missing, so under
transformers 4 nothing changes. Import `llm_blender` only after importing this module.

What PairRM computes (llm-blender `CrossCompareReranker._full_predict`, used by `Blender.rank`): for one prompt and
N candidates it runs one forward pass per ordered pair (i, j), i != j, on `<source> prompt <cand1> c_i <cand2> c_j`,
and stores `M[i, j] = head(source, c_i) - head(source, c_j)`: a logit, > 0 when c_i (shown first) beats c_j.
The diagonal is never computed and stays 0. `M` is *not* antisymmetric: `M[j, i]` comes from the other order
and carries the position bias. The order-balanced logit is `M[i, j] - M[j, i]` (what `Blender.compare` returns
with its default mode `"[A,B]+[B,A]"`), so `sigmoid(M - M.T)` is a win-probability matrix with
`P + P.T = 1` and 0.5 on the diagonal. llm-blender's rank score (`get_scores_from_cmps`, policy "max_logits") is
`s_i = mean_j (M[i, j] - M[j, i])`, the mean over all N columns (the zero diagonal included).

A ranker folder in llm-blender's own format (what `Blender.loadranker(folder)` reads):

    config.json        a `RankerConfig` (not a transformers config): ranker_type "pairranker", model_type
                       "deberta", model_name (the backbone: hub id or folder), source_maxlength,
                       candidate_maxlength, n_tasks, drop_out, fp16, ...
    model.safetensors  (or pytorch_model.bin) the state dict of the whole `CrossCompareReranker`:
                       `pretrained_model.*` (the DeBERTa backbone) and `head_layer.*`

`loadranker` builds the tokenizer (`AutoTokenizer`) and the backbone (`AutoModel`) from `model_name`, lets the
collator add the four prefix tokens (`<|source|>`, `<|candidate1|>`, `<|candidate2|>`, `<|candidate|>`), resizes the
embeddings to the new vocabulary, then loads the checkpoint over the whole ranker. The real PairRM is
`llm-blender/PairRM` (model_name `microsoft/deberta-v3-large`: two hub snapshots). `build_tiny_ranker` writes
the same layout with a tiny random DeBERTa-v2 backbone in `backbone/`, named by a path relative to the folder so
the folder can be moved (`load_ranker` resolves it; llm-blender alone would resolve it against the working
directory).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefscale.progress import Progress
from prefscale.rewards.base import REWARD_SCHEMA

PAIRRM_SOURCE = "pairrm"
PAIRRM_REWARD_SCHEMA = {
    **REWARD_SCHEMA,
    "matrix_index": pl.Int32,  # this candidate's row/column in its prompt's matrix (candidates by sample_idx)
    "pairrm_logits": pl.List(pl.Float64),  # row `matrix_index` of the prompt's N×N matrix M
}

BACKBONE_DIR = "backbone"
_CLS, _SEP, _PAD, _UNK, _MASK = "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"


# --- the transformers 5 shim --------------------------------------------------------------------------------


def _batch_encode_plus(self: Any, batch_text_or_text_pairs: Any, *args: Any, **kwargs: Any) -> Any:
    """transformers 4's `batch_encode_plus`: a batch of texts, or of (text, pair) tuples, through `__call__`."""
    batch = list(batch_text_or_text_pairs)
    if batch and isinstance(batch[0], tuple) and not kwargs.get("is_split_into_words"):
        texts, pairs = zip(*batch, strict=True)
        return self(list(texts), list(pairs), *args, **kwargs)
    return self(batch, *args, **kwargs)


def ensure_llm_blender_compat() -> list[str]:
    """Restore what llm-blender needs from transformers 4; idempotent. Returns what it patched this call."""
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import constants
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    patched = []
    if not hasattr(transformers_hub, "TRANSFORMERS_CACHE"):
        transformers_hub.TRANSFORMERS_CACHE = constants.HF_HUB_CACHE
        patched.append("transformers.utils.hub.TRANSFORMERS_CACHE")
    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):
        PreTrainedTokenizerBase.batch_encode_plus = _batch_encode_plus
        patched.append("PreTrainedTokenizerBase.batch_encode_plus")
    return patched


PATCHED_ON_IMPORT = ensure_llm_blender_compat()  # under transformers 5.23: both of the above


# --- loading and scoring ------------------------------------------------------------------------------------


def load_ranker(path_or_hub_id: str | Path, device: str = "cpu", **ranker_kwargs: Any) -> Any:
    """A `llm_blender.Blender` with its ranker loaded through `Blender.loadranker` (progress bars off).

    A local folder whose `config.json` names its backbone by a relative path (as `build_tiny_ranker` writes)
    gets that path resolved against the folder. `ranker_kwargs` override `RankerConfig` fields.
    """
    ensure_llm_blender_compat()
    import llm_blender

    ref = str(path_or_hub_id)
    folder = Path(ref).expanduser()
    if folder.is_dir():
        ref = str(folder)
        config_file = folder / "config.json"
        if "model_name" not in ranker_kwargs and config_file.is_file():
            model_name = json.loads(config_file.read_text()).get("model_name")
            if model_name and not Path(model_name).is_absolute() and (folder / model_name).exists():
                ranker_kwargs["model_name"] = str((folder / model_name).resolve())
    with warnings.catch_warnings():
        # dataclasses_json warns for every RankerConfig field left at its None default
        warnings.filterwarnings(
            "ignore", message=".*non-optional type.*RankerConfig", category=RuntimeWarning
        )
        blender = llm_blender.Blender(llm_blender.BlenderConfig(device=device, use_tqdm=False))
        blender.loadranker(ref, device=device, **ranker_kwargs)
    if blender.ranker_config.ranker_type != "pairranker":
        raise ValueError(
            f"{ref} is a {blender.ranker_config.ranker_type!r} ranker; PairRM needs ranker_type 'pairranker'"
        )
    return blender


def pairrm_matrix(
    blender: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 8,
    *,
    source_max_length: int | None = None,
    candidate_max_length: int | None = None,
    label: str | None = "PairRM rewards",
) -> list[np.ndarray]:
    """Per prompt, PairRM's full N×N comparison logits `M` (float64); see the module docstring for their meaning.

    Same computation as `Blender.rank(..., return_scores=True)`, which keeps only `pairrm_scores(M)`. Prompts may
    have different numbers of candidates (each batch holds prompts with the same number); each needs >= 2.
    Progress is logged under `label` (none when None).
    """
    import torch
    from llm_blender.blender.blender_utils import RankerDataset

    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    if any(len(c) < 2 for c in candidates):
        raise ValueError("every prompt needs at least 2 candidates to compare")
    if blender.ranker_config.ranker_type != "pairranker":
        raise ValueError(f"pairrm_matrix needs a 'pairranker', got {blender.ranker_config.ranker_type!r}")
    collate = _collator(blender, source_max_length, candidate_max_length)
    device = blender.ranker_config.device
    by_size: dict[int, list[int]] = {}
    for i, c in enumerate(candidates):
        by_size.setdefault(len(c), []).append(i)
    out: list[np.ndarray | None] = [None] * len(prompts)
    progress = Progress(label, len(prompts), "prompts")
    with torch.no_grad():
        for idxs in by_size.values():
            for start in range(0, len(idxs), batch_size):
                chunk = idxs[start : start + batch_size]
                dataset = RankerDataset([prompts[i] for i in chunk], [list(candidates[i]) for i in chunk])
                batch = collate([dataset[k] for k in range(len(chunk))])
                batch = {k: v.to(device) for k, v in batch.items() if v is not None}
                logits = blender.ranker._full_predict(**batch)["logits"].float().cpu().numpy()
                for i, m in zip(chunk, logits, strict=True):
                    out[i] = m.astype(np.float64)
                progress.advance(len(chunk))
    return out  # type: ignore[return-value]


def _collator(blender: Any, source_max_length: int | None, candidate_max_length: int | None) -> Any:
    """The ranker's collator with the length limits `Blender.rank` sets (config values unless overridden)."""
    collate = copy.copy(blender.ranker_collator)
    collate.source_maxlength = source_max_length or blender.ranker_config.source_maxlength
    collate.candidate_maxlength = candidate_max_length or blender.ranker_config.candidate_maxlength
    return collate


def pairrm_scores(matrix: np.ndarray) -> np.ndarray:
    """llm-blender's rank score per candidate: `mean_j (M[i, j] - M[j, i])` over all N columns; higher is better."""
    m = np.asarray(matrix, dtype=np.float64)
    return (m - m.T).mean(axis=-1)


def win_probabilities(matrix: np.ndarray) -> np.ndarray:
    """`P[i, j] = sigmoid(M[i, j] - M[j, i])`: order-balanced P(candidate i beats j); `P + P.T = 1`, diagonal 0.5."""
    m = np.asarray(matrix, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(m - m.T)))


def pairrm_rewards(
    candidates: pl.DataFrame,
    blender: Any,
    *,
    batch_size: int = 8,
    source_max_length: int | None = None,
    candidate_max_length: int | None = None,
) -> pl.DataFrame:
    """Reward = llm-blender's PairRM rank score; `rank` 1 = best within its prompt; the matrix kept per candidate.

    `candidates` needs candidate_id, prompt_id, prompt, response (and sample_idx, which orders each prompt's
    matrix; input order otherwise). Columns: `PAIRRM_REWARD_SCHEMA`, i.e. `REWARD_SCHEMA` plus `matrix_index`
    and `pairrm_logits` (row `matrix_index` of the prompt's matrix `M`); `pairrm_matrices` rebuilds the matrices.
    """
    need = {"candidate_id", "prompt_id", "prompt", "response"} - set(candidates.columns)
    if need:
        raise ValueError(f"candidates lack columns {sorted(need)}")
    order = ["prompt_id", "sample_idx"] if "sample_idx" in candidates.columns else ["prompt_id"]
    df = candidates.with_row_index("_row").sort([*order, "_row"])
    groups = list(df.group_by("prompt_id", maintain_order=True))
    prompts, cand_lists, ids = [], [], []
    for (pid,), g in groups:
        if g["prompt"].n_unique() != 1:
            raise ValueError(f"prompt {pid!r} has candidates with different prompt texts")
        prompts.append(g["prompt"][0])
        cand_lists.append(g["response"].to_list())
        ids.append((pid, g["candidate_id"].to_list()))
    matrices = pairrm_matrix(
        blender,
        prompts,
        cand_lists,
        batch_size,
        source_max_length=source_max_length,
        candidate_max_length=candidate_max_length,
    )
    rows = []
    for (pid, cids), m in zip(ids, matrices, strict=True):
        scores = pairrm_scores(m)
        for k, cid in enumerate(cids):
            rows.append((cid, pid, PAIRRM_SOURCE, float(scores[k]), 0, k, m[k].tolist()))
    return (
        pl.DataFrame(rows, schema=PAIRRM_REWARD_SCHEMA, orient="row")
        .with_columns(
            pl.col("reward").rank("min", descending=True).over("prompt_id").cast(pl.Int32).alias("rank")
        )
        .cast(PAIRRM_REWARD_SCHEMA)
    )


def pairrm_matrices(rewards: pl.DataFrame) -> dict[str, tuple[list[str], np.ndarray]]:
    """prompt_id -> (candidate ids in matrix order, N×N matrix M) from a `pairrm_rewards` frame, no re-ranking."""
    out = {}
    for (pid,), g in rewards.sort("prompt_id", "matrix_index").group_by("prompt_id", maintain_order=True):
        if g["matrix_index"].to_list() != list(range(g.height)):
            raise ValueError(f"prompt {pid!r}: matrix_index is not 0..{g.height - 1}")
        out[pid] = (g["candidate_id"].to_list(), np.array(g["pairrm_logits"].to_list(), dtype=np.float64))
    return out


# --- a tiny ranker for tests and the offline recipe ---------------------------------------------------------

_TINY_CORPUS = [
    "Thanks for reaching out. Restart the router, wait two minutes, then check the lights again.",
    "Your bill went up because the promotional discount ended this month.",
    "Which plan includes unlimited mobile data and a faster home connection?",
    "I am sorry about the outage. We credited your account for the missed days.",
    "1. Unplug the modem. 2. Plug it back in. 3. Run a speed test. Did that help?",
    "The best answer is short, polite and explains each step clearly.",
]


def _tiny_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int) -> Any:
    """A byte-level BPE tokenizer with DeBERTa's `[CLS] ... [SEP]` framing and a `model_max_length`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [_PAD, _CLS, _SEP, _UNK, _MASK]
    tok = Tokenizer(models.BPE(unk_token=_UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tok.token_to_id(_CLS), tok.token_to_id(_SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{_CLS} $A {_SEP}",
        pair=f"{_CLS} $A {_SEP} $B {_SEP}",
        special_tokens=[(_CLS, cls_id), (_SEP, sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        cls_token=_CLS,
        sep_token=_SEP,
        pad_token=_PAD,
        unk_token=_UNK,
        mask_token=_MASK,
        model_max_length=max_length,
    )


def build_tiny_ranker(
    out_dir: str | Path,
    *,
    texts: Sequence[str] | None = None,
    vocab_size: int = 384,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    source_maxlength: int = 64,
    candidate_maxlength: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random PairRM (DeBERTa-v2 backbone) in llm-blender's format to `out_dir`; return the folder.

    The ranker is assembled by llm-blender's own `load_ranker` (tokenizer, collator, `CrossCompareReranker`), so
    the saved state dict matches what `Blender.loadranker` rebuilds. Deterministic given `seed`; no network.
    """
    import safetensors.torch
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    ensure_llm_blender_compat()
    from llm_blender.blender.blender_utils import load_ranker as blender_load_ranker
    from llm_blender.pair_ranker.config import RankerConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = out / BACKBONE_DIR
    max_length = source_maxlength + 2 * candidate_maxlength + 8
    tokenizer = _tiny_tokenizer(texts or _TINY_CORPUS, vocab_size, max_length)
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_length,
        type_vocab_size=0,
        relative_attention=True,  # as deberta-v3: relative positions only, bucketed
        position_buckets=32,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,  # 0.02 (the default) leaves a random model's outputs almost blind to the text
    )
    ranker_config = RankerConfig(
        ranker_type="pairranker",
        model_type="deberta",
        model_name=str(backbone.resolve()),  # absolute while building; relative in the saved config.json
        source_maxlength=source_maxlength,
        candidate_maxlength=candidate_maxlength,
        n_tasks=1,
        drop_out=0.05,
        fp16=False,
        inference_mode="full",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        DebertaV2Model(config).save_pretrained(backbone)
        tokenizer.save_pretrained(backbone)
        ranker, _, _ = blender_load_ranker(ranker_config)
        # Resizing gave the four prefix tokens near-identical (mean) embeddings: redraw every embedding at unit
        # scale so the prefixes and the candidates' tokens differ.
        with torch.no_grad():
            ranker.pretrained_model.get_input_embeddings().weight.normal_(0.0, 1.0)
    safetensors.torch.save_model(ranker, str(out / "model.safetensors"))
    saved = {k: v for k, v in ranker_config.to_dict().items() if v is not None}  # None: the default anyway
    saved.update(model_name=BACKBONE_DIR)
    saved.pop("cache_dir", None)
    (out / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    return out
