"""Model-backed labeling functions, python functions, the task classifier and the LF analysis."""

from __future__ import annotations

import json
import math
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError

from prefscale.config.labeling import LabelingConfig
from prefscale.config.recipe import load_recipe
from prefscale.data import domain
from prefscale.labeling.analysis import lf_analysis, lf_catalog, lf_summary
from prefscale.labeling.apply import apply_all_lfs, apply_all_lfs_with_scores, apply_lfs, snorkel_lfs
from prefscale.labeling.context import LFContext
from prefscale.labeling.label_model import fit_label_model, gold_metrics
from prefscale.labeling.lm_scores import tfidf_cosine
from prefscale.labeling.model_kinds import LLMPromptLF, PerplexityLF, SimilarityLF
from prefscale.labeling.pattern_kinds import PythonLF, RegexLF
from prefscale.labeling.task_classifier import TaskClassifier, classify_tasks
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW, LabelingFunctionError
from prefscale.policy.chat import chat_text
from prefscale.policy.io import load_policy
from prefscale.storage import ArtifactStore

FIX = "tests.fixtures.labeling.python_lfs"


def candidates(n_prompts: int = 4, n: int = 3, seed: int = 0) -> pl.DataFrame:
    import random

    pool = domain.make_prompt_pool(max(n_prompts, 4), seed).head(n_prompts)
    rng = random.Random(seed)
    rows = []
    for pid, task, prompt in pool.iter_rows():
        for k in range(n):
            rows.append(
                {
                    "candidate_id": f"{pid}-{k}",
                    "prompt_id": pid,
                    "sample_idx": k,
                    "task_type": task,
                    "prompt": prompt,
                    "response": domain.make_response(prompt, task, rng),
                    "finish_reason": "stop",
                }
            )
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def ctx(tiny_policy, cpu):
    return LFContext(compute=cpu)


# --- python functions ------------------------------------------------------------------------------------------


def test_python_lf_votes_row_wise_and_matches_snorkel():
    rows = candidates().with_columns(
        pl.when(pl.col("sample_idx") == 0)
        .then(pl.lit("We will refund it."))
        .otherwise("response")
        .alias("response")
    )
    lf = PythonLF(name="refund", callable=f"{FIX}:mentions_refund", description="d")
    votes = apply_lfs(rows, [RegexLF(name="lumora", pattern="lumora", vote="high"), lf])
    assert votes.columns == ["candidate_id", "lumora", "refund"]
    expected = [HIGH if "refund" in r.lower() else ABSTAIN for r in rows["response"]]
    assert votes["refund"].to_list() == expected
    assert [snorkel_lfs([lf])[0](r) for _, r in rows.to_pandas().iterrows()] == expected
    assert lf_catalog([lf])["vote"].to_list() == ["high|low"]


def test_python_lf_that_raises_names_itself_and_the_first_row():
    lf = PythonLF(name="fragile", callable=f"{FIX}:raises_on_second_row")
    rows = candidates()
    with pytest.raises(LabelingFunctionError) as e:
        apply_lfs(rows, [lf])
    assert e.value.lf_name == "fragile" and e.value.row == 1
    assert str(e.value).startswith(
        "labeling function 'fragile' raised ZeroDivisionError: cannot score this one"
    )
    assert f"for candidate {rows['candidate_id'][1]} (row 1)" in str(e.value)


@pytest.mark.parametrize(("fn", "shown"), [("returns_seven_on_second_row", "7"), ("returns_text", "'high'")])
def test_python_lf_outside_high_low_abstain_is_rejected(fn, shown):
    lf = PythonLF(name="bad_values", callable=f"{FIX}:{fn}")
    rows = candidates()
    with pytest.raises(
        LabelingFunctionError, match=f"labeling function 'bad_values' returned {shown} for candidate"
    ):
        apply_all_lfs(rows, [lf])


