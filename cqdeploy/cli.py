"""The command line. Only this module knows click; it turns CqdeployError into exit codes."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any, NoReturn

import click

from .errors import CqdeployError, InvalidInput, JobStateError, JournalProblem
from .workspace import Workspace

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
TERMINAL = ("succeeded", "failed", "timed_out", "cancelled")
RUNNER_START_S = 10.0


class Failure(click.ClickException):
    """A CqdeployError on its way out: one line on stderr, the error's own exit code."""

    def __init__(self, error: CqdeployError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CqdeployError as e:
            raise Failure(e) from e


def emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(package_name="cqdeploy")
def cli() -> None:
    """cqdeploy: deploy Code Queue to host D601, as a journaled job you can watch and resume.

    State lives in the workspace, CQDEPLOY_HOME (default: ./.cqdeploy). Start with
    `cqdeploy demo`, which deploys to an embedded sandbox D601.
    """


def workspace() -> Workspace:
    return Workspace.from_env().ensure()


# -- deploys ---------------------------------------------------------------------


TIMEOUT_OPTION = click.option(
    "--timeout-ms",
    type=click.IntRange(min=1000),
    default=900_000,
    show_default=True,
    help="One deadline for the whole background job, retries and resumes included.",
)
WAIT_OPTION = click.option(
    "--wait", is_flag=True, help="If another job holds the deploy lock, wait for it (up to --timeout-ms)."
)


@cli.group(cls=Group)
def codex() -> None:
    """The compatibility entry: deploy one Code Queue commit."""


@codex.command("deploy")
@click.argument("commit_id")
@click.option("--provider-id", default="D601", show_default=True, help="Target provider.")
@TIMEOUT_OPTION
@click.option("--skip-build", is_flag=True, help="Refused: the target-side build is mandatory.")
@WAIT_OPTION
def codex_deploy(commit_id: str, provider_id: str, timeout_ms: int, skip_build: bool, wait: bool) -> None:
    """Start a job deploying COMMIT_ID (7-40 hex, pushed to the remote); prints its id at once.

    Builds a temporary desired manifest holding only code-queue's repo and this commit and
    hands it to the same reconciler as `deploy apply`.
    """
    from .manifest import check_commit, load_manifest, one_service
    from .reconcile import reconcile

    if skip_build:
        raise InvalidInput("--skip-build is no longer supported: the target-side Docker build is mandatory")
    commit = check_commit(commit_id)
    ws = workspace()
    base = load_manifest(ws.manifest_path) if ws.manifest_path.exists() else None
    manifest = one_service(base, "code-queue", commit, provider_id, None)
    wait_s = timeout_ms / 1000 if wait else 0.0
    emit(reconcile(ws, manifest, ["code-queue"], entry="codex", timeout_ms=timeout_ms, wait_s=wait_s)[0])


@cli.group(cls=Group)
def deploy() -> None:
    """The formal entry: reconcile services against the desired manifest."""


MANIFEST_OPTION = click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False),
    help="Desired manifest (default: $CQDEPLOY_HOME/manifest.toml).",
)


def _manifest(ws: Workspace, manifest_path: str | None) -> Any:
    from pathlib import Path

    from .manifest import load_manifest

    return load_manifest(Path(manifest_path) if manifest_path else ws.manifest_path)


@deploy.command("apply")
@click.option("--service", "services", multiple=True, help="Service to reconcile (repeatable; default: all).")
@MANIFEST_OPTION
@click.option("--force", is_flag=True, help="Deploy even a service whose live commit already matches.")
@WAIT_OPTION
@TIMEOUT_OPTION
def deploy_apply(
    services: tuple[str, ...], manifest_path: str | None, force: bool, wait: bool, timeout_ms: int
) -> None:
    """Start a job for each service that drifted from the desired manifest; prints at once.

    A service already live at its desired commit gets no job (`"jobId": null`) unless --force.
    """
    from .reconcile import reconcile

    ws = workspace()
    manifest = _manifest(ws, manifest_path)
    names = list(services) or sorted(manifest.services)
    wait_s = timeout_ms / 1000 if wait else 0.0
    jobs = reconcile(ws, manifest, names, entry="apply", timeout_ms=timeout_ms, force=force, wait_s=wait_s)
    emit(jobs[0] if len(jobs) == 1 else jobs)


