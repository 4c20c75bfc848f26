"""Judges in alpaca_eval's annotation format, their metrics, and the official judge against a fake OpenAI server."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.recipe import load_recipe
from prefscale.evaluation import rubric
from prefscale.evaluation.alpaca_metrics import compute_metrics, load_annotations
from prefscale.evaluation.judges.alpaca_eval import AlpacaEvalJudge, MissingAPIKeyError
from prefscale.evaluation.judges.base import ALPACA_COLUMNS
from prefscale.evaluation.judges.local_llm import LocalLLMJudge, swap_averaged_preference
from prefscale.evaluation.judges.metrics import judge_metrics
from prefscale.evaluation.judges.pairrm import PairRMJudge
from prefscale.evaluation.judges.registry import make_judges
from prefscale.evaluation.judges.rubric import RubricJudge
from prefscale.evaluation.judges.run import Comparison, run_judges
from prefscale.evaluation.judges.weak_supervision import WeakSupervisionJudge

FIXTURES = Path(__file__).parents[1] / "fixtures" / "alpaca_eval_judge"
FAKE_KEY = "sk-prefscale-fake-test-key"


@pytest.fixture(scope="module")
def rubric_pairs() -> pl.DataFrame:
    recs = [json.loads(line) for line in (FIXTURES / "rubric_pairs.jsonl").read_text().splitlines()]
    return pl.DataFrame(recs).with_columns(
        pl.Series("prompt_id", [f"r{k}" for k in range(len(recs))]),
        pl.Series("sample_idx", [0] * len(recs), dtype=pl.Int32),
    )


def check_format(ann: pl.DataFrame, pairs: pl.DataFrame, tmp_path: Path, name: str) -> None:
    """alpaca_eval's columns, the pairs in order, preferences in [1, 2], and the project's own file validator."""
    for col in ALPACA_COLUMNS:
        assert col in ann.columns, col
    assert ann.height == pairs.height
    assert ann["output_1"].to_list() == pairs["output_1"].to_list()
    assert ann["output_2"].to_list() == pairs["output_2"].to_list()
    prefs = ann["preference"].drop_nulls()
    assert prefs.len() == ann.height  # every offline judge answers every pair
    assert prefs.is_between(1.0, 2.0).all()
    same = ann.filter(pl.col("output_1") == pl.col("output_2"))
    assert (same["preference"] == 1.5).all()
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ann.select(ALPACA_COLUMNS).to_dicts()))
    back = load_annotations(path)  # what `prefscale alpacaeval --annotations` accepts
    assert back["preference"].tolist() == ann["preference"].to_list()


# ----------------------------------------------------------------------------------------------- the rubric


def test_rubric_judge_agrees_with_the_rubric(rubric_pairs, tmp_path):
    ann = RubricJudge().annotate(rubric_pairs, generator_1="ref", generator_2="model")
    check_format(ann, rubric_pairs, tmp_path, "rubric")
    assert ann["judge"].unique().to_list() == ["sme_rubric"]
    expected = {"model": 2.0, "reference": 1.0, "tie": 1.5}
    assert ann["preference"].to_list() == [expected[e] for e in rubric_pairs["expected"]]
    for row in ann.join(
        rubric_pairs.select("prompt_id", "finished_1", "finished_2"), on="prompt_id"
    ).iter_rows(named=True):
        if row["output_1"] == row["output_2"]:  # a tie without judging, as alpaca_eval does
            assert (row["score_1"], row["score_2"], row["preference"]) == (None, None, 1.5)
            continue
        a = rubric.score(row["output_1"], row["task_type"], row["finished_1"])
        b = rubric.score(row["output_2"], row["task_type"], row["finished_2"])
        assert (row["score_1"], row["score_2"]) == (a, b)
    # the win rate equals prefscale.rubric.win_rate's (what eval_results reports), via alpaca_eval's metrics
    model = list(
        zip(rubric_pairs["output_2"], rubric_pairs["task_type"], rubric_pairs["finished_2"], strict=True)
    )
    base = list(
        zip(rubric_pairs["output_1"], rubric_pairs["task_type"], rubric_pairs["finished_1"], strict=True)
    )
    wr, wins, losses, draws = rubric.win_rate(model, base)
    m = judge_metrics(
        ann, iteration=1, variant="checkpoint", model="model", reference="x", source_partition="1"
    )
    assert m["win_rate"] == pytest.approx(wr, abs=1e-12)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"]) == (wins, losses, draws) == (3, 3, 2)


# ------------------------------------------------------------------------------------- weak supervision


def test_weak_supervision_judge(rubric_pairs, tmp_path):
    r = load_recipe("embedded")
    judge = WeakSupervisionJudge(r.labeling.functions, r.labeling.label_model, seed=r.seed)
    ann = judge.annotate(rubric_pairs, generator_1="ref", generator_2="model")
    check_format(ann, rubric_pairs, tmp_path, "weak_supervision")
    assert set(ann["preference"].to_list()) <= {1.0, 1.5, 2.0}
    judged = ann.filter(pl.col("output_1") != pl.col("output_2"))
    assert judged["score_1"].is_between(0, 1).all() and judged["score_2"].is_between(0, 1).all()
    for row in judged.iter_rows(named=True):  # the higher P(high) wins
        expected = (
            1.5 if abs(row["score_1"] - row["score_2"]) < 1e-9 else 1 + (row["score_2"] > row["score_1"])
        )
        assert row["preference"] == expected
    # the LFs see what the SMEs see on the clear cases: the polite, listed, thanked answer wins
    by_id = dict(zip(ann["prompt_id"], ann["preference"], strict=True))
    assert by_id["r0"] == 2.0 and by_id["r1"] == 1.0 and by_id["r7"] == 2.0
    assert ann["annotator"][0] == f"label_model({len(r.labeling.functions)} LFs)"


# -------------------------------------------------------------------------------------------------- PairRM


def test_pairrm_judge_is_one_plus_the_order_balanced_probability(rubric_pairs, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from prefscale.rewards.pairrm import pairrm_matrix, win_probabilities

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    judge = PairRMJudge("tiny", cache_dir=tmp_path / "cache", seed=3)
    pairs = rubric_pairs.head(4)
    ann = judge.annotate(pairs, generator_1="ref", generator_2="model")
    check_format(ann, pairs, tmp_path, "pairrm")
    assert (tmp_path / "cache" / "pairrm-tiny-seed3" / "config.json").is_file()  # built once, reused
    assert ann["annotator"][0] == "pairrm[tiny]"
    mats = pairrm_matrix(
        judge._blender,
        pairs["instruction"].to_list(),
        [[a, b] for a, b in pairs.select("output_1", "output_2").rows()],
    )
    expected = [1 + win_probabilities(m)[1, 0] for m in mats]
    assert ann["preference"].to_list() == pytest.approx(expected, abs=1e-12)
    assert (ann["score_1"] + ann["score_2"]).to_list() == pytest.approx([1.0] * 4)
    assert len(set(np.round(ann["preference"].to_numpy(), 9))) > 1  # a random ranker, but not a constant one


# ----------------------------------------------------------------------------------------------- local LLM


def test_swap_averaging_cancels_position_bias():
    assert swap_averaged_preference(1.0, 1.0) == 1.5  # always answers A
    assert swap_averaged_preference(0.0, 0.0) == 1.5  # always answers B
    assert swap_averaged_preference(0.0, 1.0) == 2.0  # the model wins in both orders
    assert swap_averaged_preference(1.0, 0.0) == 1.0  # the reference wins in both orders
    assert swap_averaged_preference(0.2, 0.8) == pytest.approx(1.8)


class ScriptedLLM(LocalLLMJudge):
    """The local LLM judge with `prob_a` scripted: records the (A, B) orders it was asked about."""

    def __init__(self, prob_a) -> None:
        super().__init__("scripted", batch_size=2)
        self.script, self.asked = prob_a, []

    def prob_a(self, triples):
        self.asked.extend((a, b) for _, a, b in triples)
        return np.array([self.script(a, b) for _, a, b in triples])


def test_local_llm_judge_asks_both_orders(rubric_pairs):
    pairs = rubric_pairs.filter(pl.col("output_1") != pl.col("output_2")).head(3)
    biased = ScriptedLLM(lambda a, b: 0.9)  # prefers whatever is shown first
    ann = biased.annotate(pairs, generator_1="ref", generator_2="model")
    assert ann["preference"].to_list() == pytest.approx([1.5] * 3)
    refs, mods = pairs["output_1"].to_list(), pairs["output_2"].to_list()
    assert biased.asked == [*zip(refs, mods, strict=True), *zip(mods, refs, strict=True)]

    def likes_thanks(
        a: str, b: str
    ) -> float:  # P(A): 0.8 when only A thanks the customer, 0.2 when only B does
        ta, tb = "thank" in a.lower(), "thank" in b.lower()
        return 0.5 if ta == tb else (0.8 if ta else 0.2)

    content = ScriptedLLM(likes_thanks).annotate(pairs, generator_1="ref", generator_2="model")
    expected = [
        1.5 if ("thank" in r.lower()) == ("thank" in m.lower()) else (1.8 if "thank" in m.lower() else 1.2)
        for r, m in zip(refs, mods, strict=True)
    ]
    assert content["preference"].to_list() == pytest.approx(expected)
    assert expected != [1.5] * 3  # the pairs really do differ on thanks


def test_local_llm_judge_on_a_real_model(tiny_policy, cpu, rubric_pairs, tmp_path):
    folder, _ = tiny_policy
    judge = LocalLLMJudge(folder, compute=cpu, batch_size=3, max_length=160)
    ann = judge.annotate(rubric_pairs, generator_1="ref", generator_2="model")
    check_format(ann, rubric_pairs, tmp_path, "local_llm")
    assert ann["annotator"][0] == f"local_llm[{folder.name}]"
    # the prompt ends where the answer letter comes, and long responses are cut to the context
    long = ("word " * 400, "other " * 400)
    assert len(judge.encode("q", *long)) <= 160
    # left padding + position ids: a batch gives what one-by-one gives
    triples = [(i, a, b) for i, a, b in rubric_pairs.select("instruction", "output_1", "output_2").rows()]
    batched = judge.prob_a(triples)
    judge.batch_size = 1
    single = judge.prob_a(triples)
    assert batched == pytest.approx(single, abs=1e-5)
    assert ((batched > 0) & (batched < 1)).all()
    # swapping reference and model mirrors the preference
    swapped = rubric_pairs.rename({"output_1": "output_2", "output_2": "output_1"})
    mirrored = judge.annotate(swapped, generator_1="model", generator_2="ref")
    assert (ann["preference"] + mirrored["preference"]).to_list() == pytest.approx(
        [3.0] * ann.height, abs=1e-5
    )


# -------------------------------------------------------------------------------- the official alpaca_eval

LP_WIN, LP_LOSE, LP_TIE = -0.05, -3.0, math.log(0.5)
_OUTPUT = re.compile(r'"model_identifier": "(m|M)",\s*"output": """(.*?)"""', re.S)


class FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions answering as weighted_alpaca_eval_gpt4_turbo's parser expects.

    The judge picks the model identifier ("m" or "M") whose output contains GOOD (logprob LP_WIN, the other
    LP_LOSE; LP_TIE each when both or neither do) and returns it with `logprobs.content[0].top_logprobs`, which
    alpaca_eval's `logprob_parser` turns into preference = 2 - P(m) / (P(m) + P(M)).
    """

    requests: ClassVar[list[dict]] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        text = "\n".join(m["content"] for m in body["messages"])
        outputs = dict(_OUTPUT.findall(text))
        good = {k for k, v in outputs.items() if "GOOD" in v}
        if len(good) == 1:
            (win,) = good
            lp = {win: LP_WIN, ("M" if win == "m" else "m"): LP_LOSE}
        else:
            win, lp = "m", {"m": LP_TIE, "M": LP_TIE}
        top = [
            {"token": t, "bytes": list(t.encode()), "logprob": v}
            for t, v in sorted(lp.items(), key=lambda x: -x[1])
        ]
        reply = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": win},
                    "finish_reason": "length",
                    "logprobs": {"content": [{**top[0], "top_logprobs": top}]},
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_openai(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOpenAI.requests = []
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield FakeOpenAI
    finally:
        server.shutdown()
        server.server_close()


def official_pairs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "instruction": [f"Question {k}?" for k in range(6)],
            "output_1": [
                "GOOD ref 0",
                "plain ref 1",
                "plain ref 2",
                "GOOD ref 3",
                "same text",
                "plain ref 5",
            ],
            "output_2": [
                "plain model 0",
                "GOOD model 1",
                "plain model 2",
                "GOOD model 3",
                "same text",
                "GOOD 5",
            ],
        }
    )


