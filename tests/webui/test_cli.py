"""`verge users ...` and `verge web`, registered on the verge command line."""
from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.fixture
def run(web_settings):
    from verge import cli, clikit

    clikit.load_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli.main, list(args), input=input,
                             env={"VERGE_DATA_DIR": str(web_settings.data_dir)})
    yield invoke
    clikit.load_settings.cache_clear()


def test_users_add_token_and_list(run, app):
    r = run("users", "add", "ada", "--role", "admin", "--password-stdin", input="a fine password\n")
    assert r.exit_code == 0, r.output
    assert "added admin ada" in r.output
    r = run("users", "add", "ada", "--password-stdin", input="another password\n")
    assert r.exit_code == 1 and "already exists" in r.output
    r = run("users", "add", "bob", "--password-stdin", input="short\n")
    assert r.exit_code == 1 and "at least 8 characters" in r.output
    r = run("users", "add", "carl", input="prompted pw\nprompted pw\n")
    assert r.exit_code == 0, r.output
    r = run("users", "token", "ada")
    assert r.exit_code == 0
    token = r.stdout.strip().splitlines()[0]
    assert token.startswith("vrg_")
    c = app.test_client()
    assert c.get("/api/v1/labels", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert run("users", "token", "nobody").exit_code == 1
    listing = run("users", "list").output
    assert "ada" in listing and "admin" in listing and "carl" in listing
    # the password works in the login form, and can be changed
    from .conftest import login

    assert login(app, "carl", "prompted pw").get("/review").status_code == 200
    assert run("users", "passwd", "carl", "--password-stdin", input="a newer password\n").exit_code == 0
    assert login(app, "carl", "a newer password").get("/review").status_code == 200
    assert run("users", "passwd", "nobody", "--password-stdin", input="a newer password\n").exit_code == 1


def test_web_is_a_verge_command(run):
    r = run("web", "--help")
    assert r.exit_code == 0 and "--host" in r.output and "--port" in r.output
