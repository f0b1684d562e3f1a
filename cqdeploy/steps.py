"""The eight fixed steps as data: a job context in, the exact shell script out.

Nothing here opens a socket or a file. Every value that reaches a script passes through
`shlex.quote`; values that are secret (the build proxy) travel only in `secret_env`, which the
detached launcher hands to the target through stdin and a 0600 file, never on a command line.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .config import Provider
from .machine import STEPS
from .manifest import Desired

q = shlex.quote

PRESERVED = (".state/", "logs/", ".git/", "node_modules/", "dist/")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NOT_PUSHED_EXIT = 3

DESCRIPTIONS = {
    "fetch": "git fetch the remote and git archive the commit into a one-off export",
    "rsync": "rsync --delete the export into the deploy directory",
    "build": "docker build the image on the target, proxy only for this build",
    "import": "docker save | ctr import into k3s containerd",
    "apply": "kubectl apply the service manifest",
    "pin": "pin the resolved commit in env and annotation",
    "restart": "rollout restart both deployments and wait",
    "verify": "check /health deploy.commit through the backend proxy",
}


@dataclass(frozen=True)
class JobContext:
    job_id: str
    desired: Desired
    provider: Provider
    resolved: str | None = None
    timeout_s: float = 900.0

    @property
    def export_dir(self) -> str:
        return f"{self.provider.tmp_dir}/cqdeploy-export-{self.job_id}"

    @property
    def requested(self) -> str:
        return self.desired.requested


@dataclass(frozen=True)
class RemoteCommand:
    script: str
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)


def command_for(step: str, ctx: JobContext) -> RemoteCommand | None:
    """The script for `step`; None for verify, which the runner does itself over HTTP."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    if step == "verify":
        return None
    if step != "fetch" and not ctx.resolved:
        raise ValueError(f"step {step} needs the resolved commit")
    return _BUILDERS[step](ctx)


def _rev(ctx: JobContext) -> str:
    d = ctx.desired
    return d.commit if d.commit else f"refs/remotes/origin/{d.branch}"


def fetch(ctx: JobContext) -> RemoteCommand:
    cache, repo, export = q(ctx.provider.cache_dir), q(ctx.desired.repo), q(ctx.export_dir)
    rev = _rev(ctx)
    not_found = q(f"commit {ctx.requested} is not pushed to the remote")
    return RemoteCommand(
        "set -euo pipefail\n"
        f"if [ ! -d {cache} ]; then mkdir -p {q(_parent(ctx.provider.cache_dir))}"
        f" && git init --bare --quiet {cache}; fi\n"
        f"git -C {cache} fetch --prune --no-tags {repo} '+refs/heads/*:refs/remotes/origin/*'\n"
        f"sha=$(git -C {cache} rev-parse --verify --quiet {q(rev + '^{commit}')}) || "
        f"{{ echo {not_found}: no such commit >&2; exit {NOT_PUSHED_EXIT}; }}\n"
        f'if [ -z "$(git -C {cache} for-each-ref --contains "$sha" refs/remotes/origin)" ]; then '
        f"echo {not_found}: no remote branch contains it >&2; exit {NOT_PUSHED_EXIT}; fi\n"
        f"rm -rf {export} && mkdir -p {export}\n"
        f'git -C {cache} archive --format=tar "$sha" | tar -x -C {export}\n'
        'printf \'%s\\n\' "$sha" > "$CQDEPLOY_STEP_DIR/result"\n'
        f'echo "resolved $sha, exported to "{export}\n'
    )


def rsync(ctx: JobContext) -> RemoteCommand:
    keep = " ".join(f"--exclude={q('/' + p)}" for p in PRESERVED)
    src, dest = q(ctx.export_dir + "/"), q(ctx.provider.deploy_dir + "/")
    return RemoteCommand(
        "set -euo pipefail\n"
        f"mkdir -p {q(ctx.provider.deploy_dir)}\n"
        f"rsync -a --delete {keep} {src} {dest}\n"
        f"rm -rf {q(ctx.export_dir)}\n"
    )


def build(ctx: JobContext) -> RemoteCommand:
    spec = ctx.desired.spec
    proxy = ctx.provider.build_proxy
    secret_env = {name: proxy for name in PROXY_VARS} if proxy else {}
    build_args = "".join(f" --build-arg {name}" for name in PROXY_VARS) if proxy else ""
    labels = f" --label {q('cqdeploy.commit=' + str(ctx.resolved))}"
    return RemoteCommand(
        "set -euo pipefail\n"
        f"cd {q(ctx.provider.deploy_dir)}\n"
        f"docker build --network host{build_args}{labels} -t {q(spec.image)} .\n",
        secret_env,
    )


