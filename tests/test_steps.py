"""Each step's exact command, pinned table-style: the commands are the contract with D601."""

from __future__ import annotations

import shlex

import pytest

from cqdeploy.config import Provider
from cqdeploy.manifest import Desired
from cqdeploy.steps import PRESERVED, JobContext, command_for

SHA = "0123456789abcdef0123456789abcdef01234567"
PROXY = "http://user:s3cret@127.0.0.1:7890"


def ctx(resolved: str | None = SHA, **provider) -> JobContext:
    p = Provider(id="D601", build_proxy=PROXY, **provider)
    d = Desired("code-queue", "https://git.example.com/unidesk.git", "D601", commit="abc1234")
    return JobContext("cq-1", d, p, resolved, 900)


EXPECTED = {
    "rsync": (
        "set -euo pipefail\n"
        "mkdir -p /home/ubuntu/cq-deploy\n"
        "rsync -a --delete --exclude=/.state/ --exclude=/logs/ --exclude=/.git/ "
        "--exclude=/node_modules/ --exclude=/dist/ /tmp/cqdeploy-export-cq-1/ /home/ubuntu/cq-deploy/\n"
        "rm -rf /tmp/cqdeploy-export-cq-1\n"
    ),
    "build": (
        "set -euo pipefail\n"
        "cd /home/ubuntu/cq-deploy\n"
        "docker build --network host --build-arg HTTP_PROXY --build-arg HTTPS_PROXY "
        "--build-arg http_proxy --build-arg https_proxy "
        f"--label cqdeploy.commit={SHA} -t unidesk-code-queue:d601 .\n"
    ),
    "import": (
        "set -euo pipefail\n"
        "docker save unidesk-code-queue:d601 | "
        "docker exec -i unidesk-v8s-server ctr -n k8s.io images import -\n"
    ),
    "apply": (
        "set -euo pipefail\n"
        "cd /home/ubuntu/cq-deploy\n"
        "kubectl apply -f src/components/microservices/v3sctl-adapter/v3s/code-queue.k8s.yaml\n"
    ),
    "pin": (
        "set -euo pipefail\n"
        f"kubectl -n unidesk set env deployment/code-queue CODE_QUEUE_DEPLOY_COMMIT={SHA} "
        "CODE_QUEUE_DEPLOY_REQUESTED_COMMIT=abc1234\n"
        f"kubectl -n unidesk annotate --overwrite deployment/code-queue cqdeploy.unidesk.io/commit={SHA} "
        "cqdeploy.unidesk.io/requested-commit=abc1234 cqdeploy.unidesk.io/job=cq-1\n"
    ),
    "restart": (
        "set -euo pipefail\n"
        "issued=1\n"
        "for d in deployment/d601-tcp-egress-gateway deployment/code-queue; do\n"
        '  IFS="|" read -r by at now <<< "$(kubectl -n unidesk get "$d" -o jsonpath='
        "'{.metadata.annotations.cqdeploy\\.unidesk\\.io/restarted-by}"
        "|{.metadata.annotations.cqdeploy\\.unidesk\\.io/restarted-at}"
        "|{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}')\"\n"
        '  if [ "$by" != cq-1 ] || [ -z "$at" ] || [ "$at" != "$now" ]; then issued=0; fi\n'
        "done\n"
        'if [ "$issued" = 1 ]; then\n'
        "  echo 'rollout restart already issued by job cq-1; waiting only'\n"
        "else\n"
        "  kubectl -n unidesk rollout restart deployment/d601-tcp-egress-gateway deployment/code-queue\n"
        "  for d in deployment/d601-tcp-egress-gateway deployment/code-queue; do\n"
        '    now=$(kubectl -n unidesk get "$d" -o jsonpath='
        "'{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}')\n"
        '    kubectl -n unidesk annotate --overwrite "$d" cqdeploy.unidesk.io/restarted-by=cq-1 '
        '"cqdeploy.unidesk.io/restarted-at=$now"\n'
        "  done\n"
        "fi\n"
        "kubectl -n unidesk rollout status deployment/d601-tcp-egress-gateway --timeout=900s\n"
        "kubectl -n unidesk rollout status deployment/code-queue --timeout=900s\n"
    ),
}


@pytest.mark.parametrize("step", sorted(EXPECTED))
def test_step_command_is_exactly_the_contract(step: str):
    assert command_for(step, ctx()).script == EXPECTED[step]


def test_rsync_keeps_every_preserved_directory():
    script = command_for("rsync", ctx()).script
    assert PRESERVED == (".state/", "logs/", ".git/", "node_modules/", "dist/")
    for kept in PRESERVED:
        assert f"--exclude=/{kept}" in script
    assert "--delete-excluded" not in script


def test_fetch_resolves_against_the_fresh_remote_and_refuses_unpushed_commits():
    script = command_for("fetch", ctx(resolved=None)).script
    lines = script.splitlines()
    assert lines[0] == "set -euo pipefail"
    fetch = lines.index(next(x for x in lines if " fetch --prune " in x))
    resolve = lines.index(next(x for x in lines if "rev-parse --verify" in x))
    archive = lines.index(next(x for x in lines if " archive " in x))
    assert fetch < resolve < archive
    assert "'abc1234^{commit}'" in lines[resolve]
    assert "for-each-ref --contains" in script and "is not pushed to the remote" in script
    assert "| tar -x -C /tmp/cqdeploy-export-cq-1" in lines[archive]


def test_branch_request_resolves_the_remote_branch():
    p = Provider(id="D601")
    d = Desired("code-queue", "/srv/git/unidesk.git", "D601", branch="release/1.2")
    script = command_for("fetch", JobContext("cq-1", d, p)).script
    assert "'refs/remotes/origin/release/1.2^{commit}'" in script


def test_the_proxy_reaches_only_this_build_and_never_the_script():
    cmd = command_for("build", ctx())
    assert PROXY not in cmd.script and "s3cret" not in cmd.script
    assert cmd.secret_env == {k: PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    assert "--network host" in cmd.script
    for host_config in ("daemon.json", ".docker/config", "systemctl", "/etc/", "docker context", "export "):
        assert host_config not in cmd.script


def test_build_without_a_proxy_passes_no_build_args():
    c = JobContext("cq-1", ctx().desired, Provider(id="D601"), SHA)
    cmd = command_for("build", c)
    assert "--build-arg" not in cmd.script and cmd.secret_env == {}


def test_import_is_one_pipe_under_pipefail():
    script = command_for("import", ctx()).script
    assert script.startswith("set -euo pipefail\n")
    assert script.count("|") == 1


def test_odd_paths_are_quoted_for_the_shell():
    odd = "/srv/my deploy/$(touch pwned)"
    script = command_for("rsync", ctx(deploy_dir=odd)).script
    assert shlex.quote(odd + "/") in script
    assert "mkdir -p '/srv/my deploy/$(touch pwned)'" in script


def test_verify_is_not_a_remote_command():
    assert command_for("verify", ctx()) is None


def test_steps_after_fetch_need_the_resolved_commit():
    with pytest.raises(ValueError, match="resolved commit"):
        command_for("pin", ctx(resolved=None))
