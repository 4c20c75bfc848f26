"""A local Label Studio server for SMEs: started from its own virtualenv, bound to 127.0.0.1, data under
PREFSCALE_HOME, and its first personal access token.

Label Studio's dependencies (Django, its own pins) would clash with the project's, so it lives in its own
virtualenv (`make annotate` builds `.venv-label-studio` from `deploy/label-studio.txt`). The server binds to
127.0.0.1 unless `host` says otherwise. Its output goes to a log file with every token-looking value redacted
(Label Studio prints the admin user's legacy token when it creates the user).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from prefscale.annotation.label_studio import check_url

SERVER_DIR = "label-studio"  # under PREFSCALE_HOME: the database, media, log and the credentials
CREDENTIALS = "credentials"  # e-mail and password of the SME admin user (mode 0600)
API_KEY_FILE = "api-key"  # the personal access token prefscale uses (mode 0600)
DEFAULT_USER = "sme@prefscale.local"
_SECRET = re.compile(r"""(?i)(['"]?(?:token|password|key|secret)['"]?\s*[:=]\s*)(['"]?)[^'",\s}]+""")


def redact(line: str) -> str:
    """`line` with the value of anything named token, password, key or secret replaced by ***."""
    return _SECRET.sub(r"\1\2***", line)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def credentials(folder: Path) -> tuple[str, str]:
    """The SME admin user's (e-mail, password): read from `folder`, or made (a random password) and kept there."""
    path = folder / CREDENTIALS
    if path.is_file():
        user, _, password = path.read_text().strip().partition("\n")
        if user and password:
            return user, password
    folder.mkdir(parents=True, exist_ok=True)
    user, password = DEFAULT_USER, secrets.token_urlsafe(18)
    _private_write(path, f"{user}\n{password}\n")
    return user, password


@dataclass
class Server:
    """A running Label Studio: its process, address and log."""

    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _pump(stream, log: Path) -> None:
    with log.open("a", encoding="utf-8") as f:
        for line in iter(stream.readline, ""):
            f.write(redact(line))
            f.flush()


def start(
    executable: Path, folder: Path, *, port: int, host: str = "127.0.0.1", timeout: float = 600.0
) -> Server:
    """Start `label-studio` (`executable`) with its data in `folder`, listening on host:port, the SME admin user
    created from `credentials(folder)`; returns once it answers /health (first start migrates its database:
    about two minutes on 2 cores). Fails naming the log when it exits or does not answer in `timeout` s."""
    if not executable.is_file():
        raise FileNotFoundError(
            f"no Label Studio at {executable}: run `make annotate-install` (its own virtualenv)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    user, password = credentials(folder)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(folder),
        "LABEL_STUDIO_USERNAME": user,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "PYTHONUNBUFFERED": "1",
    }
    log = folder / "server.log"
    cmd = [str(executable), "start", "--no-browser", "--internal-host", host, "--port", str(port)]
    cmd += ["--host", f"http://{host}:{port}", "--data-dir", str(folder)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True).start()
    server = Server(proc, f"http://{host}:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Label Studio exited with code {proc.returncode}; see {log}")
        try:
            if requests.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(1.0)
    server.stop()
    raise TimeoutError(f"Label Studio did not answer on {server.url} within {timeout:.0f} s; see {log}")


def personal_access_token(url: str, user: str, password: str) -> str:
    """A new personal access token for `user`: signs in as a browser does, then asks /api/token/ for one."""
    url = check_url(url)
    s = requests.Session()
    s.get(f"{url}/user/login/", timeout=30)
    r = s.post(
        f"{url}/user/login/",
        data={"email": user, "password": password, "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
        headers={"Referer": f"{url}/user/login/"},
        timeout=30,
    )
    if r.status_code >= 400 or "sessionid" not in s.cookies:
        raise RuntimeError(f"could not sign in to Label Studio at {url} as {user} (HTTP {r.status_code})")
    r = s.post(
        f"{url}/api/token/",
        headers={"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": f"{url}/"},
        timeout=30,
    )
    if r.status_code >= 400:
        raise RuntimeError(f"Label Studio at {url} gave no access token (HTTP {r.status_code})")
    return str(r.json()["token"])


def api_key(folder: Path, url: str) -> str:
    """The API key kept in `folder` (mode 0600), made on first use from the SME admin user."""
    path = folder / API_KEY_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    user, password = credentials(folder)
    key = personal_access_token(url, user, password)
    _private_write(path, key + "\n")
    return key
