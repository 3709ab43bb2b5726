"""Checks deploy/ as a cluster would see it, without a cluster: every manifest parses, every
reference between them resolves, and the nginx config proxies to what `serve` listens on.

Prints JSON: {"errors": [...], "commands": [[arg, ...], ...]} where commands are the gamelake
command lines of the containers, for the caller to parse with the real binary.
Used by tests/it/cluster.rs (kubeconform is not installable from the registries here).
"""
import json
import pathlib
import re
import sys

import yaml

KINDS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


def main(deploy):
    errors = []
    k8s = deploy / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    files = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    for missing in sorted(listed - files):
        errors.append(f"kustomization.yaml lists {missing}, which does not exist")
    for unlisted in sorted(files - listed):
        errors.append(f"{unlisted} is not in kustomization.yaml's resources")

    docs = []
    for name in sorted(files):
        for doc in yaml.safe_load_all((k8s / name).read_text()):
            if doc is None:
                continue
            where = f"{name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            kind = doc.get("kind")
            if kind not in KINDS:
                errors.append(f"{where}: unexpected kind")
            elif doc.get("apiVersion") != KINDS[kind]:
                errors.append(f"{where}: apiVersion should be {KINDS[kind]}")
            if not doc.get("metadata", {}).get("name"):
                errors.append(f"{where}: no metadata.name")
            docs.append((where, doc))

    def named(kind):
        return {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == kind}

    deployments, services = named("Deployment"), named("Service")
    configmaps, secrets = named("ConfigMap"), named("Secret")
    commands = []
    for where, d in docs:
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]
        pod = spec["template"]
        selector = spec["selector"]["matchLabels"]
        if any(pod["metadata"]["labels"].get(k) != v for k, v in selector.items()):
            errors.append(f"{where}: selector does not match the pod labels")
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for v in volumes.values():
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                errors.append(f"{where}: volume {v['name']} names missing Secret")
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                errors.append(f"{where}: volume {v['name']} names missing ConfigMap")
        for c in pod["spec"]["containers"]:
            ports = {p["name"] for p in c.get("ports", [])}
            for source in c.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                    errors.append(f"{where}: envFrom names missing ConfigMap")
                if "secretRef" in source and source["secretRef"]["name"] not in secrets:
                    errors.append(f"{where}: envFrom names missing Secret")
            for probe in ("readinessProbe", "livenessProbe"):
                for check in c.get(probe, {}).values():
                    if isinstance(check, dict) and isinstance(check.get("port"), str) \
                            and check["port"] not in ports:
                        errors.append(f"{where}: {probe} uses undeclared port {check['port']}")
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    errors.append(f"{where}: mount of undeclared volume {mount['name']}")
            env = {e["name"] for e in c.get("env", [])}
            args = []
            for a in c.get("args", []):
                for var in re.findall(r"\$\((\w+)\)", a):
                    if var not in env:
                        errors.append(f"{where}: args use $({var}), which env does not set")
                args.append(re.sub(r"\$\(\w+\)", "127.0.0.1", a))
            commands.append(args)

    for where, s in ((w, d) for w, d in docs if d["kind"] == "Service"):
        selector = s["spec"]["selector"]
        targets = [d for d in deployments.values()
                   if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                          for k, v in selector.items())]
        if not targets:
            errors.append(f"{where}: selects no Deployment's pods")
        for p in s["spec"]["ports"]:
            names = {q["name"] for d in targets
                     for c in d["spec"]["template"]["spec"]["containers"] for q in c.get("ports", [])}
            if isinstance(p["targetPort"], str) and p["targetPort"] not in names:
                errors.append(f"{where}: targetPort {p['targetPort']} is no container port")

    for where, h in ((w, d) for w, d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        if h["spec"]["scaleTargetRef"]["name"] not in deployments:
            errors.append(f"{where}: scales a Deployment that does not exist")

    # Every address of the scheduler names its Service and port.
    scheduler = services.get("gamelake-scheduler")
    port = scheduler["spec"]["ports"][0]["port"] if scheduler else None
    for cm in configmaps.values():
        cluster = cm.get("data", {}).get("GAMELAKE_CLUSTER")
        if cluster and cluster != f"df://gamelake-scheduler:{port}":
            errors.append(f"GAMELAKE_CLUSTER {cluster} is not the scheduler Service")
    for args in commands:
        if "--scheduler" in args and args[args.index("--scheduler") + 1] != f"gamelake-scheduler:{port}":
            errors.append(f"executor --scheduler is not the scheduler Service: {args}")

    # nginx proxies gRPC to an upstream it declares, on serve's Flight port.
    conf = (deploy / "nginx" / "gamelake-flight.conf").read_text()
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf))
    for target in re.findall(r"grpc_pass\s+grpcs?://(\w+);", conf) or ["(none)"]:
        if target not in upstreams:
            errors.append(f"nginx grpc_pass to {target}, which is no upstream")
            continue
        flight = [p["containerPort"] for c in deployments["gamelake-serve"]["spec"]["template"]["spec"]["containers"]
                  for p in c["ports"] if p["name"] == "flight"]
        for server_port in re.findall(r"server\s+[\w.\-]+:(\d+)", upstreams[target]):
            if int(server_port) not in flight:
                errors.append(f"nginx upstream port {server_port} is not serve's Flight port {flight}")
    if "http2 on" not in conf:
        errors.append("nginx: gRPC needs http2 on the listening server")

    print(json.dumps({"errors": errors, "commands": commands}))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
