#!/usr/bin/env python3
"""Checks what can be checked of deploy/ without Docker or Kubernetes:

- every YAML file parses; compose services have an image or a build, the Shoal ones run
  a real `shoal` subcommand, and every host file they mount exists;
- every Kubernetes object has apiVersion, kind, metadata.name (and a namespace);
  Deployments' selectors match their pod labels, containers have a name and an image,
  probes use a declared port and an endpoint Shoal serves; Services select pods that
  exist and target ports those pods declare; Services open to the Internet
  (LoadBalancer, NodePort) keep the client's address (`externalTrafficPolicy: Local`),
  which the tracker's peer lists and every per-address limit and ban depend on;
- systemd units have Description, ExecStart (the shoal binary and a real subcommand)
  and WantedBy;
- every settings file (deploy/shoal.toml, the ConfigMap's shoal.toml) is accepted by the
  real binary: `shoal SECTION --config FILE --print-config` for each of its sections,
  which refuses unknown keys.

Usage: deploy/check.py PATH/TO/shoal
"""
import configparser
import os
import subprocess
import sys
import tempfile
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ENDPOINTS = {"/healthz", "/readyz", "/metrics"}
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def subcommands(shoal):
    out = subprocess.run([shoal, "--help"], capture_output=True, text=True, check=True).stdout
    names, inside = set(), False
    for line in out.splitlines():
        if line.startswith("Commands:"):
            inside = True
            continue
        if inside:
            if not line.startswith("  "):
                break
            names.add(line.split()[0])
    return names


def check_settings(shoal, path, what):
    with open(path, "rb") as f:
        sections = tomllib.load(f)
    for section in sections:
        args = [shoal, section, "--config", path, "--print-config"]
        r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "SHOAL_CONFIG": ""})
        if r.returncode != 0:
            fail(f"{what}: [{section}] refused by shoal: {r.stderr.strip()}")
        elif "# config file" not in r.stdout:
            fail(f"{what}: [{section}] set nothing")
    print(f"ok  {what}: sections {', '.join(sections)} accepted by shoal")


def check_compose(shoal, commands):
    path = os.path.join(HERE, "docker-compose.yml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services", {})
    for name in ["postgres", "redis", "tracker-1", "tracker-2", "ingest", "seeder-1", "seeder-2", "prometheus", "grafana"]:
        if name not in services:
            fail(f"compose: no service {name}")
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            fail(f"compose: {name} has neither image nor build")
        if svc.get("image", "").startswith("shoal"):
            cmd = svc.get("command", [])
            if not cmd or cmd[0] not in commands:
                fail(f"compose: {name} runs {cmd!r}, not a shoal subcommand")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                if not os.path.exists(os.path.join(HERE, src)):
                    fail(f"compose: {name} mounts {src}, which does not exist")
    print(f"ok  compose: {len(services)} services")


def check_k8s():
    objects = []
    for fname in sorted(os.listdir(os.path.join(HERE, "k8s"))):
        with open(os.path.join(HERE, "k8s", fname)) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    objects.append((fname, doc))
    pods = {}
    for fname, o in objects:
        where = f"k8s/{fname} {o.get('kind')}/{o.get('metadata', {}).get('name')}"
        for field in ("apiVersion", "kind", "metadata"):
            if field not in o:
                fail(f"{where}: no {field}")
        if "name" not in o.get("metadata", {}):
            fail(f"{where}: no metadata.name")
        if o.get("kind") != "Namespace" and "namespace" not in o.get("metadata", {}):
            fail(f"{where}: no metadata.namespace")
        if o.get("kind") == "StatefulSet" and not o["spec"].get("serviceName"):
            fail(f"{where}: a StatefulSet needs spec.serviceName")
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            spec = o["spec"]
            labels = spec["template"]["metadata"]["labels"]
            for k, v in spec["selector"]["matchLabels"].items():
                if labels.get(k) != v:
                    fail(f"{where}: selector {k}={v} does not match the pod labels")
            ports = set()
            for c in spec["template"]["spec"]["containers"]:
                if not c.get("name") or not c.get("image"):
                    fail(f"{where}: a container without name or image")
                names = {p.get("name") for p in c.get("ports", [])}
                ports |= names
                for probe in ("livenessProbe", "readinessProbe"):
                    p = c.get(probe)
                    if not p:
                        fail(f"{where}: {c.get('name')} has no {probe}")
                        continue
                    get = p.get("httpGet", {})
                    if get.get("port") not in names or get.get("path") not in ENDPOINTS:
                        fail(f"{where}: {probe} {get} is not a served endpoint on a declared port")
            pods[o["metadata"]["name"]] = (labels, ports)
        if o.get("kind") == "ConfigMap" and "shoal.toml" in o.get("data", {}):
            tomllib.loads(o["data"]["shoal.toml"])
    for fname, o in objects:
        if o.get("kind") != "Service":
            continue
        where = f"k8s/{fname} Service/{o['metadata']['name']}"
        sel = o["spec"]["selector"]
        match = [n for n, (labels, _) in pods.items() if all(labels.get(k) == v for k, v in sel.items())]
        if not match:
            fail(f"{where}: selects no pods")
            continue
        if o["spec"].get("type") in ("LoadBalancer", "NodePort") and o["spec"].get("externalTrafficPolicy") != "Local":
            fail(f"{where}: a public Service without externalTrafficPolicy: Local hides every client behind a node address")
        declared = pods[match[0]][1]
        for p in o["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in declared:
                fail(f"{where}: targetPort {p['targetPort']} not declared by {match[0]}")
    print(f"ok  k8s: {len(objects)} objects")
    return objects


def check_systemd(commands):
    units = sorted(f for f in os.listdir(os.path.join(HERE, "systemd")) if f.endswith(".service"))
    for unit in units:
        p = configparser.ConfigParser(strict=False, interpolation=None)
        p.read(os.path.join(HERE, "systemd", unit))
        if not p.get("Unit", "Description", fallback=None):
            fail(f"systemd/{unit}: no Description")
        if not p.get("Install", "WantedBy", fallback=None):
            fail(f"systemd/{unit}: no WantedBy")
        exec_start = p.get("Service", "ExecStart", fallback="").split()
        if len(exec_start) < 2 or os.path.basename(exec_start[0]) != "shoal" or exec_start[1] not in commands:
            fail(f"systemd/{unit}: ExecStart {exec_start} does not run a shoal subcommand")
    print(f"ok  systemd: {', '.join(units)}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    shoal = os.path.abspath(sys.argv[1])
    commands = subcommands(shoal)
    check_compose(shoal, commands)
    objects = check_k8s()
    check_systemd(commands)
    check_settings(shoal, os.path.join(HERE, "shoal.toml"), "deploy/shoal.toml")
    for fname, o in objects:
        if o.get("kind") == "ConfigMap" and "shoal.toml" in o.get("data", {}):
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(o["data"]["shoal.toml"])
            check_settings(shoal, f.name, f"k8s/{fname} ConfigMap shoal.toml")
            os.unlink(f.name)
    with open(os.path.join(HERE, "Dockerfile")) as f:
        docker = f.read()
    for needed in ("FROM rust:", " AS build", "COPY --from=build", "ENTRYPOINT [\"shoal\"]", "deploy/shoal.toml"):
        if needed not in docker:
            fail(f"Dockerfile: no {needed!r}")
    if failures:
        sys.exit(f"{len(failures)} problem(s) in deploy/")
    print("deploy/ checks passed")


if __name__ == "__main__":
    main()
