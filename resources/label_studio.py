"""`LabelStudioResource`: the annotation tool SMEs rank candidates and vote in (Label Studio)."""

from __future__ import annotations

import os

import dagster as dg

from prefscale.annotation.label_studio import LabelStudio, check_url
from prefscale.annotation.pairwise import PAIRWISE_PROJECT
from prefscale.annotation.ranking import RANKING_PROJECT

DEFAULT_URL = "http://127.0.0.1:8080"


class LabelStudioResource(dg.ConfigurableResource):
    """A Label Studio server: `url` (default LABEL_STUDIO_URL, else http://127.0.0.1:8080, where `make annotate`
    serves) and the API key, read from the environment variable `api_key_env` when used, so it is never part of
    the resource's config, the UI or a log. Configured when that variable is set."""

    url: str = ""
    api_key_env: str = "LABEL_STUDIO_API_KEY"
    ranking_project: str = RANKING_PROJECT
    evaluation_project: str = PAIRWISE_PROJECT

    @property
    def address(self) -> str:
        return check_url(self.url or os.environ.get("LABEL_STUDIO_URL") or DEFAULT_URL)

    @property
    def configured(self) -> bool:
        return bool(os.environ.get(self.api_key_env, "").strip())

    def client(self) -> LabelStudio:
        """A client; fails naming the variable when no key is set."""
        key = os.environ.get(self.api_key_env, "")
        if not key.strip():
            raise dg.Failure(
                description=f"no Label Studio API key: set {self.api_key_env} (its personal access token; "
                "`make annotate` writes one to PREFSCALE_HOME/label-studio/api-key)"
            )
        return LabelStudio(self.address, key)