def test_official_judge_through_a_fake_openai_server(fake_openai, tmp_path, caplog):
    pairs = official_pairs()
    p_win = math.exp(LP_WIN) / (math.exp(LP_WIN) + math.exp(LP_LOSE))
    expected = [2 - p_win, 1 + p_win, 1.5, 1.5, 1.5, 1 + p_win]
    cache = tmp_path / "cache" / "annotations.json"
    judge = AlpacaEvalJudge(caching_path=cache)
    with caplog.at_level(logging.DEBUG):
        ann = judge.annotate(pairs, generator_1="gpt4_1106_preview", generator_2="my-model")
    check_format(ann, pairs, tmp_path, "official")
    assert ann["preference"].to_list() == pytest.approx(expected, abs=1e-9)
    assert ann["annotator"][0] == "weighted_alpaca_eval_gpt4_turbo"
    assert ann["judge"][0] == "alpaca_eval_gpt4_turbo"
    reqs = fake_openai.requests
    assert len(reqs) == 5  # the identical pair is a tie without a call, as alpaca_eval does
    for r in reqs:
        assert r["path"] == "/v1/chat/completions"
        assert r["auth"] == f"Bearer {FAKE_KEY}"
        body = r["body"]
        assert body["model"] == "gpt-4-1106-preview"
        assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 5
        assert body["messages"][0]["role"] == "system"
    assert FAKE_KEY not in caplog.text
    # metrics with alpaca_eval's semantics, on the 0-1 scale
    m = judge_metrics(
        ann, iteration=2, variant="checkpoint", model="my-model", reference="file", source_partition="2"
    )
    ref = compute_metrics(ann.select(ALPACA_COLUMNS).to_pandas())
    assert m["win_rate"] == pytest.approx(ref["win_rate"] / 100)
    assert m["standard_error"] == pytest.approx(ref["standard_error"] / 100)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"]) == (2, 1, 3, 6)
    assert m["reference_generator"] == "gpt4_1106_preview"
    # the cache: the same pairs again cost no call
    again = AlpacaEvalJudge(caching_path=cache).annotate(
        pairs, generator_1="gpt4_1106_preview", generator_2="x"
    )
    assert len(fake_openai.requests) == 5
    assert again["preference"].to_list() == pytest.approx(expected, abs=1e-9)


