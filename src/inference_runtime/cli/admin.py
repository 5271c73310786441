"""The CLI's admin verbs (``deploy``, ``ls``, ``scale``, ``rm``, ``status``) over the server's
``/admin`` API: a small synchronous HTTP client and the tables it prints."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from inference_runtime.config import read_environment

DEFAULT_URL = "http://127.0.0.1:8080"


class AdminError(Exception):
    """The server refused (its error message), or could not be reached."""


def add_admin_commands(commands: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--url", help=f"the server (default: $INFERENCE_RUNTIME_URL, else {DEFAULT_URL})"
        )
        parser.add_argument(
            "--admin-key", help="the admin key (default: $INFERENCE_RUNTIME_ADMIN_KEY)"
        )
        parser.add_argument("--json", action="store_true", help="print the server's JSON")
        return parser

    deploy = common(commands.add_parser("deploy", help="create or update deployments from YAML"))
    deploy.add_argument(
        "-f", "--file", required=True, help="a deployment, a list, or a config with deployments:"
    )
    common(commands.add_parser("ls", help="list deployments"))
    scale = common(commands.add_parser("scale", help="set a deployment's replica count"))
    scale.add_argument("name")
    scale.add_argument("replicas", type=int)
    rm = common(commands.add_parser("rm", help="delete a deployment (its replicas drain first)"))
    rm.add_argument("name")
    common(commands.add_parser("status", help="deployments, replicas and nodes, as tables"))


class AdminClient:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = error.reason
            raise AdminError(f"{error.code}: {message}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AdminError(f"cannot reach {self.url}: {reason}") from None


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _specs(path: str) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise AdminError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise AdminError(f"{path}: not valid YAML: {error}") from None
    if isinstance(data, dict) and "deployments" in data:
        data = data["deployments"]
    specs = data if isinstance(data, list) else [data]
    if not specs or not all(isinstance(s, dict) and s.get("name") for s in specs):
        raise AdminError(
            f"{path}: expected a deployment (with a name), a list of them, or "
            "a config with deployments:"
        )
    return specs


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(header)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _deployment_rows(views: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            v["name"],
            v["runtime"],
            v["model"],
            f"{v['replicas']['ready']}/{v['replicas']['desired']}",
            v["state"],
            v["source"],
        ]
        for v in views
    ]


def _print_status(report: dict[str, Any], views: list[dict[str, Any]]) -> None:
    print(f"status: {report['status']}")
    print()
    header = ["NAME", "RUNTIME", "MODEL", "READY", "STATE", "SOURCE"]
    print(_table(_deployment_rows(views), header))
    replicas = [
        [
            r["id"],
            r["phase"],
            r["state"],
            r["placement"],
            r["in_flight"],
            r["restarts"],
            r["failures"],
            r["moves"],
            (r["last_error"] or "")[:60] or None,
        ]
        for v in views
        for r in v["replica_list"]
    ]
    if replicas:
        print()
        header = ["REPLICA", "PHASE", "STATE", "PLACEMENT", "IN FLIGHT", "RESTARTS",
                  "FAILURES", "MOVES", "LAST ERROR"]  # fmt: skip
        print(_table(replicas, header))
    messages = [(v["name"], v["message"]) for v in views if v["message"]]
    for name, message in messages:
        print(f"\n{name}: {message}")
    errors = [  # the table shows the start of each; here, the whole reason
        (r["id"], r["last_error"])
        for v in views
        for r in v["replica_list"]
        if r["last_error"] and r["state"] != "healthy"
    ]
    for replica, error in errors:
        print(f"\n{replica} failed: {error}")
    nodes = [
        [node_id, n["cpus"], n["memory_mib"] // 1024, len(n["gpus"]),
         ", ".join(f"{g['index']}:{g['name']}({len(g['replicas'])})" for g in n["gpus"]) or None]
        for node_id, n in report.get("nodes", {}).items()
    ]  # fmt: skip
    if nodes:
        print()
        print(_table(nodes, ["NODE", "CPUS", "MEMORY GIB", "GPUS", "GPU (REPLICAS)"]))


def run_admin(args: argparse.Namespace) -> int:
    env = read_environment()
    client = AdminClient(
        args.url or env.url or DEFAULT_URL, args.admin_key or env.admin_key.reveal()
    )
    try:
        return _run(client, args)
    except AdminError as error:
        print(f"inference-runtime {args.command}: {error}", file=sys.stderr)
        return 1


def _run(client: AdminClient, args: argparse.Namespace) -> int:
    if args.command == "deploy":
        for spec in _specs(args.file):
            view = client.call("PUT", f"/admin/deployments/{_quote(spec['name'])}", spec)
            if args.json:
                print(json.dumps(view, indent=2))
            else:
                print(f"deployment {view['name']} applied (revision {view['revision']}, "
                      f"{view['replicas']['desired']} replicas, {view['state']})")  # fmt: skip
    elif args.command == "ls":
        views = client.call("GET", "/admin/deployments")["data"]
        if args.json:
            print(json.dumps(views, indent=2))
        else:
            header = ["NAME", "RUNTIME", "MODEL", "READY", "STATE", "SOURCE"]
            print(_table(_deployment_rows(views), header))
    elif args.command == "scale":
        view = client.call(
            "POST", f"/admin/deployments/{_quote(args.name)}/scale", {"replicas": args.replicas}
        )
        print(json.dumps(view, indent=2) if args.json else
              f"deployment {view['name']} scaled to {args.replicas} replicas")  # fmt: skip
    elif args.command == "rm":
        client.call("DELETE", f"/admin/deployments/{_quote(args.name)}")
        print(f"deployment {args.name} deleted (its replicas drain, then stop)")
    elif args.command == "status":
        report = client.call("GET", "/admin/status")
        views = client.call("GET", "/admin/deployments")["data"]
        if args.json:
            print(json.dumps({**report, "deployments": views}, indent=2))
        else:
            _print_status(report, views)
    return 0
