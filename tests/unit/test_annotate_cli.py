"""`prefscale annotate`'s input checks (no server is started: each case fails before Label Studio would)."""

from __future__ import annotations

import pytest

from prefscale.cli import main


@pytest.mark.parametrize(
    ("args", "rc", "message"),
    [
        (["--port", "70000"], 2, "--port must be 1..65535"),
        (["--recipe", "no-such-recipe"], 2, "--recipe no-such-recipe"),
        (["--label-studio", "/nonexistent/label-studio"], 1, "no Label Studio at /nonexistent/label-studio"),
    ],
)
def test_annotate_rejects_bad_input(args, rc, message, tmp_path, capsys):
    assert main(["annotate", "--home", str(tmp_path), *args]) == rc
    assert message in capsys.readouterr().err
    assert not (tmp_path / "label-studio" / "api-key").exists()
