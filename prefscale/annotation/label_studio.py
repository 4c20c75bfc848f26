"""A small Label Studio REST client: projects, task import, tasks with their annotations, users.

Authentication takes the key a user copies from Label Studio's *Account & Settings*: a personal access token (a
JWT refresh token, exchanged for short-lived access tokens at `/api/token/refresh/`) or a legacy token (sent as
`Authorization: Token …`). The key is kept out of `repr`, errors and logs: an error names the method, the path and
Label Studio's own message, never a header.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import requests

PAGE_SIZE = 100
KEY_FIELD = "prefscale_key"  # the task data field that makes a push idempotent


class LabelStudioError(RuntimeError):
    """Label Studio refused a request or could not be reached."""


def check_url(url: str) -> str:
    """`url` without a trailing slash, or a `ValueError` naming it when it is not an http(s) address."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"Label Studio URL must be http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


def _is_jwt(key: str) -> bool:
    return key.count(".") == 2 and len(key) > 40


class LabelStudio:
    """One Label Studio server, as one user (the key's owner)."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("Label Studio API key is empty (set LABEL_STUDIO_API_KEY)")
        self.url = check_url(url)
        self._key = api_key.strip()
        self.timeout = timeout
        self._session = requests.Session()
        self._access: tuple[str, float] | None = None  # (JWT access token, monotonic expiry)
        self._users: dict[int, str] | None = None

    def __repr__(self) -> str:
        return f"LabelStudio({self.url!r}, api_key=<hidden>)"

    # -- transport
    def _auth(self) -> str:
        if not _is_jwt(self._key):
            return f"Token {self._key}"
        if self._access is None or time.monotonic() > self._access[1]:
            data = self._send("POST", "/api/token/refresh/", auth=None, json={"refresh": self._key})
            self._access = (data["access"], time.monotonic() + 240)  # access tokens live 5 minutes
        return f"Bearer {self._access[0]}"

    def _send(self, method: str, path: str, *, auth: str | None, **kw: Any) -> Any:
        headers = {"Authorization": auth} if auth else {}
        try:
            r = self._session.request(method, self.url + path, headers=headers, timeout=self.timeout, **kw)
        except requests.RequestException as e:
            raise LabelStudioError(
                f"Label Studio at {self.url} is not reachable ({type(e).__name__})"
            ) from None
        if r.status_code >= 400:
            try:
                detail = r.json()
                detail = detail.get("validation_errors") or detail.get("detail") or detail
            except ValueError:
                detail = r.text[:200]
            hint = " (check LABEL_STUDIO_API_KEY)" if r.status_code in (401, 403) else ""
            raise LabelStudioError(f"{method} {path}: HTTP {r.status_code}: {detail}{hint}")
        return r.json() if r.content else None

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One authenticated request; the decoded JSON answer."""
        return self._send(method, path, auth=self._auth(), **kw)

    # -- projects
    def projects(self) -> list[dict[str, Any]]:
        """Every project the user sees."""
        out, page = [], 1
        while True:
            data = self.request("GET", "/api/projects", params={"page": page, "page_size": PAGE_SIZE})
            rows = data["results"] if isinstance(data, dict) else data
            out += rows
            if not isinstance(data, dict) or not data.get("next"):
                return out
            page += 1

    def ensure_project(self, title: str, label_config: str, description: str = "") -> int:
        """The id of the project called `title`, created with `label_config` when missing; an existing project's
        interface is updated when it differs (tasks and annotations are kept)."""
        for p in self.projects():
            if p.get("title") == title:
                if p.get("label_config") != label_config:
                    self.request("PATCH", f"/api/projects/{p['id']}", json={"label_config": label_config})
                return int(p["id"])
        made = self.request(
            "POST",
            "/api/projects",
            json={"title": title, "label_config": label_config, "description": description},
        )
        return int(made["id"])

    # -- tasks and annotations
    def tasks(self, project: int) -> Iterator[dict[str, Any]]:
        """The project's tasks with their annotations (`fields=all`), page by page."""
        page = 1
        while True:
            try:
                data = self.request(
                    "GET",
                    "/api/tasks",
                    params={"project": project, "fields": "all", "page": page, "page_size": PAGE_SIZE},
                )
            except LabelStudioError as e:
                if "HTTP 404" in str(e) and page > 1:  # past the last page
                    return
                raise
            rows = data.get("tasks", [])
            yield from rows
            if len(rows) < PAGE_SIZE or page * PAGE_SIZE >= int(data.get("total", 0)):
                return
            page += 1

    def task_keys(self, project: int) -> set[str]:
        """The `prefscale_key` of every task already in the project."""
        return {str(t["data"][KEY_FIELD]) for t in self.tasks(project) if KEY_FIELD in (t.get("data") or {})}

    def import_tasks(self, project: int, tasks: Sequence[dict[str, Any]]) -> int:
        """Add tasks (each `{"data": {...}}`); returns how many Label Studio created."""
        if not tasks:
            return 0
        data = self.request("POST", f"/api/projects/{project}/import", json=list(tasks))
        return int(data.get("task_count", len(tasks)))

    def push_new(self, project: int, tasks: Sequence[dict[str, Any]]) -> list[str]:
        """Import only the tasks whose `prefscale_key` the project lacks; the keys imported."""
        seen = self.task_keys(project)
        new = []
        for t in tasks:
            key = str(t["data"][KEY_FIELD])
            if key not in seen:
                seen.add(key)
                new.append(t)
        self.import_tasks(project, new)
        return [str(t["data"][KEY_FIELD]) for t in new]

    def annotate(self, task: int, result: list[dict[str, Any]]) -> int:
        """Submit an annotation to a task as the key's user (what the labeling screen does); its id."""
        return int(self.request("POST", f"/api/tasks/{task}/annotations", json={"result": result})["id"])

    def users(self) -> dict[int, str]:
        """User id → e-mail (annotators are recorded by e-mail, which SMEs recognise)."""
        if self._users is None:
            rows = self.request("GET", "/api/users")
            rows = rows["results"] if isinstance(rows, dict) else rows
            self._users = {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in rows}
        return self._users
