"""Stand-ins for `docker`, `ctr` and `kubectl` on the sandbox target (SIMULATED).

They accept the exact command lines the pipeline sends, keep state in the sandbox cluster and
count their side effects, so tests can prove a step ran once. Usage:
`python -m cqdeploy.sandbox.shims <target-dir> docker|kubectl|ctr ARGS...`.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from .cluster import Cluster

SKIP = {".git", "node_modules", ".state", "logs", "dist", "__pycache__"}
K3S_CONTAINER = "unidesk-v8s-server"


def die(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(code)


# -- docker -------------------------------------------------------------------


def docker(cluster: Cluster, args: list[str]) -> None:
    if not args:
        die("usage: docker build|save|exec|images")
    cmd, rest = args[0], args[1:]
    if cmd == "build":
        docker_build(cluster, rest)
    elif cmd == "save":
        docker_save(cluster, rest)
    elif cmd == "exec":
        docker_exec(cluster, rest)
    elif cmd == "images":
        for tag, img in sorted(cluster.read()["images"].items()):
            print(f"{tag}\t{img['id'][:12]}")
    else:
        die(f"sandbox docker: unsupported command {cmd!r}")


def docker_build(cluster: Cluster, args: list[str]) -> None:
    tag, network, build_args, context = None, None, [], None
    it = iter(args)
    for a in it:
        if a == "-t":
            tag = next(it)
        elif a == "--network":
            network = next(it)
        elif a == "--build-arg":
            build_args.append(next(it))
        elif a == "--label":
            next(it)
        elif a.startswith("-"):
            die(f"sandbox docker build: unsupported option {a}")
        else:
            context = a
    if not tag or context is None:
        die("sandbox docker build: need -t TAG and a context")
    cluster.slow("build")
    cluster.count("docker build")
    ctx = Path(context).resolve()
    if not (ctx / "Dockerfile").exists():
        die(f"failed to solve: failed to read dockerfile: open {ctx}/Dockerfile: no such file")
    proxy_seen = bool(os.environ.get("HTTPS_PROXY")) and all(b in os.environ for b in build_args)
    print(f"#1 [internal] load build definition from Dockerfile (network={network})")
    print(f"#2 build args: {', '.join(sorted(build_args)) or 'none'}; proxy in build env: {proxy_seen}")
    if cluster.faults().get("build_fail"):
        print("#3 RUN pip install -r requirements.txt")
        print('#3 ERROR: process "/bin/sh -c pip install -r requirements.txt" did not complete')
        die("ERROR: failed to solve: sandbox fault build_fail is on", 1)
    digest = hashlib.sha256()
    files = sorted(p for p in ctx.rglob("*") if p.is_file() and not (set(p.relative_to(ctx).parts) & SKIP))
    for p in files:
        digest.update(str(p.relative_to(ctx)).encode() + b"\0" + p.read_bytes())
    image_id = digest.hexdigest()
    image_dir = cluster.state_dir / "images" / image_id
    if not image_dir.exists():
        tmp = image_dir.with_name(image_id + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for p in files:
            dest = tmp / p.relative_to(ctx)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        os.replace(tmp, image_dir)
    with cluster.locked() as state:
        state["images"][tag] = {
            "id": image_id,
            "dir": str(image_dir),
            "proxy_seen": proxy_seen,
            "network": network,
            "built": time.time(),
        }
    print(f"#4 naming to docker.io/library/{tag} done\nsha256:{image_id}")


def docker_save(cluster: Cluster, args: list[str]) -> None:
    if len(args) != 1:
        die("usage: docker save IMAGE")
    cluster.count("docker save")
    image = cluster.read()["images"].get(args[0])
    if image is None or cluster.faults().get("save_fail"):
        die(f"Error response from daemon: reference does not exist: {args[0]}")
    buf = sys.stdout.buffer
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        meta = f"{args[0]}\n{image['id']}\n".encode()
        info = tarfile.TarInfo("manifest.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        tar.add(image["dir"], arcname="rootfs")
    buf.flush()


def docker_exec(cluster: Cluster, args: list[str]) -> None:
    if args[:1] == ["-i"]:
        args = args[1:]
    if not args:
        die("usage: docker exec -i CONTAINER COMMAND...")
    if args[0] != K3S_CONTAINER:
        die(f"Error response from daemon: No such container: {args[0]}")
    if args[1:2] != ["ctr"]:
        die(f"sandbox: container {K3S_CONTAINER} only runs ctr here")
    ctr(cluster, args[2:])


# -- ctr ----------------------------------------------------------------------


def ctr(cluster: Cluster, args: list[str]) -> None:
    if args[:2] != ["-n", "k8s.io"]:
        die("sandbox ctr: expected -n k8s.io")
    if args[2:] != ["images", "import", "-"]:
        die(f"sandbox ctr: unsupported {' '.join(args[2:])}")
    cluster.slow("import")
    data = sys.stdin.buffer.read()
    if not data:
        die("ctr: unexpected EOF: no image archive on stdin")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            meta = tar.extractfile("manifest.txt")
            assert meta is not None
            tag, image_id = meta.read().decode().split()
            dest = cluster.state_dir / "containerd" / image_id
            if not dest.exists():
                tmp = dest.with_name(image_id + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                members = [m for m in tar.getmembers() if m.name.startswith("rootfs")]
                tar.extractall(tmp, members=members, filter="data")
                os.replace(tmp / "rootfs", dest)
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, KeyError, ValueError, AssertionError) as e:
        die(f"ctr: failed to import: {e}")
    cluster.count("ctr import")
    with cluster.locked() as state:
        state["containerd"][tag] = {"id": image_id, "dir": str(dest)}
    print(f"unpacking docker.io/library/{tag} (sha256:{image_id})...done")


# -- kubectl ------------------------------------------------------------------


def kubectl(cluster: Cluster, args: list[str]) -> None:
    namespace = "default"
    if args[:1] == ["-n"]:
        namespace, args = args[1], args[2:]
    if not args:
        die("usage: kubectl [-n NS] apply|set|annotate|rollout|get ...")
    cmd, rest = args[0], args[1:]
    if cmd == "apply":
        kubectl_apply(cluster, rest)
    elif cmd == "set" and rest[:1] == ["env"]:
        kubectl_set_env(cluster, namespace, rest[1:])
    elif cmd == "annotate":
        kubectl_annotate(cluster, namespace, rest)
    elif cmd == "rollout" and rest[:1] == ["restart"]:
        kubectl_restart(cluster, namespace, rest[1:])
    elif cmd == "rollout" and rest[:1] == ["status"]:
        kubectl_status(cluster, namespace, rest[1:])
    elif cmd == "get":
        kubectl_get(cluster, namespace, rest)
    else:
        die(f"sandbox kubectl: unsupported command {' '.join(args[:2])}")


def _deployment(state: dict[str, Any], namespace: str, ref: str) -> tuple[str, dict[str, Any]]:
    if not ref.startswith("deployment/"):
        die(f"sandbox kubectl: expected deployment/NAME, got {ref}")
    key = f"{namespace}/{ref.split('/', 1)[1]}"
    if key not in state["deployments"]:
        die(f'Error from server (NotFound): deployments.apps "{ref.split("/", 1)[1]}" not found')
    return key, state["deployments"][key]


def kubectl_apply(cluster: Cluster, args: list[str]) -> None:
    import yaml

    if args[:1] != ["-f"] or len(args) != 2:
        die("usage: kubectl apply -f FILE")
    cluster.slow("apply")
    try:
        docs = [d for d in yaml.safe_load_all(Path(args[1]).read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        die(f"error: {e}")
    cluster.count("kubectl apply")
    with cluster.locked() as state:
        for doc in docs:
            kind, meta = doc.get("kind"), doc.get("metadata", {})
            key = f"{meta.get('namespace', 'default')}/{meta['name']}"
            if kind == "Deployment":
                container = doc["spec"]["template"]["spec"]["containers"][0]
                template = {
                    "image": container["image"],
                    "command": container.get("command", ["python3", "server.py"]),
                    "manifest_env": {e["name"]: str(e.get("value", "")) for e in container.get("env", [])},
                }
                dep = state["deployments"].setdefault(key, {"env": {}, "annotations": {}, "pods": []})
                changed = any(dep.get(k) != v for k, v in template.items())
                dep.update(template)
                dep["env"] = {
                    **template["manifest_env"],
                    **{k: v for k, v in dep["env"].items() if k not in template["manifest_env"]},
                }
                if changed or not dep["pods"]:
                    cluster.roll(state, key)
                print(f"deployment.apps/{meta['name']} {'configured' if changed else 'unchanged'}")
            elif kind == "Service":
                state["services"][key] = {"ports": [p["port"] for p in doc["spec"].get("ports", [])]}
                print(f"service/{meta['name']} unchanged")
            else:
                print(f"{kind.lower()}/{meta['name']} unchanged")


def kubectl_set_env(cluster: Cluster, namespace: str, args: list[str]) -> None:
    cluster.slow("pin")
    cluster.count("kubectl set env")
    with cluster.locked() as state:
        key, dep = _deployment(state, namespace, args[0])
        for pair in args[1:]:
            name, _, value = pair.partition("=")
            dep["env"][name] = value
        cluster.roll(state, key)
    print(f"{args[0]} env updated")


def kubectl_annotate(cluster: Cluster, namespace: str, args: list[str]) -> None:
    args = [a for a in args if a != "--overwrite"]
    with cluster.locked() as state:
        _, dep = _deployment(state, namespace, args[0])
        for pair in args[1:]:
            name, _, value = pair.partition("=")
            dep["annotations"][name] = value
    print(f"{args[0]} annotated")


def kubectl_restart(cluster: Cluster, namespace: str, args: list[str]) -> None:
    cluster.slow("restart")
    cluster.count("kubectl rollout restart")
    with cluster.locked() as state:
        for ref in args:
            key, dep = _deployment(state, namespace, ref)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
            dep.setdefault("template_annotations", {})["kubectl.kubernetes.io/restartedAt"] = stamp
            cluster.roll(state, key)
            print(f"{ref} restarted")


def kubectl_status(cluster: Cluster, namespace: str, args: list[str]) -> None:
    timeout = 300.0
    refs = []
    for a in args:
        if a.startswith("--timeout="):
            timeout = float(a.split("=", 1)[1].rstrip("s"))
        else:
            refs.append(a)
    end = time.monotonic() + timeout
    for ref in refs:
        while True:
            _, dep = _deployment(cluster.read(), namespace, ref)
            hanging = cluster.faults().get("rollout_hang")  # the new pods never report ready
            if not hanging and dep.get("ready_generation") == dep.get("generation"):
                print(f'deployment "{ref.split("/", 1)[1]}" successfully rolled out')
                break
            if time.monotonic() > end:
                die("error: timed out waiting for the condition")
            time.sleep(0.1)


def kubectl_get(cluster: Cluster, namespace: str, args: list[str]) -> None:
    import json

    state = cluster.read()
    if not args or not args[0].startswith("deployment/"):
        for key in sorted(state["deployments"]):
            if key.startswith(namespace + "/"):
                print(key.split("/", 1)[1])
        return
    _, dep = _deployment(state, namespace, args[0])
    container = {"image": dep["image"], "env": [{"name": k, "value": v} for k, v in sorted(dep["env"].items())]}
    obj = {
        "metadata": {"name": args[0].split("/", 1)[1], "namespace": namespace, "annotations": dep["annotations"]},
        "spec": {
            "template": {
                "metadata": {"annotations": dep.get("template_annotations", {})},
                "spec": {"containers": [container]},
            }
        },
    }
    output = args[args.index("-o") + 1] if "-o" in args else "json"
    if output.startswith("jsonpath="):
        print(jsonpath(obj, output.split("=", 1)[1]), end="")
    else:
        print(json.dumps(obj, indent=1))


def jsonpath(obj: Any, template: str) -> str:
    r"""The subset of kubectl's jsonpath the pipeline uses: `{.a.b\.c}` fields between literal text."""
    import re

    def field(expr: str) -> str:
        value: Any = obj
        for part in re.split(r"(?<!\\)\.", expr.strip().lstrip(".")):
            value = value.get(part.replace("\\.", ".")) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    return re.sub(r"\{([^}]*)\}", lambda m: field(m.group(1)), template)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        die("usage: python -m cqdeploy.sandbox.shims TARGET docker|kubectl|ctr ...", 2)
    cluster = Cluster(Path(args[0]))
    tool, rest = args[1], args[2:]
    {"docker": docker, "kubectl": kubectl, "ctr": ctr}[tool](cluster, rest)


if __name__ == "__main__":
    main()
