"""Entry point of the ``inference-runtime`` console script."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

import msgspec

from inference_runtime.cli.admin import add_admin_commands, run_admin
from inference_runtime.config import (
    RuntimeConfig,
    default_config,
    load_config,
    read_environment,
)
from inference_runtime.event_loop import loop_factory
from inference_runtime.event_loop import run as run_event_loop
from inference_runtime.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inference-runtime",
        description=(
            "Serve model inference behind an OpenAI-compatible API, as a supervised actor system."
        ),
    )
    parser.add_argument("--version", action="version", version=f"inference-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="start the server (the built-in SmolLM2 chat and MiniLM embedding models, "
        "or the deployments of --config)",
    )
    serve.add_argument(
        "--config",
        "-c",
        help="YAML config (gateway:, deployments:); default: $INFERENCE_RUNTIME_CONFIG",
    )
    serve.add_argument("--host", help="override gateway.host")
    serve.add_argument("--port", type=int, help="override gateway.port")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve on a non-loopback address with no API key configured",
    )
    serve.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run every replica in a Ray actor on a Ray cluster (cluster.backend: ray); "
        "ADDRESS: the cluster to join (default: cluster.address, else the one `ray start` "
        "began on this machine, else a new local one)",
    )
    serve.add_argument(
        "--role",
        choices=("head", "gateway"),
        help="with --ray: head (default) runs the catalog, placement and replicas and a "
        "gateway; gateway runs only a gateway that serves the head's deployments "
        "(cluster.role), e.g. one more per node",
    )
    serve.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        help="override gateway.event_loop (default auto: uvloop when installed)",
    )
    add_admin_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    env = read_environment()
    logging.basicConfig(
        level=getattr(logging, env.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path = args.config or env.config
    try:
        config = load_config(path) if path else default_config()
    except ValueError as error:
        print(f"inference-runtime serve: {error}", file=sys.stderr)
        return 2
    host = args.host or env.host or config.gateway.host
    port = args.port if args.port is not None else env.port
    overrides = {
        "host": host,
        "port": port if port is not None else config.gateway.port,
        "event_loop": args.event_loop or env.event_loop or config.gateway.event_loop,
    }
    try:
        gateway = RuntimeConfig.from_dict(
            {"gateway": {**_builtins(config.gateway), **overrides}, "deployments": []}
        ).gateway
        loop_factory(gateway.event_loop)
    except ValueError as error:
        print(f"inference-runtime serve: {error}", file=sys.stderr)
        return 2
    auth = config.auth
    if args.allow_unauthenticated:
        auth = msgspec.structs.replace(auth, allow_unauthenticated=True)
    changes: dict[str, object] = {}
    if args.ray is not None:
        changes.update(backend="ray", address=args.ray or config.cluster.address)
    if args.role is not None:
        changes["role"] = args.role
    try:  # checked as a whole: a gateway needs Ray
        cluster = msgspec.structs.replace(config.cluster, **changes)
        config = msgspec.structs.replace(config, gateway=gateway, auth=auth, cluster=cluster)
    except ValueError as error:
        print(f"inference-runtime serve: {error}", file=sys.stderr)
        return 2

    from inference_runtime.runtime import Runtime

    try:
        run_event_loop(Runtime(config).serve_forever(), choice=gateway.event_loop)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            shown = f"[{host}]" if ":" in host else host
            print(
                f"inference-runtime serve: {shown}:{overrides['port']} is already in use",
                file=sys.stderr,
            )
        else:
            # the address check's own words, else the error with the file it names
            words = error.strerror if error.strerror and error.filename is None else error
            print(f"inference-runtime serve: {words}", file=sys.stderr)
        return 1
    except ValueError as error:  # a config the runtime refuses (auth, storage, deployments)
        print(f"inference-runtime serve: {error}", file=sys.stderr)
        return 2
    return 0


def _builtins(value: object) -> dict[str, object]:
    result: dict[str, object] = msgspec.to_builtins(value)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("deploy", "ls", "scale", "rm", "status"):
        return run_admin(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
