"""Online RL (GRPO, RLOO): the recipe's reward scoring completions, the trainers driven for a few steps through the
real TRL classes on the tiny policy, and the collapse check."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from safetensors.torch import load_file

from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.config.rewards import RewardConfig
from prefscale.config.training import OnlineSettings
from prefscale.labeling.label_model import fit_label_model, predict_p_high
from prefscale.labeling.pattern_kinds import LengthLF, RegexLF, RepetitionLF
from prefscale.rewards.online import OnlineReward, online_reward, repeats_a_line
from prefscale.training.checks import completions_healthy, pairs_health
from prefscale.training.online import build_online_config, prompt_records, train_online

LFS = (
    RegexLF(name="thanks", pattern=r"\bthank", vote="high"),
    RegexLF(name="blame", pattern=r"\bfault\b", vote="low"),
    RepetitionLF(name="repeats", min_line_chars=1, min_repeated_share=0.01, vote="low"),
    LengthLF(name="terse", min_words=4, vote="low"),
)
RESPONSES = [
    "Thank you for writing.",
    "It is your fault.",
    "Thank you.\nThank you.",
    "Sure.",
    "thank you, it is not your fault",
    "Here are the steps.",
    "Hi",
] * 10


def fitted_params() -> pl.DataFrame:
    from prefscale.labeling.apply import apply_lfs

    rows = pl.DataFrame(
        {
            "candidate_id": [str(i) for i in range(len(RESPONSES))],
            "response": RESPONSES,
            "task_type": "billing",
        }
    )
    votes = apply_lfs(rows, LFS)
    res = fit_label_model(votes, [lf.name for lf in LFS], seed=0, n_epochs=50)
    assert np.allclose(predict_p_high(res.params, votes), res.labels["p_high"].to_numpy(), atol=1e-6)
    return res.params


def test_predict_p_high_matches_snorkel_on_new_rows_and_abstains_to_the_prior():
    from prefscale.labeling.apply import apply_lfs

    params = fitted_params()
    rows = pl.DataFrame(
        {
            "candidate_id": ["a", "b", "c"],
            "response": [
                "Thank you for your patience today.",
                "This is all your fault, sorry.",
                "ok fine then sure",
            ],
        }
    )
    p = predict_p_high(params, apply_lfs(rows.with_columns(task_type=pl.lit("x")), LFS))
    assert p[0] > 0.5 > p[1]
    assert p[2] == pytest.approx(float(params["unlabelled_p_high"][0]))  # no LF voted
    with pytest.raises(ValueError, match="lack the label model's functions"):
        predict_p_high(params, pl.DataFrame({"candidate_id": ["a"], "thanks": [1]}))


def test_online_reward_scores_completions_and_records_their_health():
    reward = online_reward(RewardConfig(), LFS, label_model_params=fitted_params())
    prompts = [[{"role": "user", "content": "my bill is wrong"}]] * 4
    completions = [[{"role": "assistant", "content": t}] for t in ("Thank you.", "your fault", "a\na", "")]
    ids = [[1] * 5, [1] * 5, [1] * 128, [1]]  # the third ran into the token limit
    out = reward(prompts, completions, completion_ids=ids, prompt_id=["p"] * 4, task_type=["billing"] * 4)
    assert len(out) == 4 and out[0] > out[1]
    (row,) = reward.history
    assert row["step"] == 1 and row["truncated_share"] == 0.25
    assert row["repeated_line_share"] == 0.25 and row["empty_share"] == 0.25
    assert reward.__name__ == "prefscale_reward"


def test_online_reward_refuses_what_cannot_score_online():
    with pytest.raises(ValueError, match="cannot score online"):
        online_reward(RewardConfig(source="pairrm"), LFS, label_model_params=fitted_params())
    with pytest.raises(ValueError, match="fitted label model"):
        online_reward(RewardConfig(), LFS)
    with pytest.raises(ValueError, match="reward model folder"):
        online_reward(RewardConfig(source="reward_model"), LFS)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"training": {"method": "ppo"}}, "training.method"),
        ({"training": {"method": "grpo"}, "online": {"num_generations": 1}}, "online.num_generations"),
        ({"online": {"per_device_train_batch_size": 30}}, "num_generations"),
        ({"training": {"method": "rloo"}, "reward": {"source": "pairrm"}}, "reward.sources"),
        ({"online": {"loss_type": "ppo"}}, "online.loss_type"),
    ],
)
def test_bad_online_settings_fail_at_recipe_load_naming_the_key(overrides, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe("embedded", overrides)


def test_the_grpo_recipe_loads():
    r = load_recipe("embedded-grpo")
    assert r.training.method == "grpo" and r.online.num_generations == 8


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_config_maps_the_recipe_one_to_one(tmp_path, cpu, method):
    s = OnlineSettings(beta=0.2, num_generations=4, per_device_train_batch_size=8, max_steps=3, top_p=0.9)
    args = build_online_config(method, s, tmp_path, cpu, seed=5)
    assert (args.beta, args.num_generations, args.max_steps, args.top_p) == (0.2, 4, 3, 0.9)
    assert args.mask_truncated_completions and args.seed == 5 and args.use_cpu
    if method == "grpo":
        assert args.scale_rewards == "group" and args.loss_type == "dapo"
    else:
        assert args.normalize_advantages is False
    with pytest.raises(ValueError, match="unknown online method"):
        build_online_config("ppo", s, tmp_path, cpu, seed=5)


def test_prompt_records_carry_what_the_lfs_read():
    rows = pl.DataFrame({"prompt_id": ["p1"], "prompt": ["hello"], "task_type": ["billing"]})
    (rec,) = prompt_records(rows, system="Be brief.")
    assert rec["prompt"][0] == {"role": "system", "content": "Be brief."} and rec["task_type"] == "billing"
    with pytest.raises(ValueError, match="no prompts"):
        prompt_records(rows.clear())


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_trainers_run_a_few_steps_through_trl(tiny_policy, tmp_path, cpu, method):
    base, _ = tiny_policy
    prompts = pl.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(4)],
            "prompt": [f"my router is slow ({i}). what should i do?" for i in range(4)],
            "task_type": ["troubleshooting"] * 4,
        }
    )
    settings = OnlineSettings(
        num_generations=4, per_device_train_batch_size=8, max_steps=2, max_completion_length=16, save_steps=1
    )
    reward = online_reward(RewardConfig(), LFS, label_model_params=fitted_params())
    out = tmp_path / "out"
    report = train_online(method, base, prompts, reward, settings, out, tmp_path / "work", cpu, seed=0)
    assert report.steps == 2 and len(report.history) == 2
    assert reward.calls == 2  # one generation batch per step, each scored by the recipe's reward
    for row in report.history:
        assert {"reward", "kl", "completions/mean_length", "completions/repeated_line_share"} <= set(row)
    assert (out / "config.json").is_file() and (out / "adapter").is_dir()
    trained = load_file(str(out / "model.safetensors"))
    original = load_file(str(base / "model.safetensors"))
    assert any(not (trained[k] == original[k]).all() for k in original)  # the LoRA update was merged in
    # resumable: the trainer checkpoints are in the work dir
    assert (tmp_path / "work" / "checkpoint-2" / "trainer_state.json").is_file()


def test_completions_healthy_fails_a_collapsed_run_and_passes_a_healthy_one():
    healthy = [
        {
            "completions/empty_share": 0.0,
            "completions/repeated_line_share": 0.1,
            "completions/clipped_ratio": 0.2,
        }
    ]
    assert completions_healthy(healthy * 6).ok
    collapsed = [{**healthy[0], "completions/clipped_ratio": 0.9}] * 5
    check = completions_healthy(healthy * 3 + collapsed)
    assert not check.ok and "cut off at max_completion_length" in check.error
    assert check.metadata()["clipped_ratio"] == 0.9
    assert not completions_healthy([]).ok  # nothing logged is no evidence of health


def test_pairs_health_reads_the_chosen_replies():
    pairs = pl.DataFrame(
        {"chosen": [[{"role": "assistant", "content": "a\na"}], [{"role": "assistant", "content": "b"}]]}
    )
    (row,) = pairs_health(pairs)
    assert row["completions/repeated_line_share"] == 0.5 and "completions/clipped_ratio" not in row
    assert completions_healthy([row]).ok
    assert repeats_a_line("Hi\n\nhi ") and not repeats_a_line("Hi\nthere")


def test_online_reward_is_a_trl_reward_function():
    reward = OnlineReward((), None)  # type: ignore[arg-type]
    assert callable(reward) and reward.__name__ == "prefscale_reward"


def test_progress_is_quiet_inside_quiet(caplog):
    from prefscale.progress import Progress, quiet

    with caplog.at_level("INFO", logger="prefscale.progress"):
        with quiet():
            Progress("LF x", 10, "rows").advance(10)
        assert not caplog.records
        Progress("LF y", 10, "rows").advance(10)
        assert [r.getMessage().split()[1] for r in caplog.records] == ["y", "y"]


def test_train_online_cli_names_the_bad_input_before_loading_a_model(tiny_policy, tmp_path, capsys):
    from prefscale.cli import main

    base, _ = tiny_policy
    prompts = tmp_path / "prompts.parquet"
    pl.DataFrame({"prompt_id": ["p"], "prompt": ["hi"]}).write_parquet(prompts)
    bad_params = tmp_path / "params.parquet"
    pl.DataFrame({"lf_name": ["x"]}).write_parquet(bad_params)
    common = ["train-online", "--method", "grpo", "--out", str(tmp_path / "out"), "--recipe", "embedded-grpo"]
    cases = [
        (["--policy", str(tmp_path), "--prompts", str(prompts)], "--policy"),
        (["--policy", str(base), "--prompts", str(tmp_path / "none.parquet")], "--prompts"),
        (
            ["--policy", str(base), "--prompts", str(prompts), "--label-model", str(bad_params)],
            "--label-model",
        ),
        (["--policy", str(base), "--prompts", str(prompts)], "fitted label model"),
    ]
    for extra, named in cases:
        assert main([*common, *extra]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