def test_missing_key_names_the_variable_before_any_work(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        AlpacaEvalJudge()
    monkeypatch.setenv("OPENAI_API_KEY", "  ")
    cfg = EvaluationConfig(judges=("rubric", "local_llm", "alpaca_eval_gpt4_turbo"))
    # checked first: the local_llm judge, which has no model here, would fail next
    with pytest.raises(MissingAPIKeyError, match="environment variable OPENAI_API_KEY"):
        make_judges(cfg.all_judges, cfg)
    with pytest.raises(ValueError, match="local_llm judge needs a model"):
        make_judges(("rubric", "local_llm"), cfg)


# ---------------------------------------------------------------------------------------------- run_judges


def test_run_judges_tables(rubric_pairs):
    r = load_recipe("embedded")
    cfg = EvaluationConfig(judges=("rubric", "weak_supervision"))
    judges = make_judges(cfg.all_judges, cfg, lfs=r.labeling.functions, label_model=r.labeling.label_model)
    base = rubric_pairs.with_columns(
        pl.col("output_1").alias("output_2"), pl.col("finished_1").alias("finished_2")
    )
    comparisons = [
        Comparison("base", 0, "base@v", base, 0.0),
        Comparison("checkpoint", 1, "ckpt@v", rubric_pairs, 0.125),
    ]
    annotations, metrics = run_judges(
        judges, comparisons, reference="heldout_base", reference_generator="base@v", source_partition="1"
    )
    assert set(annotations) == {"sme_rubric", "weak_supervision"}
    for ann in annotations.values():
        assert ann.height == 2 * rubric_pairs.height
        assert ann.columns[:2] == ["iteration", "variant"]
    assert metrics.height == 4
    assert metrics.select("variant", "judge").rows() == [
        ("base", "sme_rubric"),
        ("checkpoint", "sme_rubric"),
        ("base", "weak_supervision"),
        ("checkpoint", "weak_supervision"),
    ]
    base_rows = metrics.filter(pl.col("variant") == "base")
    # the base against itself: every pair the same text, 50 %, and alpaca_eval's LC special case
    assert base_rows["win_rate"].to_list() == [0.5, 0.5]
    assert base_rows["lc_win_rate"].to_list() == [0.5, 0.5]
    assert base_rows["n_draws"].to_list() == [rubric_pairs.height] * 2
    ck = metrics.filter(pl.col("variant") == "checkpoint")
    assert ck["win_rate"].is_between(0, 1).all() and ck["lc_win_rate"].is_between(0, 1).all()
    assert ck["unfinished_rate"].to_list() == [0.125, 0.125]
    assert (metrics["n_wins"] + metrics["n_wins_base"] + metrics["n_draws"] == metrics["n_total"]).all()


def test_make_judges_caches_official_annotations_under_the_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    cfg = EvaluationConfig(judges=("rubric", "alpaca_eval_gpt4_turbo"))
    rubric_judge, official = make_judges(cfg.all_judges, cfg, cache_dir=tmp_path)
    assert isinstance(rubric_judge, RubricJudge) and isinstance(official, AlpacaEvalJudge)
    assert (
        official.caching_path == tmp_path / "alpaca_eval" / "annotations_weighted_alpaca_eval_gpt4_turbo.json"
    )


def test_heldout_comparisons_and_the_best_of_n_hook(tmp_path):
    """alpaca_eval_results' comparisons: base vs itself, the checkpoint, and best-of-N once an asset provides it."""
    from prefscale.artifacts import BEST_OF_N as BEST_OF_N_ASSET
    from prefscale.evaluation.comparisons import heldout_comparisons
    from prefscale.storage import ArtifactStore

    store = ArtifactStore(tmp_path)

    def samples(tag: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "prompt_id": ["a", "a", "b", "b"],
                "sample_idx": [0, 1, 0, 1],
                "task_type": ["billing"] * 4,
                "prompt": ["pa", "pa", "pb", "pb"],
                "response": [f"{tag} {k}" for k in range(4)],
                "n_tokens": [2] * 4,
                "finish_reason": ["stop", "stop", "stop", "length"],
            },
            schema_overrides={"sample_idx": pl.Int32, "n_tokens": pl.Int32},
        )

    def results(model: str) -> pl.DataFrame:
        return pl.DataFrame({"model": [model]})

    store.write_tables("eval_baseline", "all", {"samples": samples("base"), "results": results("base@v0")})
    store.write_tables("eval_results", "2", {"samples": samples("ckpt"), "results": results("dpo[2]@v2")})
    store.write_frame("eval_prompts", "all", pl.DataFrame({"prompt_id": ["a", "b"]}))
    compared = heldout_comparisons(store, 2)
    comparisons, inputs, generator = compared.comparisons, compared.inputs, compared.reference_generator
    assert generator == "base@v0"
    assert [(c.variant, c.iteration, c.model) for c in comparisons] == [
        ("base", 0, "base@v0"),
        ("checkpoint", 2, "dpo[2]@v2"),
    ]
    assert comparisons[0].pairs["output_1"].to_list() == comparisons[0].pairs["output_2"].to_list()
    assert comparisons[1].unfinished_rate == 0.25
    assert [r.asset for r in inputs] == ["eval_results", "eval_baseline", "eval_prompts"]
    ckpt = store.write_frame("dpo_checkpoint", "2", pl.DataFrame({"w": [1]}))
    bon = store.write_tables(BEST_OF_N_ASSET, "2", {"samples": samples("bon")}, inputs=[ckpt])
    compared = heldout_comparisons(store, 2)
    comparisons, inputs = compared.comparisons, compared.inputs
    assert comparisons[-1].variant == "best_of_n" and comparisons[-1].iteration == 2
    assert comparisons[-1].model == f"{BEST_OF_N_ASSET}[2]@{bon.version}"
    assert comparisons[-1].pairs["output_2"].to_list() == [f"bon {k}" for k in range(4)]
    assert inputs[-1] == bon
    # a newer checkpoint makes that best-of-N stale: it is no longer judged
    store.write_frame("dpo_checkpoint", "2", pl.DataFrame({"w": [2]}))
    compared = heldout_comparisons(store, 2)
    comparisons, inputs = compared.comparisons, compared.inputs
    assert [c.variant for c in comparisons] == ["base", "checkpoint"] and bon not in inputs
