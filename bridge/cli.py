"""Command line: ``python -m bridge serve|demo|...``.

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
from contextlib import closing

from bridge import history
from bridge.config import Config, ConfigError, load_config, load_config_without_secrets
from bridge.logs import setup_logging
from bridge.retention import purge_bodies
from bridge.store import Store, StoreError

logger = logging.getLogger("bridge")

Command = Callable[[argparse.Namespace], int]
CONFIG_HELP = "config file (default: $BRIDGE_CONFIG)"


def config_path(args: argparse.Namespace) -> str:
    path = args.config or os.environ.get("BRIDGE_CONFIG")
    if not path:
        raise ConfigError("(no file)", "", "give --config FILE or set BRIDGE_CONFIG")
    return path


def config_from(args: argparse.Namespace) -> Config:
    return load_config(config_path(args))


def store_config_from(args: argparse.Namespace) -> Config:
    """The config for a command that only reads or re-queues in the store: its secrets may be
    unset, so an operator need not load the tokens into a shell to look at the history."""
    config, missing = load_config_without_secrets(config_path(args))
    needed = [m for m in missing if m.key.startswith("storage")]  # where the store is
    if config is None or needed:
        raise (needed or missing)[0]
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.http_server import ListenError
    from bridge.service import AlreadyRunning, serve
    from bridge.socket_activation import SocketActivationError
    from bridge.store import StoreError

    try:
        return serve(config_from(args))
    except (AlreadyRunning, ListenError, SocketActivationError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run

    return run(keep_running=args.keep_running)


def cmd_backfill(args: argparse.Namespace) -> int:
    from bridge.backfill import run

    return run(config_from(args), args.project, args.since, apply=args.apply, out=sys.stdout,
               err=sys.stderr)


class CliError(Exception):
    """A command cannot run as asked; the message is printed instead of a traceback."""


def open_store(config: Config) -> Store:
    """The existing store: a mistyped storage.path must not read as an empty history."""
    path = config.storage.path
    if not path.exists():
        raise CliError(f"no store at {path}: the bridge has not run with this configuration"
                       " (see storage.path)")
    return Store(path)


def _region(args: argparse.Namespace, config: Config) -> str:
    return (args.region or history.default_region(config, args.project)).upper()


def cmd_events(args: argparse.Namespace) -> int:
    config = store_config_from(args)
    with closing(open_store(config)) as store:
        project = history.check_project(args.project, config, store)
        where = history.EventFilter(
            project=project,
            phone=history.parse_phone(args.phone, _region(args, config)) if args.phone else None,
            since=history.parse_since(args.since) if args.since else None,
            status=history.parse_status(args.status) if args.status else None,
            limit=args.limit,
        )
        events = history.iter_events(store, where)
        sys.stdout.writelines(history.format_events(events, args.format, args.show_phone))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = store_config_from(args)
    with closing(open_store(config)) as store:
        summary = history.status_summary(config, store)
    if args.format == "json":
        print(json.dumps({"projects": [item.as_dict() for item in summary]}, indent=2))
    else:
        sys.stdout.write(history.status_table(summary))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    config = store_config_from(args)
    with closing(open_store(config)) as store:
        project = history.check_project(args.project, config, store)
        ids = history.retry_failed(store, project, args.job, unmatched=args.unmatched)
    what = "failed or unmatched" if args.unmatched else "failed"
    if ids:
        print(f"re-queued {len(ids)} {what} job{'s' if len(ids) != 1 else ''}:"
              f" {', '.join(map(str, ids))}; a running bridge picks them up at its next tick")
    else:
        print(f"no {what} jobs" + (f" in project {project}" if project else ""))
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    config = store_config_from(args)
    with closing(open_store(config)) as store:
        project = history.check_project(args.project, config, store)
        phone = history.parse_phone(args.phone, _region(args, config))
        lookup = history.consent_lookup(store, phone, project)
    if args.format == "json":
        print(json.dumps(lookup.as_dict(args.show_phone), indent=2))
    else:
        sys.stdout.write(history.consent_text(lookup, args.show_phone))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    config = store_config_from(args)
    with closing(open_store(config)) as store:
        result = purge_bodies(store, config.storage.keep_bodies_days)
    print(f"purged the text of {result.messages} messages and {result.notifications}"
          f" notifications received before {result.cutoff}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.check import render_json, render_text, run_checks

    report = run_checks(config_path(args), twilio=args.twilio)
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge",
                                     description="REDCap SMS opt-out bridge")
    parser.add_argument("--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=os.environ.get("BRIDGE_LOG_FORMAT", "text"),
                        choices=["text", "json"])
    # --config is read before the command name too ("python -m bridge --config F status"),
    # as the other options there are; given after it as well, that one wins.
    parser.add_argument("--config", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook server and the worker")
    serve.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="see it work: a simulated REDCap, the bridge, and"
                          " signed webhooks, all on this machine")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave both running afterwards and print a curl line to try")
    demo.set_defaults(func=cmd_demo)

    backfill = sub.add_parser(
        "backfill", help="compare Twilio's history of opt-outs/opt-ins with REDCap",
        description="Read inbound messages to the project's numbers from Twilio, take each"
        " sender's latest opt-out or opt-in, and list where REDCap disagrees. Twilio's history"
        " may be incomplete (REDCap erases its Twilio message logs).")
    backfill.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)
    backfill.add_argument("--project", required=True, help="project name")
    backfill.add_argument("--since", required=True,
                          help="YYYY-MM-DD or ISO date-time; the project's time zone if no offset")
    backfill.add_argument("--apply", action="store_true",
                          help="queue the differences as ordinary jobs (default: dry run)")
    backfill.set_defaults(func=cmd_backfill)


    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)
        parser.set_defaults(func=func)
        return parser

    region_help = "region for numbers written without a country code (default: the" \
        " project's default_region, else US)"
    events = command("events", cmd_events, "list the consent history (times in UTC)")
    events.add_argument("--project")
    events.add_argument("--phone", help="any format, e.g. '(555) 867-5309' or +15558675309")
    events.add_argument("--since", help="YYYY-MM-DD or an ISO date and time (UTC unless an"
                        " offset is given)")
    events.add_argument("--status", help="job outcome: " + ", ".join(history.JOB_STATUSES))
    events.add_argument("--limit", type=_positive_int, help="only the newest N events")
    events.add_argument("--format", choices=history.FORMATS, default="table")
    events.add_argument("--show-phone", action="store_true",
                        help="print full phone numbers (masked by default)")
    events.add_argument("--region", help=region_help)

    status = command("status", cmd_status, "per project: opt-outs, queue, last write, last"
                     " error")
    status.add_argument("--format", choices=("table", "json"), default="table")

    retry = command("retry", cmd_retry, "re-queue failed jobs once the cause is fixed")
    retry.add_argument("--project")
    retry.add_argument("--job", type=_positive_int, help="only this job (an ID from events)")
    retry.add_argument("--unmatched", action="store_true",
                       help="also opt-outs and opt-ins that matched no record, once the phone"
                            " field, event or rights are fixed or a record has the number")

    consent = command("consent", cmd_consent, "the current state of one number and its"
                      " history")
    consent.add_argument("phone", help="any format")
    consent.add_argument("--project")
    consent.add_argument("--format", choices=("table", "json"), default="table")
    consent.add_argument("--show-phone", action="store_true")
    consent.add_argument("--region", help=region_help)

    check = command("check", cmd_check, "verify the configuration, REDCap, SMTP (and Twilio)"
                    " before going live; exit 0 only when every check passes")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--twilio", action="store_true",
                       help="also check the Twilio credentials, numbers and services")

    command("purge", cmd_purge, "blank message bodies older than storage.keep_bodies_days"
            " now (serve also does it on a schedule)")
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # serve writes its log from a thread of its own (bridge.logs); one-off commands do not
    setup_logging(args.log_level, args.log_format, background=args.func is cmd_serve)
    command: Command = args.func
    try:
        return command(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except history.HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CliError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
