"""The command line's refusals: one line on stderr, a distinct exit code, no job, nothing sent."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cqdeploy.cli import cli

HEX = "0123456789abcdef0123456789abcdef01234567"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_nothing_happened(ws, sandbox) -> None:
    with ws.journal() as j:
        assert j.streams() == []
    assert sandbox.counters() == {}
    assert list((sandbox.target / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["codex", "deploy", "abc12"], 2, "invalid commit id 'abc12': expected 7-40 hex characters"),
        (["codex", "deploy", "z" * 8], 2, "expected 7-40 hex"),
        (["codex", "deploy", "a" * 41], 2, "expected 7-40 hex"),
        (["codex", "deploy", "$(reboot)"], 2, "expected 7-40 hex"),
        (["codex", "deploy", HEX, "--skip-build"], 2, "no longer supported: the target-side Docker build is mandatory"),
        (["codex", "deploy", HEX, "--provider-id", "D999"], 2, "provider 'D999' is unknown; active providers: D601"),
        (["deploy", "apply", "--service", "nope"], 2, "no service 'nope'"),
        (
            ["deploy", "apply", "--service", "code-queue", "--manifest", "/nonexistent.toml"],
            3,
            "desired manifest not found",
        ),
        (["codex", "deploy", HEX, "--timeout-ms", "5"], 2, "Invalid value for '--timeout-ms'"),
    ],
)
def test_bad_input_is_refused_with_no_job_and_nothing_sent(ws, sandbox, args, code, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert len([x for x in result.output.splitlines() if x.startswith("error:")]) <= 1
    assert_nothing_happened(ws, sandbox)


def test_an_inactive_provider_is_refused(ws, sandbox):
    config = ws.config_path.read_text().replace('transport = "local"', 'transport = "local"\nactive = false')
    ws.config_path.write_text(config)
    result = CliRunner().invoke(cli, ["codex", "deploy", HEX])
    assert result.exit_code == 2
    assert "provider 'D601' is inactive; active providers: none" in result.output
    assert_nothing_happened(ws, sandbox)


def test_no_config_at_all_says_how_to_start(ws):
    ws.manifest_path.write_text('[services.code-queue]\nrepo = "/srv/r.git"\nbranch = "main"\n')
    result = CliRunner().invoke(cli, ["codex", "deploy", HEX])
    assert result.exit_code == 2
    assert "run `cqdeploy demo` or edit config.toml" in result.output


def test_unknown_job_is_a_clear_error(ws):
    for args in (["job", "status", "cq-nope"], ["job", "resume", "cq-nope"], ["journal", "verify", "cq-nope"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 4, args
        assert "no job 'cq-nope'" in result.output


def test_journal_verify_exits_non_zero_naming_file_line_and_seq(ws):
    with ws.journal() as j:
        j.append("cq-x", 0, "job.created", {"service": "code-queue"})
        j.append("cq-x", 1, "runner.started", {"pid": 1})
        path = j.mirror_path("cq-x")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace('"pid":1', '"pid":2'))
    result = CliRunner().invoke(cli, ["journal", "verify"])
    assert result.exit_code == 7
    assert f"{path}:2: seq 2: differs from SQLite (edited)" in result.output
    ok = CliRunner().invoke(cli, ["journal", "verify", "cq-x"])
    assert ok.exit_code == 7


def test_job_list_on_an_empty_workspace(ws):
    assert run("job", "list").output.strip() == "no jobs yet"
    assert json.loads(run("job", "list", "--json").output) == []


def every_command(group=cli, prefix=()):
    import click

    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from every_command(command, path)


@pytest.mark.parametrize(
    ("path", "command"), list(every_command()), ids=lambda x: " ".join(x) if isinstance(x, tuple) else ""
)
def test_every_command_has_help(path, command):
    assert command.help or command.short_help, f"cqdeploy {' '.join(path)} has no help"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_the_readme_shows_every_command():
    from pathlib import Path

    import click

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for path, command in every_command():
        if not isinstance(command, click.Group):
            assert f"cqdeploy {' '.join(path)}" in readme, f"README lacks cqdeploy {' '.join(path)}"
