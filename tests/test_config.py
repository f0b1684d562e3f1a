"""Config and desired-manifest validation: every error names the file and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cqdeploy.config import Provider, load_config, pick_provider
from cqdeploy.errors import ConfigError, InvalidInput
from cqdeploy.manifest import check_commit, load_manifest, one_service


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[services.code-queue]\ncommit = "abc1234"\n', r"services\.code-queue\.repo: required"),
        (
            '[services.code-queue]\nrepo = "/r"\n',
            r"services\.code-queue: set exactly one of commit or branch",
        ),
        (
            '[services.code-queue]\nrepo = "/r"\ncommit = "xyz"\n',
            r"services\.code-queue\.commit: invalid commit",
        ),
        ('[services.code-queue]\nrepo = "/r"\nbranch = "-x"\n', r"services\.code-queue\.branch"),
        ('[services.code-queue]\nrepo = "-oProxy=x"\ncommit = "abc1234"\n', r"\.repo"),
        (
            '[services.code-queue]\nrepo = "https://u:tok@h/r"\ncommit = "abc1234"\n',
            r"\.repo: holds a password",
        ),
        ('[services.code-queue]\nrepo = "/r"\ncommit = "abc1234"\ncolour = 1\n', r"\.colour: unknown field"),
        ('[services.other]\nrepo = "/r"\ncommit = "abc1234"\n', r"services\.other: unknown service"),
        ("[services]\n", r"services: must be a table with at least one service"),
        ("services = [", r"not valid TOML"),
    ],
)
def test_manifest_errors_name_the_file_and_field(tmp_path: Path, body: str, message: str):
    path = write(tmp_path, "manifest.toml", body)
    with pytest.raises(ConfigError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_a_valid_manifest_and_its_digest(tmp_path: Path):
    path = write(tmp_path, "m.toml", '[services.code-queue]\nrepo = "/srv/r.git"\nbranch = "main"\n')
    m = load_manifest(path)
    d = m.service("code-queue")
    assert (d.repo, d.branch, d.commit, d.provider, d.requested) == (
        "/srv/r.git",
        "main",
        None,
        "D601",
        "branch:main",
    )
    assert m.digest.startswith("sha256:") and len(m.digest) == 71


def test_codex_manifest_holds_only_the_service_repo_and_commit(tmp_path: Path):
    base = load_manifest(write(tmp_path, "m.toml", '[services.code-queue]\nrepo = "/srv/r.git"\nbranch = "main"\n'))
    m = one_service(base, "code-queue", "abc1234", "D601", None)
    assert m.as_data()["services"] == {"code-queue": {"repo": "/srv/r.git", "commit": "abc1234", "provider": "D601"}}
    with pytest.raises(ConfigError, match="no repo known for code-queue"):
        one_service(None, "code-queue", "abc1234", "D601", None)


@pytest.mark.parametrize("commit", ["abc123", "g" * 7, "a" * 41, "abc 1234", "", "HEAD", "abc1234;rm"])
def test_commit_ids_must_be_7_to_40_hex(commit: str):
    with pytest.raises(InvalidInput, match="expected 7-40 hex"):
        check_commit(commit)


def test_commit_ids_are_lower_cased():
    assert check_commit("ABCDEF1") == "abcdef1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[providers.D601]\ntransport = "telnet"\n', r"providers\.D601\.transport"),
        ('[providers.D601]\ndeploy_dir = "relative"\n', r"providers\.D601\.deploy_dir"),
        ('[providers.D601]\ntmp_dir = "/a/../etc"\n', r"providers\.D601\.tmp_dir"),
        ('[providers.D601]\nbuild_proxy = "socks5://u:hunter2@h"\n', r"providers\.D601\.build_proxy"),
        ('[providers.D601]\nnamespace = "Bad_NS"\n', r"providers\.D601\.namespace"),
        ("[providers.D601]\nwho = 1\n", r"providers\.D601\.who: unknown field"),
    ],
)
def test_config_errors_name_the_field_and_never_echo_a_proxy(tmp_path: Path, body: str, message: str):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, "config.toml", body))
    assert "hunter2" not in str(info.value)


def test_unknown_and_inactive_providers_are_refused_naming_the_active_ones():
    providers = {"D601": Provider(id="D601"), "D700": Provider(id="D700", active=False)}
    assert pick_provider(providers, "D601").id == "D601"
    with pytest.raises(InvalidInput, match=r"provider 'D9' is unknown; active providers: D601"):
        pick_provider(providers, "D9")
    with pytest.raises(InvalidInput, match=r"provider 'D700' is inactive; active providers: D601"):
        pick_provider(providers, "D700")


def test_proxy_secrets_include_the_password():
    p = Provider(id="D601", build_proxy="http://u:pw123@127.0.0.1:1")
    assert "pw123" in p.secrets() and p.build_proxy in p.secrets()
    assert "pw123" not in repr(p)