def import_image(ctx: JobContext) -> RemoteCommand:
    spec, p = ctx.desired.spec, ctx.provider
    return RemoteCommand(
        "set -euo pipefail\n"
        f"docker save {q(spec.image)} | docker exec -i {q(p.k3s_container)} "
        "ctr -n k8s.io images import -\n"
    )


def apply(ctx: JobContext) -> RemoteCommand:
    spec = ctx.desired.spec
    return RemoteCommand(
        f"set -euo pipefail\ncd {q(ctx.provider.deploy_dir)}\nkubectl apply -f {q(spec.k8s_manifest)}\n"
    )


def pin(ctx: JobContext) -> RemoteCommand:
    spec, ns = ctx.desired.spec, q(ctx.provider.namespace)
    target = q(f"deployment/{spec.deployment}")
    resolved = str(ctx.resolved)
    env = " ".join(
        q(f"{k}={v}")
        for k, v in (
            ("CODE_QUEUE_DEPLOY_COMMIT", resolved),
            ("CODE_QUEUE_DEPLOY_REQUESTED_COMMIT", ctx.requested),
        )
    )
    notes = " ".join(
        q(f"{k}={v}")
        for k, v in (
            (spec.commit_annotation, resolved),
            ("cqdeploy.unidesk.io/requested-commit", ctx.requested),
            ("cqdeploy.unidesk.io/job", ctx.job_id),
        )
    )
    return RemoteCommand(
        "set -euo pipefail\n"
        f"kubectl -n {ns} set env {target} {env}\n"
        f"kubectl -n {ns} annotate --overwrite {target} {notes}\n"
    )


RESTARTED_BY = "cqdeploy.unidesk.io/restarted-by"
RESTARTED_AT = "cqdeploy.unidesk.io/restarted-at"
RESTARTED_AT_K8S = "kubectl.kubernetes.io/restartedAt"


def _jsonpath(*fields: str) -> str:
    """A kubectl jsonpath template printing annotation fields joined by '|'."""
    return "|".join("{" + f + "}" for f in fields)


def _annotation(where: str, key: str) -> str:
    return f".{where}.annotations.{key.replace('.', chr(92) + '.')}"


def restart(ctx: JobContext) -> RemoteCommand:
    """Restart once per job: the restartedAt that `rollout restart` set is recorded on the
    Deployment with this job's id, and a second attempt that finds it only waits."""
    spec, ns = ctx.desired.spec, q(ctx.provider.namespace)
    targets = [q(f"deployment/{name}") for name in spec.restart]
    wait = max(30, int(ctx.timeout_s))
    job = ctx.job_id
    marks = q(
        _jsonpath(
            _annotation("metadata", RESTARTED_BY),
            _annotation("metadata", RESTARTED_AT),
            _annotation("spec.template.metadata", RESTARTED_AT_K8S),
        )
    )
    now_path = q("{" + _annotation("spec.template.metadata", RESTARTED_AT_K8S) + "}")
    each = " ".join(targets)
    status = "".join(f"kubectl -n {ns} rollout status {t} --timeout={wait}s\n" for t in targets)
    return RemoteCommand(
        "set -euo pipefail\n"
        "issued=1\n"
        f"for d in {each}; do\n"
        f'  IFS="|" read -r by at now <<< "$(kubectl -n {ns} get "$d" -o jsonpath={marks})"\n'
        f'  if [ "$by" != {q(job)} ] || [ -z "$at" ] || [ "$at" != "$now" ]; then issued=0; fi\n'
        "done\n"
        'if [ "$issued" = 1 ]; then\n'
        f"  echo {q('rollout restart already issued by job ' + job + '; waiting only')}\n"
        "else\n"
        f"  kubectl -n {ns} rollout restart {each}\n"
        f"  for d in {each}; do\n"
        f'    now=$(kubectl -n {ns} get "$d" -o jsonpath={now_path})\n'
        f'    kubectl -n {ns} annotate --overwrite "$d" {q(RESTARTED_BY + "=" + job)} "{RESTARTED_AT}=$now"\n'
        "  done\n"
        "fi\n"
        f"{status}"
    )


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


_BUILDERS = {
    "fetch": fetch,
    "rsync": rsync,
    "build": build,
    "import": import_image,
    "apply": apply,
    "pin": pin,
    "restart": restart,
}
