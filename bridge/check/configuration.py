"""The first check: the configuration loads, and every ``${VAR}`` it uses is set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bridge.check.report import CheckResult, Status
from bridge.config import Config, ConfigError, load_config_without_secrets

SECTION = "configuration"


def load_checked(path: str | Path, environ: Mapping[str, str] | None = None,
                 ) -> tuple[Config | None, list[CheckResult]]:
    """The loaded config and its check line, or None and a line per problem.

    Every unset variable is reported in one run, not one per attempt: an operator preparing
    a systemd unit or a container wants the whole list.
    """
    try:
        config, missing = load_config_without_secrets(path, environ)
    except ConfigError as exc:
        hint = f"fix {exc.key} in {exc.file}" if exc.key else f"check the file {exc.file}"
        return None, [CheckResult(
            SECTION, "config.valid", Status.FAIL, str(exc),
            hint + "; config.example.yaml documents every setting")]
    if missing:
        return None, [CheckResult(
            SECTION, "config.environment", Status.FAIL,
            f"environment variable {exc.variable} is not set (used at {exc.file}: {exc.key})",
            f"set {exc.variable} where the bridge runs (the service's environment, e.g. a systemd"
            " EnvironmentFile=) and in this shell before running check",
            {"variable": exc.variable, "file": exc.file, "key": exc.key},
        ) for exc in missing]
    assert config is not None
    accounts = len(config.twilio_accounts)
    return config, [CheckResult(
        SECTION, "config.valid", Status.OK,
        f"config parses; every ${{VAR}} is set ({len(config.projects)} project"
        f"{'s' if len(config.projects) != 1 else ''}, {accounts} Twilio account"
        f"{'s' if accounts != 1 else ''})")]