@deploy.command("plan")
@click.option("--service", "services", multiple=True, help="Service to compare (repeatable; default: all).")
@MANIFEST_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def deploy_plan(services: tuple[str, ...], manifest_path: str | None, as_json: bool) -> None:
    """Compare desired with live; exit 0 in sync, 1 when something drifted, 2 on error."""
    from .reconcile import plans

    try:
        ws = workspace()
        manifest = _manifest(ws, manifest_path)
        result = plans(ws, manifest, list(services) or sorted(manifest.services))
    except CqdeployError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if as_json:
        emit([p.as_dict() for p in result])
    else:
        for p in result:
            live = p.live_commit[:12] if p.live_commit else "not deployed"
            want = (p.desired_commit or "?")[:12]
            verdict = "in sync" if p.in_sync else "drifted: a deploy would build and roll out " + want
            click.echo(f"{p.service:<12} {p.provider:<6} desired {p.requested} ({want})  live {live}  {verdict}")
    sys.exit(0 if all(p.in_sync for p in result) else 1)


@deploy.command("rollback")
@click.option("--service", required=True, help="Service to roll back.")
@click.option("--to", "to", help="A succeeded job id or commit of that service (default: the previous one).")
@TIMEOUT_OPTION
def deploy_rollback(service: str, to: str | None, timeout_ms: int) -> None:
    """Redeploy the previous commit whose deploy succeeded, as a job marked as a rollback."""
    from .history import rollback_target
    from .jobs import all_views
    from .manifest import load_manifest, one_service
    from .reconcile import reconcile

    ws = workspace()
    with ws.journal() as j:
        target, undone = rollback_target(all_views(j), service, to)
    d = target.data
    base = load_manifest(ws.manifest_path) if ws.manifest_path.exists() else None
    manifest = one_service(base, service, d["resolvedCommit"], d["providerId"], d["repo"])
    out = reconcile(
        ws, manifest, [service], entry="rollback", timeout_ms=timeout_ms, rollback_of=undone.job_id if undone else None
    )[0]
    out.update(rollbackOf=undone.job_id if undone else None, rollbackTo=target.job_id)
    emit(out)


# -- jobs ------------------------------------------------------------------------


@cli.group(cls=Group)
def job() -> None:
    """Watch, list and resume jobs."""


def _view(journal: Any, job_id: str) -> Any:
    from .jobs import load_view

    return load_view(journal, job_id)


def _status_dict(view: Any, tail_bytes: int) -> dict[str, Any]:
    from .jobs import runner_state

    out = view.as_dict()
    tail = out.pop("logTail")
    out["logTail"] = tail[-tail_bytes:] if tail and tail_bytes > 0 else None
    if out["logTail"] and len(out["logTail"].encode()) > tail_bytes:
        out["logTail"] = out["logTail"].encode()[-tail_bytes:].decode("utf-8", "ignore")
    if out["state"] not in TERMINAL:
        alive, why = runner_state(view)
        if not alive:
            out["runnerLost"] = f"{why}; run `cqdeploy job resume {view.job_id}`"
    if out["state"] not in TERMINAL and tail_bytes > 0 and out["currentStep"]:
        out["logTail"] = _live_tail(view, tail_bytes)
    return out


def _live_tail(view: Any, nbytes: int) -> str | None:
    step = view.step(view.machine.current_step)
    if not step["remoteLog"]:
        return None
    from .config import load_config
    from .transport import open_transport

    provider = load_config(Workspace.from_env().config_path).get(view.data["providerId"])
    if provider is None:
        return None
    from . import detached
    from .runner import redact

    try:
        with open_transport(provider) as t:
            out = t.run(detached.tail(step["remoteLog"], nbytes), timeout=10)
    except CqdeployError:
        return None
    return redact(out.stdout.decode("utf-8", "replace"), provider.secrets())


