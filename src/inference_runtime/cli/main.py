"""Entry point of the ``inference-runtime`` console script."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from inference_runtime import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inference-runtime",
        description=(
            "Serve model inference behind an OpenAI-compatible API, as a supervised actor system."
        ),
    )
    parser.add_argument("--version", action="version", version=f"inference-runtime {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
