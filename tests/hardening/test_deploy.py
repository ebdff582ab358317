"""The deployment files agree with the CLI (no Docker engine here: they are parsed and checked).

docker/Dockerfile, docker/compose.yaml and docker/k8s/sidecar.yaml: every SHADOWPROXY_* name is
the envvar of an option of the command that container runs (introspected from click), every
value parses with that option's type, ports agree between env, EXPOSE/ports, probes and the
Service, and the commands and flags used exist.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from ruamel.yaml import YAML

from shadowproxy.cli import _register, cli
from shadowproxy.demo_backend import build_parser
from shadowproxy.rules import load_rules_text

_register()
DOCKER = Path(__file__).resolve().parents[2] / "docker"


def load_yaml_all(path: Path) -> list[Any]:
    return [d for d in YAML(typ="safe", pure=True).load_all(io.StringIO(path.read_text())) if d is not None]


def envvars(command: str) -> dict[str, click.Option]:
    """SHADOWPROXY_* name -> option, for a command (every option has its SHADOWPROXY_<FLAG>)."""
    cmd = cli.commands[command]
    out: dict[str, click.Option] = {}
    for p in cmd.params:
        if not isinstance(p, click.Option) or p.name is None:
            continue
        names = [p.envvar] if isinstance(p.envvar, str) else list(p.envvar or [])
        for n in names:
            out[n] = p
    return out


def check_env(command: str, env: dict[str, str], *, unresolved: frozenset[str] = frozenset()) -> None:
    """Every SHADOWPROXY_* name is an option of `command`, and its value parses with its type."""
    known = envvars(command)
    parent = click.Context(cli, info_name="shadowproxy")
    ctx = click.Context(cli.commands[command], info_name=command, parent=parent)
    for name, value in env.items():
        if not name.startswith("SHADOWPROXY_"):
            continue
        assert name in known, f"{name} is not an envvar of `shadowproxy {command}`"
        if name in unresolved:  # the value comes from a secret or the shell
            continue
        opt = known[name]
        if opt.is_flag:
            assert str(value).lower() in ("1", "0", "true", "false", "yes", "no", "on", "off"), name
        else:
            opt.type.convert(str(value), opt, ctx)  # raises click.BadParameter when invalid


def port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def url_port(url: str) -> int:
    return urlsplit(url).port or (443 if url.startswith("https") else 80)


# -- Dockerfile -------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, rest in dockerfile():
        if ins == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                env[k] = v
    return env


def test_dockerfile_is_pinned_non_root_with_healthcheck_entrypoint_and_cmd() -> None:
    """Pinned python:3.11-slim base, non-root user, HEALTHCHECK on the admin port, shadowproxy run."""
    ins = dockerfile()
    froms = [r.split()[0] for i, r in ins if i == "FROM"]
    assert froms and all(
        re.match(r"python:3\.11\.\d+-slim[-\w]*(@sha256:[0-9a-f]{64})?$", f) for f in froms
    ), froms
    users = [r for i, r in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [i for i, _ in ins].index("USER") > max(n for n, (i, _) in enumerate(ins) if i == "RUN")
    entry = [json.loads(r) for i, r in ins if i == "ENTRYPOINT"]
    cmd = [json.loads(r) for i, r in ins if i == "CMD"]
    assert entry == [["shadowproxy"]] and cmd == [["run"]]
    assert cmd[0][0] in cli.commands
    env = docker_env()
    check_env("run", env)
    health = [r for i, r in ins if i == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    admin = port_of(env["SHADOWPROXY_ADMIN"])
    assert f"127.0.0.1:{admin}/healthz" in health[0]
    exposed = {int(p) for i, r in ins if i == "EXPOSE" for p in r.split()}
    assert exposed == {port_of(env["SHADOWPROXY_LISTEN"]), admin}


# -- compose ----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    docs = load_yaml_all(DOCKER / "compose.yaml")
    assert len(docs) == 1
    services: dict[str, Any] = docs[0]["services"]
    return services


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[1].split("/")[0]) for p in service.get("ports", [])}


def test_compose_has_kafka_in_kraft_mode_the_proxy_demo_backends_and_dashboard() -> None:
    """apache/kafka in KRaft mode; the proxy's env is `run`'s, the dashboard's is `dashboard`'s."""
    s = compose()
    assert set(s) >= {"kafka", "proxy", "live", "shadow", "dashboard"}
    kafka = s["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka["environment"]
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]

    proxy = s["proxy"]
    assert proxy["command"] == ["run"] and proxy["command"][0] in cli.commands
    env = {k: str(v) for k, v in proxy["environment"].items()}
    check_env("run", env, unresolved=frozenset({"SHADOWPROXY_ADMIN_TOKEN"}))  # ${...} from the shell
    assert container_ports(proxy) == {port_of(env["SHADOWPROXY_LISTEN"]), port_of(env["SHADOWPROXY_ADMIN"])}
    for side in ("live", "shadow"):
        url = env[f"SHADOWPROXY_{side.upper()}"]
        assert urlsplit(url).hostname == side
        args = build_parser().parse_args(s[side]["command"])  # the flags exist (argparse exits otherwise)
        assert (args.side, args.port) == (side, url_port(url))
        assert s[side]["entrypoint"] == ["python", "-m", "shadowproxy.demo_backend"]
    sink = urlsplit(env["SHADOWPROXY_SINK"])
    assert sink.scheme == "kafka" and f"PLAINTEXT://{sink.netloc}" in advertised

    dash = s["dashboard"]
    assert dash["command"] == ["dashboard"] and dash["command"][0] in cli.commands
    denv = {k: str(v) for k, v in dash["environment"].items()}
    check_env("dashboard", denv)
    assert urlsplit(denv["SHADOWPROXY_SOURCE"]).netloc == sink.netloc
    assert urlsplit(denv["SHADOWPROXY_SOURCE"]).path == sink.path
    assert container_ports(dash) == {port_of(denv["SHADOWPROXY_LISTEN"])}


# -- Kubernetes sidecar -----------------------------------------------------------------------


def k8s() -> dict[str, Any]:
    return {d["kind"]: d for d in load_yaml_all(DOCKER / "k8s" / "sidecar.yaml")}


def test_k8s_sidecar_pod_service_probes_and_env_agree_with_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """One Pod: app + proxy; Service -> proxy port; probes /healthz and /readyz on the admin port."""
    docs = k8s()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"app", "shadowproxy"}
    proxy, app = containers["shadowproxy"], containers["app"]
    assert proxy["args"][0] in cli.commands and proxy["args"] == ["run"]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    from_secrets = frozenset(k for k, v in env.items() if v is None)
    check_env("run", {k: v or "" for k, v in env.items()}, unresolved=from_secrets)
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports["proxy"] == port_of(env["SHADOWPROXY_LISTEN"])
    assert ports["admin"] == port_of(env["SHADOWPROXY_ADMIN"])
    live = urlsplit(env["SHADOWPROXY_LIVE"])
    assert live.hostname == "127.0.0.1" and live.port in {p["containerPort"] for p in app["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = proxy[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == ports["admin"]
    service_ports = docs["Service"]["spec"]["ports"]
    assert [ports.get(p["targetPort"], p["targetPort"]) for p in service_ports] == [ports["proxy"]]
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the rules mounted from the ConfigMap load, and their HMAC key env var is set in the container
    mount = next(m for m in proxy["volumeMounts"] if m["name"] == "rules")["mountPath"]
    assert env["SHADOWPROXY_RULES"].startswith(mount + "/")
    text = docs["ConfigMap"]["data"][Path(env["SHADOWPROXY_RULES"]).name]
    monkeypatch.setenv("REDACT_HMAC_KEY", "k")
    rules = load_rules_text(text, "sidecar.yaml")
    assert rules.rules.defaults.redact.hash_key_env in env