@job.command("status")
@click.argument("job_id")
@click.option(
    "--tail-bytes",
    type=click.IntRange(min=0),
    default=0,
    help="Show the last N bytes of the failed (or running) step's log.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
@click.option("--follow", is_flag=True, help="Stream step progress until the job ends; exit 0 if it succeeded, else 1.")
def job_status(job_id: str, tail_bytes: int, as_json: bool, follow: bool) -> None:
    """Replay JOB_ID's events: state, steps with timings, commits, logs, error."""
    from .render import status_text

    ws = workspace()
    with ws.journal() as journal:
        if follow:
            code = _follow(journal, job_id, as_json)
            view = _view(journal, job_id)
            if not as_json:
                out = _status_dict(view, tail_bytes or 2000)
                click.echo(status_text(out, out["logTail"] if code else None))
            sys.exit(code)
        out = _status_dict(_view(journal, job_id), tail_bytes)
    if as_json:
        emit(out)
    else:
        click.echo(status_text(out, out["logTail"] if tail_bytes else None))


def _follow(journal: Any, job_id: str, as_json: bool, limit_s: float | None = None) -> int:
    """Print each step change until the job ends; bounded by the job's own deadline."""
    from .jobs import runner_alive
    from .render import progress_line

    view = _view(journal, job_id)
    shown: dict[str, str] = {}
    deadline = time.monotonic() + (limit_s or (view.data["timeoutMs"] or 900_000) / 1000 + 60)
    gone_since: float | None = None
    started = time.monotonic()
    while True:
        view = _view(journal, job_id)
        for s in view.data["steps"]:
            if s["state"] != "pending" and shown.get(s["name"]) != s["state"]:
                shown[s["name"]] = s["state"]
                if as_json:
                    click.echo(
                        json.dumps(
                            {
                                "jobId": job_id,
                                "step": s["name"],
                                "state": s["state"],
                                "startedAt": s["startedAt"],
                                "endedAt": s["endedAt"],
                            }
                        )
                    )
                else:
                    click.echo(progress_line(s))
        state = view.state.value
        if state in TERMINAL:
            if as_json:
                click.echo(json.dumps({"jobId": job_id, "state": state, "error": view.data["error"]}))
            return 0 if state == "succeeded" else 1
        # before its first event the runner has a few seconds to journal that it started
        alive = runner_alive(view) if view.data["runner"] else time.monotonic() - started < RUNNER_START_S
        gone_since = None if alive else (gone_since or time.monotonic())
        if gone_since and time.monotonic() - gone_since > 2:
            click.echo(f"runner lost or never started; continue with `cqdeploy job resume {job_id}`", err=True)
            return 1
        if time.monotonic() > deadline:
            click.echo("gave up following: the job outlived its deadline", err=True)
            return 1
        time.sleep(0.1)


@job.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def job_list(as_json: bool, limit: int) -> None:
    """Recent jobs, newest first."""
    from .jobs import list_jobs
    from .render import jobs_table

    with workspace().journal() as journal:
        rows = list_jobs(journal, limit)
    if as_json:
        emit(rows)
    else:
        click.echo(jobs_table(rows))


@job.command("history")
@click.option("--service", help="Only this service.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def job_history(service: str | None, as_json: bool, limit: int) -> None:
    """Past deploys, newest first: job, commit, who, entry point, started, duration, result."""
    from .history import history_row
    from .jobs import all_views
    from .render import history_table

    with workspace().journal() as j:
        rows = [history_row(v) for v in all_views(j) if service is None or v.data["service"] == service][:limit]
    if as_json:
        emit(rows)
    else:
        click.echo(history_table(rows))


@job.command("replay")
@click.argument("job_id")
def job_replay(job_id: str) -> None:
    """JOB_ID's full event timeline with per-step durations, from the journal alone."""
    from .render import replay_text

    with workspace().journal() as j:
        view = _view(j, job_id)
        events = j.read(job_id)
    click.echo(replay_text(view.as_dict(), [(e.seq, e.ts, e.type, e.data) for e in events]))


@job.command("export")
@click.argument("job_id")
def job_export(job_id: str) -> None:
    """Print JOB_ID's events as JSONL, byte for byte the mirror's lines."""
    with workspace().journal() as j:
        _view(j, job_id)
        for e in j.iter(job_id):
            click.echo(e.line())


@job.command("resume")
@click.argument("job_id", required=False)
@click.option("--stale", is_flag=True, help="Resume every job whose runner is lost.")
def job_resume(job_id: str | None, stale: bool) -> None:
    """Start a new runner for JOB_ID; it continues after the last completed step.

    Refused for a finished job, for a job whose runner is alive, and while another job holds
    the (provider, service) lock. The job keeps its own lock.
    """
    from .jobs import all_views, runner_state

    if bool(job_id) == stale:
        raise InvalidInput("give either a JOB_ID or --stale")
    ws = workspace()
    if job_id:
        emit(_resume(ws, job_id))
        return
    with ws.journal() as j:
        lost = [v.job_id for v in all_views(j) if not v.state.terminal and not runner_state(v)[0]]
    results = []
    for stale_id in lost:
        try:
            results.append(_resume(ws, stale_id))
        except CqdeployError as e:
            results.append({"jobId": stale_id, "error": str(e)})
    emit(results)


def _resume(ws: Workspace, job_id: str) -> dict[str, Any]:
    from . import lock
    from .jobs import holder_state, runner_state, spawn_runner
    from .reconcile import job_summary

    with ws.journal() as journal:
        view = _view(journal, job_id)
        if view.state.terminal:
            raise JobStateError(f"job {job_id} already ended {view.state.value}; nothing to resume")
        alive, why = runner_state(view)
        if alive and view.data["runner"]:
            raise JobStateError(f"job {job_id} still has a live runner ({why})")
        d = view.data
        lock.acquire(journal, d["providerId"], d["service"], job_id, holder_state=holder_state(journal))
    spawn_runner(ws, job_id, resume=True)
    out = job_summary(ws, job_id, d["service"], d["providerId"], d["requestedCommit"])
    out["resumeFrom"] = view.machine.next_step
    return out


@job.command("cancel")
@click.argument("job_id")
@click.option(
    "--wait-s",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="How long the live runner gets to end the job itself.",
)
def job_cancel(job_id: str, wait_s: float) -> None:
    """End JOB_ID as cancelled: its remote step is stopped and its lock released."""
    from journal import AppendConflict

    from . import detached, lock
    from .config import load_config
    from .jobs import runner_state, who
    from .transport import open_transport

    ws = workspace()
    with ws.journal() as j:
        view = _view(j, job_id)
        if view.state.terminal:
            raise JobStateError(f"job {job_id} already ended {view.state.value}; nothing to cancel")
        for _ in range(20):
            try:
                j.append(job_id, view.seq, "job.cancel_requested", {"by": who()})
                break
            except AppendConflict:
                view = _view(j, job_id)
                if view.state.terminal:
                    raise JobStateError(f"job {job_id} ended {view.state.value} before it could be cancelled") from None
        view = _view(j, job_id)
        step = view.machine.current_step
        provider = load_config(ws.config_path).get(view.data["providerId"])
        if step and provider is not None and view.step(step)["attempt"]:
            run = detached.StepRun(job_id, step, view.step(step)["attempt"], provider.tmp_dir)
            with open_transport(provider) as t:
                t.run(detached.kill(run), timeout=15)
        end = time.monotonic() + (wait_s if runner_state(view)[0] else 0)
        while not view.state.terminal and time.monotonic() < end:
            time.sleep(0.1)
            view = _view(j, job_id)
        for _ in range(20):  # no live runner did it: end the job here
            if view.state.terminal:
                break
            error = f"cancelled by {view.data['cancelRequested']}"
            items: list[tuple[str, dict[str, Any]]] = []
            if step and view.step(step)["state"] == "running":
                items.append(("step.failed", {"step": step, "error": error, "log_tail": None}))
            items.append(("job.cancelled", {"step": step, "error": error}))
            with contextlib.suppress(AppendConflict):
                j.append_batch(job_id, view.seq, items)
            view = _view(j, job_id)
        lock.release(j, view.data["providerId"], view.data["service"], job_id, view.state.value)
    emit({"jobId": job_id, "state": view.state.value, "step": step})


# -- journal ---------------------------------------------------------------------


@cli.group(cls=Group)
def journal() -> None:
    """Check the event journal."""


@journal.command("verify")
@click.argument("job_id", required=False)
def journal_verify(job_id: str | None) -> None:
    """Prove the hash chain is intact and that SQLite and the JSONL mirror agree."""
    from journal import UnknownStream, verify

    from .errors import UnknownJob

    with workspace().journal() as j:
        try:
            problems = verify(j, job_id)
        except UnknownStream as e:
            raise UnknownJob(f"no job {job_id!r}") from e
        names = [job_id] if job_id else [s.stream for s in j.streams()]
    for p in problems:
        click.echo(str(p), err=True)
    if problems:
        raise JournalProblem(f"{len(problems)} problem(s) in the journal")
    jobs = sum(1 for n in names if n.startswith("cq-"))
    others = f" and {len(names) - jobs} lock/audit stream(s)" if len(names) > jobs else ""
    click.echo(f"ok: {jobs} job(s){others} verified; hash chains intact, SQLite and JSONL identical")


@journal.command("rebuild")
def journal_rebuild() -> None:
    """Restore journal.db from the JSONL mirror (after the database was lost); then verify."""
    from journal import JournalError, rebuild, verify

    ws = workspace()
    try:
        count = rebuild(ws.home)
    except JournalError as e:
        raise JournalProblem(str(e)) from e
    with ws.journal() as j:
        problems = verify(j)
    if problems:
        raise JournalProblem(f"rebuilt journal does not verify: {problems[0]}")
    click.echo(f"rebuilt {ws.home / 'journal.db'}: {count} events; verified")


@journal.command("prune")
@click.option("--keep", type=click.IntRange(min=0), required=True, help="Keep the newest N jobs.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def journal_prune(keep: int, dry_run: bool) -> None:
    """Remove old jobs; never a running job and never a service's last succeeded one."""
    from journal import delete_streams

    from .history import prunable
    from .jobs import all_views, who

    with workspace().journal() as j:
        doomed = prunable(all_views(j), keep)
        if not dry_run and doomed:
            audit = "journal-audit"
            j.append(audit, j.last_seq(audit), "journal.pruned", {"jobs": doomed, "keep": keep, "by": who()})
            delete_streams(j, doomed)
    for job_id in doomed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {job_id}")
    click.echo(f"{len(doomed)} job(s) {'to remove' if dry_run else 'removed'}")


# -- locks -----------------------------------------------------------------------


@cli.group("lock", cls=Group)
def lock_group() -> None:
    """The one-deploy-at-a-time lock of each (provider, service)."""


@lock_group.command("status")
@click.option("--provider-id", default="D601", show_default=True)
@click.option("--service", default="code-queue", show_default=True)
def lock_status(provider_id: str, service: str) -> None:
    """Who holds the lock, as JSON."""
    from .lock import read_lock

    with workspace().journal() as j:
        state = read_lock(j, provider_id, service)
    emit(
        {
            "providerId": provider_id,
            "service": service,
            "holder": state.holder,
            "since": state.since,
            "pid": state.pid,
            "host": state.host,
        }
    )


@lock_group.command("release")
@click.option("--provider-id", default="D601", show_default=True)
@click.option("--service", default="code-queue", show_default=True)
@click.option("--force", is_flag=True, required=True, help="Required: you take responsibility.")
def lock_release(provider_id: str, service: str, force: bool) -> None:
    """Release a lock whose job cannot be resumed; journaled with who did it."""
    from .jobs import runner_state, who
    from .lock import read_lock, release

    if not force:
        raise InvalidInput("lock release needs --force")
    with workspace().journal() as j:
        state = read_lock(j, provider_id, service)
        if state.holder is None:
            raise JobStateError(f"{provider_id}/{service} is not locked")
        try:
            view = _view(j, state.holder)
            if not view.state.terminal and runner_state(view)[0] and view.data["runner"]:
                raise JobStateError(f"job {state.holder} has a live runner; cancel it instead")
        except CqdeployError as e:
            if isinstance(e, JobStateError):
                raise
        release(j, provider_id, service, state.holder, "forced", by=who())
    click.echo(f"released {provider_id}/{service} (held by {state.holder})")


# -- microservices ---------------------------------------------------------------


@cli.group(cls=Group)
def microservice() -> None:
    """Talk to a service through backend-core's microservice proxy."""


def _get(service: str, path: str, provider_id: str) -> None:
    from . import health
    from .config import load_config, pick_provider

    provider = pick_provider(load_config(workspace().config_path), provider_id)
    answer = health.get(provider.backend_url, service, path)
    click.echo(json.dumps(answer.body, indent=2) if answer.body is not None else answer.text)
    if answer.status >= 400:
        raise CqdeployError(f"{service} {path}: HTTP {answer.status}")


@microservice.command("health")
@click.argument("service")
@click.option("--provider-id", default="D601", show_default=True)
def microservice_health(service: str, provider_id: str) -> None:
    """GET SERVICE's /health (shows deploy.commit)."""
    _get(service, "/health", provider_id)


@microservice.command("proxy")
@click.argument("service")
@click.argument("path")
@click.option("--provider-id", default="D601", show_default=True)
def microservice_proxy(service: str, path: str, provider_id: str) -> None:
    """GET PATH of SERVICE, e.g. '/api/tasks/overview?limit=5'."""
    _get(service, path, provider_id)


# -- providers -------------------------------------------------------------------


@cli.group(cls=Group)
def provider() -> None:
    """Target hosts: list them, trust an SSH host key."""


@provider.command("list")
def provider_list() -> None:
    """The configured providers as JSON (secrets left out)."""
    from .config import load_config

    rows = []
    for p in load_config(workspace().config_path).values():
        rows.append(
            {
                "id": p.id,
                "active": p.active,
                "transport": p.transport,
                "host": p.ssh_host,
                "port": p.ssh_port,
                "user": p.ssh_user,
                "deployDir": p.deploy_dir,
                "backendUrl": p.backend_url,
                "buildProxy": "set" if p.build_proxy else None,
            }
        )
    emit(rows)


@provider.command("trust")
@click.argument("provider_id")
@click.option("--yes", is_flag=True, help="Record the key without asking (after checking the fingerprint).")
def provider_trust(provider_id: str, yes: bool) -> None:
    """Show PROVIDER_ID's SSH host key fingerprint and record it in known_hosts.

    Only the key exchange happens: no authentication, no command.
    """
    from pathlib import Path

    import paramiko

    from .config import load_config, pick_provider
    from .errors import HostKeyError
    from .transport.ssh import fingerprint, record_host_key, scan_host_key

    p = pick_provider(load_config(workspace().config_path), provider_id)
    if p.transport != "ssh":
        raise InvalidInput(f"provider {provider_id} uses transport {p.transport}: there is no host key to trust")
    name, key = scan_host_key(p, timeout=p.connect_timeout_s)
    known = Path(p.known_hosts or "known_hosts")
    click.echo(f"{name} presents {key.get_name()} {fingerprint(key)}")
    keys = paramiko.HostKeys(str(known)) if known.exists() else paramiko.HostKeys()
    have = keys.lookup(name) or {}
    if key.get_name() in have:
        if have[key.get_name()] == key:
            click.echo(f"already trusted in {known}")
            return
        raise HostKeyError(f"HOST KEY CHANGED for {name}: {known} holds another {key.get_name()} key; refusing")
    if not yes and not (sys.stdin.isatty() and click.confirm("Is this D601's key? Record it", default=False)):
        raise InvalidInput("not recorded; check the fingerprint on the host (ssh-keygen -lf) and rerun with --yes")
    record_host_key(known, name, key)
    click.echo(f"recorded in {known}")


# -- egress gateway ----------------------------------------------------------------


@cli.command("egress-gateway")
@click.option(
    "--routes",
    envvar="TCP_EGRESS_ROUTES",
    required=True,
    show_envvar=True,
    help="<listen port>=<host>:<port>, comma-separated, e.g. 15432=db.internal:5432,4255=relay:4255.",
)
@click.option("--proxy", "proxy_url", help="HTTP CONNECT proxy URL (default: HTTPS_PROXY, then HTTP_PROXY).")
@click.option("--listen", default="0.0.0.0", show_default=True, help="Address every route listens on.")
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="HTTP /ready and /healthz for Kubernetes probes (0 to disable).",
)
@click.option("--connect-timeout-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--idle-timeout-s", type=click.FloatRange(min=1), default=600.0, show_default=True)
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True)
@click.option(
    "--drain-s",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On SIGTERM, how long open connections may finish.",
)
@click.option(
    "--relay",
    type=click.Choice(["copy", "splice"]),
    default="copy",
    show_default=True,
    help="copy: 1 MiB buffers; splice: zero-copy, least CPU, slower into small-reads proxies.",
)
def egress_gateway(
    routes: str,
    proxy_url: str | None,
    listen: str,
    health_port: int,
    connect_timeout_s: float,
    idle_timeout_s: float,
    max_connections: int,
    drain_s: float,
    relay: str,
) -> None:
    """Forward in-cluster TCP to the routes' targets through an HTTP CONNECT proxy.

    One listener per route; one JSON log line per connection (route, bytes each way, duration,
    outcome). Proxy credentials are sent as Proxy-Authorization and never logged.
    """
    from .gateway import Gateway, Settings, parse_routes, proxy_from_env

    settings = Settings(
        routes=parse_routes(routes),
        proxy=proxy_from_env(proxy_url),
        listen_host=listen,
        connect_timeout_s=connect_timeout_s,
        idle_timeout_s=idle_timeout_s,
        max_connections=max_connections,
        drain_s=drain_s,
        health_port=health_port or None,
        relay=relay,
    )
    Gateway(settings).start().serve_until_signal()


# -- sandbox and demo ------------------------------------------------------------


@cli.command()
@click.option("--timeout-ms", type=click.IntRange(min=1000), default=120_000, show_default=True)
@click.option("--ssh", is_flag=True, help="Reach the sandbox D601 through its own OpenSSH sshd on 127.0.0.1.")
def demo(timeout_ms: int, ssh: bool) -> None:
    """Deploy the sandbox remote's HEAD to the embedded sandbox D601 and follow it."""
    from .manifest import load_manifest, one_service
    from .reconcile import reconcile
    from .sandbox import Sandbox

    ws = workspace()
    box = Sandbox(ws)
    created = box.create()
    port = box.up(ssh=ssh)
    click.echo(f"sandbox D601 {'created' if created else 'ready'} in {box.root}")
    click.echo("  Docker, containerd and k3s are SIMULATED; git, rsync, bash, SQLite and HTTP are real")
    click.echo(f"  backend-core simulator on http://127.0.0.1:{port}")
    if ssh:
        click.echo(f"  D601 reached over SSH: sshd on 127.0.0.1:{box.sshd.port}, host key in known_hosts")
    head = box.head()
    manifest = one_service(load_manifest(ws.manifest_path), "code-queue", head, "D601", None)
    started = reconcile(ws, manifest, ["code-queue"], entry="codex", timeout_ms=timeout_ms)[0]
    click.echo(f"deploying {head[:12]} as job {started['jobId']}")
    with ws.journal() as j:
        code = _follow(j, started["jobId"], as_json=False)
        view = _view(j, started["jobId"])
    if code == 0:
        click.echo(f"succeeded: /health answers deploy.commit {view.data['resolvedCommit']}")
        click.echo(f"next: {started['statusCommand']}   ·   cqdeploy sandbox down")
    else:
        click.echo(f"job ended {view.state.value}: {view.data['error']}", err=True)
    sys.exit(code)


@cli.group(cls=Group)
def sandbox() -> None:
    """The embedded sandbox D601 (Docker and k3s SIMULATED)."""


def _box() -> Any:
    from .sandbox import Sandbox

    return Sandbox(workspace())


@sandbox.command("up")
@click.option("--ssh", is_flag=True, help="Also start its sshd and point provider D601 at it.")
def sandbox_up(ssh: bool) -> None:
    """Create the sandbox if needed and start its backend-core simulator."""
    box = _box()
    port = box.up(ssh=ssh)
    click.echo(f"sandbox up in {box.root}; backend-core on http://127.0.0.1:{port}")


@sandbox.command("down")
def sandbox_down() -> None:
    """Stop every sandbox process (pods, backend-core, running steps), naming each."""
    stopped = _box().down()
    for what in stopped:
        click.echo(f"stopped {what}")
    click.echo(f"sandbox down ({len(stopped)} process(es) stopped)")


@sandbox.command("status")
def sandbox_status() -> None:
    """Show the sandbox's cluster, faults and side-effect counters as JSON."""
    emit(_box().status())


@sandbox.command("fault")
@click.argument("name")
@click.argument("value", default="on")
def sandbox_fault(name: str, value: str) -> None:
    """Switch a fault: build_fail, save_fail, rollout_hang, old_pod_answers (on|off),
    or sleep.<step> SECONDS; `clear` switches all off."""
    box = _box()
    if name == "clear":
        box.clear_faults()
    else:
        parsed: Any = value not in ("off", "false", "0") if not name.startswith("sleep.") else value
        box.set_fault(name, parsed)
    emit(box.cluster.faults())


@sandbox.command("commit")
@click.option("-m", "--message", default="sandbox change", show_default=True)
def sandbox_commit(message: str) -> None:
    """Push a new commit (VERSION bumped) to the sandbox remote; prints its id."""
    box = _box()
    box.create()
    version = int((box.work / "VERSION").read_text().strip() or 0) + 1
    click.echo(box.commit(message, {"VERSION": f"{version}\n"}))


def main() -> NoReturn:
    cli.main(prog_name="cqdeploy")
    raise SystemExit(0)
