"""Command line: ``python -m bridge serve|...``.

Each subcommand is a small function taking the parsed arguments; configuration comes from
``--config`` or the ``BRIDGE_CONFIG`` environment variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from bridge.config import Config, ConfigError, load_config

logger = logging.getLogger("bridge")

Command = Callable[[argparse.Namespace], int]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO carries nothing an operator needs; their debug output never
    # includes request bodies (where tokens live), but keep it quiet unless asked.
    for noisy in ("apscheduler", "urllib3", "waitress.queue"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def config_from(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("BRIDGE_CONFIG")
    if not path:
        raise ConfigError("(no file)", "", "give --config FILE or set BRIDGE_CONFIG")
    return load_config(path)


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.service import AlreadyRunning, serve
    from bridge.store import StoreError

    try:
        return serve(config_from(args))
    except (AlreadyRunning, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge",
                                     description="REDCap SMS opt-out bridge")
    parser.add_argument("--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=os.environ.get("BRIDGE_LOG_FORMAT", "text"),
                        choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook server and the worker")
    serve.add_argument("--config", help="config file (default: $BRIDGE_CONFIG)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    command: Command = args.func
    try:
        return command(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