def test_python_lf_version_hashes_the_source_and_bad_callables_fail_clearly(tmp_path):
    a = PythonLF(name="x", callable=f"{FIX}:mentions_refund")
    b = PythonLF(name="x", callable=f"{FIX}:returns_text")
    assert a.version != b.version and len(a.version) == 12
    with pytest.raises(ValidationError):
        PythonLF(name="x", callable="not a callable")
    missing = PythonLF(name="ghost", callable="tests.fixtures.labeling.python_lfs:nope")
    with pytest.raises(LabelingFunctionError, match="'ghost': cannot import"):
        apply_lfs(candidates(), [missing])


def test_python_lf_respects_task_types():
    rows = candidates()
    lf = PythonLF(name="low_all", callable=f"{FIX}:returns_seven_on_second_row", task_types=("nonexistent",))
    assert set(apply_lfs(rows, [lf])["low_all"].to_list()) == {ABSTAIN}  # never called


def test_apply_lfs_points_model_kinds_to_apply_all_lfs():
    lf = SimilarityLF(name="sim", high_above=0.5)
    with pytest.raises(TypeError, match="apply_all_lfs"):
        apply_lfs(candidates(), [lf])


# --- llm_prompt ----------------------------------------------------------------------------------------------


def _manual_logodds(model_dir, cpu, text: str, yes: str, no: str) -> float:
    model, tok = load_policy(model_dir, cpu)

    def lp(answer: str) -> float:
        ctx = tok(text, add_special_tokens=False)["input_ids"]
        ans = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + ans])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        return float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(ans)))

    return lp(yes) - lp(no)


@pytest.mark.parametrize("answers", [(" yes", " no"), ("<|end|>", "<|pad|>")])
def test_llm_prompt_matches_a_manual_forward_pass(tiny_policy, cpu, ctx, answers):
    folder, _ = tiny_policy
    rows = candidates(2, 2)
    lf = LLMPromptLF(name="q", question="Is it polite?", model=str(folder), answers=answers, margin=0.0)
    lo = lf.log_odds(rows, ctx)
    _, tok = ctx.causal_lm(str(folder))
    for i in range(rows.height):
        text = chat_text(tok, lf.text(rows["prompt"][i], rows["response"][i]))
        assert lo[i] == pytest.approx(_manual_logodds(folder, cpu, text, *answers), abs=1e-4)


def test_llm_prompt_votes_by_direction_margin_and_bias(tiny_policy, ctx):
    folder, _ = tiny_policy
    rows = candidates()
    base = LLMPromptLF(name="q", question="Is it polite?", model=str(folder), margin=0.0)
    lo = base.log_odds(rows, ctx)
    centre = float(np.median(lo))
    lf = base.model_copy(update={"bias": -centre, "margin": 0.0})
    app = apply_all_lfs_with_scores(rows, [lf], ctx)
    p = app.scores["q"].to_numpy()
    assert np.allclose(p, 1 / (1 + np.exp(-(lo - centre))))
    v = app.votes["q"].to_numpy()
    assert set(v[p > 0.5]) <= {HIGH} and set(v[p < 0.5]) <= {LOW}
    low = lf.model_copy(update={"yes_vote": "low"})
    assert (apply_all_lfs(rows, [low], ctx)["q"].to_numpy()[p != 0.5] == 1 - v[p != 0.5]).all()
    wide = lf.model_copy(update={"margin": 0.49})
    assert (apply_all_lfs(rows, [wide], ctx)["q"].to_numpy()[np.abs(p - 0.5) < 0.49] == ABSTAIN).all()
    calibrated = lf.model_copy(update={"calibrate": True, "bias": 0.0})
    free = base.log_odds(pl.DataFrame({"prompt": ["N/A"], "response": ["N/A"]}), ctx)[0]
    assert np.allclose(calibrated.scores(rows, ctx), 1 / (1 + np.exp(-(lo - free))))
    assert lf.vote_label == "yes=high|no=low"


def test_llm_prompt_validation():
    with pytest.raises(ValidationError, match="template"):
        LLMPromptLF(name="q", question="?", template="{answer}")
    with pytest.raises(ValidationError, match="http"):
        LLMPromptLF(name="q", question="?", endpoint="ftp://x")
    with pytest.raises(ValidationError, match="differ"):
        LLMPromptLF(name="q", question="?", answers=(" yes", "YES"))


