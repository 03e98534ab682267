"""Helpers for the operator-facing tests: a config file matching the in-process ``Bridge``."""

from __future__ import annotations

import logging
from pathlib import Path

from bridge.cli import main
from bridge.sim import RedcapSimulator
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BRIDGE_NUMBER, PUBLIC_URL, SERVICE_SID
from tests.process import write_config


def project_entry(sim: RedcapSimulator, token: str, **overrides: object) -> dict:
    """A project as written in YAML, matching ``tests.conftest.project_config``."""
    entry: dict = {
        "name": "heart-study",
        "twilio": {"numbers": [BRIDGE_NUMBER], "messaging_service_sids": [SERVICE_SID]},
        "redcap": {"url": sim.api_url, "token": token},
        "phone_field": "mobile", "opt_out_field": "sms_opt_out",
        "opt_out_checkbox": "sms_opted_out", "timezone": "America/New_York",
    }
    entry.update(overrides)
    return {key: value for key, value in entry.items() if value is not None}


def bridge_yaml(tmp_path: Path, projects: list[dict], *, port: int = 8080,
                extra: dict | None = None) -> Path:
    """``tmp_path/bridge.yaml`` with the store at ``tmp_path/bridge.db``, as ``make_bridge``."""
    return write_config(tmp_path / "bridge.yaml", port=port, projects=projects,
                        accounts=[{"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}],
                        public_url=PUBLIC_URL, extra=extra)


def run_cli(argv: list[str]) -> int:
    """``bridge.cli.main`` in-process, leaving the root logger as it found it.

    ``main`` installs its own handler on the root logger (as a process would); restoring the
    previous ones keeps it from writing to a later test's captured streams.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
