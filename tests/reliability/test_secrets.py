"""Secrets stay secret: a key in the environment (OPENAI_API_KEY, set for every run of `faulted_home`, killed
ones included) and an endpoint's `api_key_env` key appear in no artifact, manifest, log, MLflow param or tag
(the MLflow store is a file under the home) or Dagster event."""

from __future__ import annotations

import json
import uuid

import dagster as dg

from prefscale.config.recipe import deep_merge
from resources import RecipeResource
from tests.fake_openai_server import FakeServer
from tests.integration.conftest import SMALL
from tests.reliability.conftest import OVERRIDES, SECRET

ENDPOINT_KEY = f"ek-reliability-{uuid.uuid4().hex}"


def _leaks(home, needles: list[str]) -> list[str]:
    found = []
    for p in home.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            found += [f"{p}: {n[:16]}..." for n in needles if n.encode() in data]
    return found


def _event_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(repr(e) for e in result.all_events)


def test_no_secret_in_any_artifact_log_mlflow_record_or_event(faulted_home, monkeypatch):
    monkeypatch.setenv("RELIABILITY_ENDPOINT_KEY", ENDPOINT_KEY)
    assert faulted_home.materialize(["prompts"], "2").success
    server = FakeServer("ok")
    try:
        endpoint = {
            "base_url": server.url,
            "model": "policy",
            "api_key_env": "RELIABILITY_ENDPOINT_KEY",
            "max_retries": 1,
            "backoff_s": 0.01,
        }
        overrides = deep_merge(
            deep_merge(SMALL, OVERRIDES), {"generation": {"backend": "endpoint", "endpoint": endpoint}}
        )
        resources = {
            **faulted_home.resources,
            "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(overrides)),
        }
        result = dg.materialize(
            faulted_home.assets,
            selection=dg.AssetSelection.assets("candidates"),
            partition_key="2",
            resources=resources,
        )
    finally:
        server.close()
    assert result.success
    assert any(h.get("Authorization") == f"Bearer {ENDPOINT_KEY}" for h in server.headers)  # the key was used
    needles = [SECRET, ENDPOINT_KEY]
    assert _leaks(faulted_home.home, needles) == []
    texts = [k.log for k in faulted_home.kills.values()]
    texts += [_event_text(r) for r in [*faulted_home.results, result]]
    assert [n for n in needles for t in texts if n in t] == []