class _FakeOpenAI(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible server: ' yes' is likely when the prompt mentions Lumora."""

    requests: ClassVar[list] = []

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body, self.headers.get("Authorization")))
        if body.get("model") == "broken":
            self.send_response(500)
            self.end_headers()
            return

        def top(text: str) -> dict[str, float]:
            if "lumora" in text.lower():
                return {" yes": math.log(0.8), " Yes": math.log(0.1), " no": math.log(0.05)}
            if "n/a" in text.lower():
                return {" maybe": math.log(0.9)}
            return {" yes": math.log(0.1), " no": math.log(0.85)}

        if self.path.endswith("/chat/completions"):
            t = top(body["messages"][0]["content"])
            content = [
                {
                    "token": "x",
                    "logprob": -1,
                    "top_logprobs": [{"token": k, "logprob": v} for k, v in t.items()],
                }
            ]
            out = {"choices": [{"index": 0, "logprobs": {"content": content}}]}
        else:
            out = {
                "choices": [
                    {"index": i, "text": "x", "logprobs": {"top_logprobs": [top(p)]}}
                    for i, p in enumerate(body["prompt"])
                ][::-1]  # out of order on purpose: matched by index
            }
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_openai():
    _FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("chat", [False, True])
def test_llm_prompt_over_an_openai_compatible_endpoint(fake_openai, monkeypatch, chat):
    monkeypatch.setenv("FAKE_KEY", "sekret")
    rows = pl.DataFrame(
        {
            "candidate_id": ["a", "b", "c"],
            "prompt": ["q1", "q2", "q3"],
            "response": ["Lumora is here", "no idea", "N/A"],
            "task_type": ["billing"] * 3,
        }
    )
    lf = LLMPromptLF(
        name="ep",
        question="Good?",
        endpoint=fake_openai,
        model="judge",
        chat=chat,
        batch_size=2,
        api_key_env="FAKE_KEY",
    )
    app = apply_all_lfs_with_scores(rows, [lf], LFContext())
    p = app.scores["ep"].to_list()
    assert p[0] == pytest.approx(0.9 / 0.95)  # ' yes' and ' Yes' both count as yes
    assert p[1] == pytest.approx(0.1 / 0.95)
    assert math.isnan(p[2])  # neither answer among the top tokens
    assert app.votes["ep"].to_list() == [HIGH, LOW, ABSTAIN]
    paths = {path for path, _, _ in _FakeOpenAI.requests}
    assert paths == ({"/v1/chat/completions"} if chat else {"/v1/completions"})
    assert len(_FakeOpenAI.requests) == (3 if chat else 2)  # batched prompts without chat
    assert all(auth == "Bearer sekret" for _, _, auth in _FakeOpenAI.requests)
    broken = lf.model_copy(update={"model": "broken"})
    with pytest.raises(LabelingFunctionError, match=r"'ep': request to .* failed"):
        apply_all_lfs(rows, [broken], LFContext())


# --- perplexity --------------------------------------------------------------------------------------------


def test_perplexity_matches_a_manual_forward_pass_and_thresholds(tiny_policy, cpu, ctx):
    folder, _ = tiny_policy
    rows = candidates(2, 2).with_columns(
        pl.when(pl.col("sample_idx") == 1).then(pl.lit("")).otherwise("response").alias("response")
    )
    lf = PerplexityLF(name="ppl", model=str(folder), high_below=1.5, low_above=50.0)
    ppl = lf.scores(rows, ctx)
    model, tok = load_policy(folder, cpu)
    for i in range(rows.height):
        if not rows["response"][i]:
            assert math.isnan(ppl[i])  # an empty response has no perplexity: abstain
            continue
        prefix = chat_text(tok, rows["prompt"][i])
        full = chat_text(tok, rows["prompt"][i], rows["response"][i])
        ctx_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        resp_ids = tok(full[len(prefix) :], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx_ids + resp_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        nll = -np.mean([float(logp[len(ctx_ids) - 1 + j, t]) for j, t in enumerate(resp_ids)])
        assert ppl[i] == pytest.approx(math.exp(nll), rel=1e-4)
    finite = ppl[~np.isnan(ppl)]
    mid = float(np.median(finite))
    votes = PerplexityLF(
        name="ppl", model=str(folder), high_below=mid, low_above=mid + 1e-6
    ).votes_from_scores(ppl)
    assert list(votes) == [ABSTAIN if math.isnan(x) else HIGH if x <= mid else LOW for x in ppl]
    with pytest.raises(ValidationError, match="high_below"):
        PerplexityLF(name="p", high_below=5, low_above=2)
    with pytest.raises(ValidationError):
        PerplexityLF(name="p")


def test_base_policy_alias_resolves_through_the_store_and_is_recorded(tiny_policy, cpu, tmp_path):
    folder, _ = tiny_policy
    store = ArtifactStore(tmp_path)
    ref = store.publish_dir("base_policy", "all", lambda d: shutil.copytree(folder, d, dirs_exist_ok=True))
    context = LFContext(store=store, compute=cpu)
    lf = PerplexityLF(name="ppl", high_below=2.0)
    assert lf.model == "base_policy"
    out = apply_all_lfs(candidates(1, 2), [lf], context)
    assert out.columns == ["candidate_id", "ppl"]
    assert context.used["base_policy"].version == ref.version
    with pytest.raises(ValueError, match="artifact store"):
        LFContext(compute=cpu).model_path("base_policy")
    # In process (prefscale ablation), without a store: a given folder, the same votes.
    in_process = LFContext(compute=cpu, base_policy=folder)
    assert in_process.model_path("base_policy") == str(folder)
    assert apply_all_lfs(candidates(1, 2), [lf], in_process).equals(out)


# --- similarity ---------------------------------------------------------------------------------------------


def test_tfidf_similarity_votes():
    rows = pl.DataFrame(
        {
            "candidate_id": ["same", "related", "unrelated", "empty"],
            "prompt": ["my router keeps dropping wifi"] * 4,
            "response": [
                "my router keeps dropping wifi",
                "restart the router",
                "thank you for your patience",
                "",
            ],
            "task_type": ["troubleshooting"] * 4,
        }
    )
    cos = tfidf_cosine(rows["prompt"].to_list(), rows["response"].to_list())
    assert cos[0] == pytest.approx(1.0) and 0 < cos[1] < 1 and cos[2] == 0 and cos[3] == 0
    lf = SimilarityLF(name="on_topic", high_above=0.9, low_below=0.0)
    assert apply_all_lfs(rows, [lf])["on_topic"].to_list() == [HIGH, ABSTAIN, LOW, LOW]
    with pytest.raises(ValidationError, match="needs a model"):
        SimilarityLF(name="s", backend="embedding", high_above=0.5)


def test_embedding_similarity_mean_pools_any_model(tiny_policy, ctx):
    folder, _ = tiny_policy
    rows = pl.DataFrame(
        {
            "candidate_id": ["a", "b"],
            "prompt": ["my bill is wrong", "my router is slow"],
            "response": ["my bill is wrong", "thank you"],
            "task_type": ["billing", "troubleshooting"],
        }
    )
    lf = SimilarityLF(name="emb", backend="embedding", model=str(folder), high_above=0.999, low_below=-0.5)
    app = apply_all_lfs_with_scores(rows, [lf], ctx)
    cos = app.scores["emb"].to_numpy()
    assert cos[0] == pytest.approx(1.0, abs=1e-5) and -1 <= cos[1] < 0.999
    assert app.votes["emb"][0] == HIGH


# --- apply_all_lfs, the recipe section, the classifier ---------------------------------------------------------


def test_apply_all_lfs_keeps_order_and_scopes_model_functions():
    rows = candidates(6, 2)
    lfs = [
        SimilarityLF(name="sim", high_above=0.2, low_below=0.01, task_types=("billing",)),
        RegexLF(name="lumora", pattern="lumora", vote="high"),
    ]
    app = apply_all_lfs_with_scores(rows, lfs)
    assert app.votes.columns == ["candidate_id", "sim", "lumora"]
    billing = (rows["task_type"] == "billing").to_numpy()
    assert np.isnan(app.scores["sim"].to_numpy()[~billing]).all()
    assert (app.votes["sim"].to_numpy()[~billing] == ABSTAIN).all()
    assert app.votes["lumora"].equals(apply_lfs(rows, [lfs[1]])["lumora"])


def test_labeling_config_routes_model_kinds_and_checks_names():
    cfg = LabelingConfig.model_validate(
        {
            "functions": [
                {"name": "a", "kind": "regex", "pattern": "x", "vote": "high"},
                {"name": "s", "kind": "similarity", "high_above": 0.5},
            ],
            "model_functions": [{"name": "p", "kind": "perplexity", "low_above": 9}],
        }
    )
    assert [lf.name for lf in cfg.functions] == ["a"]
    assert [lf.name for lf in cfg.all_functions] == ["a", "s", "p"]
    assert LabelingConfig.model_validate(cfg.model_dump()) == cfg
    with pytest.raises(ValidationError, match="duplicate"):
        LabelingConfig.model_validate(
            {
                "functions": [{"name": "a", "kind": "regex", "pattern": "x", "vote": "high"}],
                "model_functions": [{"name": "a", "kind": "perplexity", "low_above": 9}],
            }
        )
    with pytest.raises(ValidationError, match="at least one"):
        LabelingConfig.model_validate({"functions": []})


def test_embedded_recipe_adds_model_functions_on_the_base_policy():
    r = load_recipe("embedded")
    kinds = {lf.kind: lf for lf in r.labeling.model_functions}
    assert {"llm_prompt", "perplexity"} <= set(kinds)
    assert all(lf.model == "base_policy" and lf.description for lf in kinds.values())
    assert len(r.labeling.functions) == 9  # the text patterns are unchanged


CLASSIFIER = TaskClassifier(
    keywords={
        "billing": (r"\bbill", r"\bcharged?\b", r"\brefund"),
        "troubleshooting": (r"\brouter\b", r"\bwifi\b", r"\bslow\b"),
        "complaint": (r"\bnobody\b", r"\bwaiting\b", r"\bhung up\b"),
    },
    default="general",
)


@pytest.mark.parametrize("method", ["majority", "label_model"])
def test_task_classifier_fills_missing_task_types(method):
    clf = CLASSIFIER.model_copy(update={"method": method})
    rows = pl.DataFrame(
        {
            "candidate_id": ["a", "b", "c", "d", "e"],
            "prompt": [
                "I was charged twice on my bill, refund please",
                "my router is slow and the wifi drops",
                "I have been waiting all week and nobody came",
                "hello there",
                "my router bill",
            ],
            "task_type": [None, "general", "", "general", "billing"],
            "response": ["refund"] * 5,
        }
    )
    out = classify_tasks(rows, clf)
    assert out["task_type"].to_list()[:4] == ["billing", "troubleshooting", "complaint", "general"]
    assert out["task_type_source"].to_list() == ["classifier", "classifier", "classifier", "default", "given"]
    scoped = RegexLF(name="billing_only", pattern="refund", vote="high", task_types=("billing",))
    assert apply_lfs(out, [scoped])["billing_only"].to_list() == [HIGH, ABSTAIN, ABSTAIN, ABSTAIN, HIGH]
    always = classify_tasks(rows, clf.model_copy(update={"fill": "always"}))
    assert always["task_type_source"][4] in {"classifier", "default"}
    assert "task_classifier" in lf_catalog([clf])["kind"].to_list()


def test_task_classifier_tags_an_untagged_prompts_file():
    from prefscale.data.prompts import load_prompts_file

    r = load_recipe("tests/fixtures/labeling/file_recipe.yaml")
    clf = r.labeling.task_classifier
    assert clf is not None and clf.method == "label_model"
    prompts = load_prompts_file(r.data.path)
    assert set(prompts["task_type"]) == {"general"}  # the file has no task types
    tagged = classify_tasks(prompts, clf, seed=r.seed)
    truth = domain.make_prompt_pool(120, 5)  # how the fixture file was made
    assert tagged["prompt"].to_list() == truth["prompt"].to_list()
    assert (tagged["task_type"] == truth["task_type"]).mean() > 0.85
    rows = tagged.with_columns(
        pl.format("c{}", pl.int_range(pl.len())).alias("candidate_id"), pl.lit("Thank you.").alias("response")
    )
    votes = apply_all_lfs(rows, r.labeling.all_functions)
    thanks = votes["thanks_in_complaints"].to_numpy()
    assert set(thanks[(tagged["task_type"] == "complaint").to_numpy()]) == {HIGH}
    assert set(thanks[(tagged["task_type"] != "complaint").to_numpy()]) == {ABSTAIN}


# --- analysis ------------------------------------------------------------------------------------------------


def test_lf_summary_equals_snorkel_lf_analysis_on_random_matrices():
    from snorkel.labeling import LFAnalysis

    rng = np.random.default_rng(0)
    for _ in range(50):
        n, m = int(rng.integers(1, 80)), int(rng.integers(1, 7))
        L = rng.choice([ABSTAIN, LOW, HIGH], size=(n, m), p=rng.dirichlet([1, 1, 1])).astype(np.int8)
        names = [f"lf{j}" for j in range(m)]
        votes = pl.DataFrame(
            {"candidate_id": [str(i) for i in range(n)], **{k: L[:, j] for j, k in enumerate(names)}}
        )
        ours = lf_summary(votes, names)
        ref = LFAnalysis(L.astype(int))
        assert ours["polarity"].to_list() == ref.lf_polarities()
        assert np.allclose(ours["coverage"], ref.lf_coverages())
        assert np.allclose(ours["overlaps"], ref.lf_overlaps())
        assert np.allclose(ours["conflicts"], ref.lf_conflicts())
        y = rng.integers(0, 2, n)
        gold = pl.DataFrame({"candidate_id": [str(i) for i in range(n)], "label": y})
        lfs = [RegexLF(name=k, pattern="x", vote="high") for k in names]
        acc = lf_analysis(votes, lfs, gold)["empirical_accuracy"].to_numpy()
        voted = (L != ABSTAIN).any(axis=0)
        assert np.allclose(acc[voted], ref.lf_empirical_accuracies(y)[voted])
        assert np.isnan(acc[~voted].astype(float)).all()  # Snorkel says 0 where it never voted; we say null


def test_lf_analysis_on_partial_gold_and_label_model_traceability():
    votes = pl.DataFrame(
        {"candidate_id": ["a", "b", "c", "d"], "x": [1, 0, -1, 1], "y": [1, 1, 0, -1], "z": [-1, -1, -1, -1]},
        schema_overrides={"x": pl.Int8, "y": pl.Int8, "z": pl.Int8},
    )
    lfs = [RegexLF(name=n, pattern="q", vote="high") for n in "xyz"]
    gold = pl.DataFrame({"candidate_id": ["a", "b", "c"], "label": [1, 0, 0]})
    a = lf_analysis(votes, lfs, gold, {"x": 0.9})
    assert a["n_gold"].to_list() == [3, 3, 3]
    assert a["gold_correct"].to_list() == [2, 2, 0] and a["gold_incorrect"].to_list() == [0, 1, 0]
    assert (
        a["empirical_accuracy"].to_list()[:2] == pytest.approx([1.0, 2 / 3])
        and a["empirical_accuracy"][2] is None
    )
    assert a["estimated_accuracy"].to_list() == [0.9, None, None]
    assert a["lf_version"].to_list() == [lf.version for lf in lfs]
    res = fit_label_model(votes, ["x", "y", "z"], n_epochs=20, versions={lf.name: lf.version for lf in lfs})
    assert res.labels["votes"][0] == f"x@{lfs[0].version}=high,y@{lfs[1].version}=high"
    m = gold_metrics(res.labels, gold)
    assert m["model"].to_list() == ["label_model", "majority_vote"]
    assert m["n_gold"].to_list() == [3, 3]
    mv = m.row(1, named=True)
    assert mv["n_predicted"] == 2  # row b ties (x low, y high): majority vote abstains
    assert mv["accuracy"] == pytest.approx(1.0)
