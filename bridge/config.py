"""Configuration: YAML files -> validated, frozen dataclasses.

Every mistake is reported as a ``ConfigError`` naming the file and the key, so an operator can
fix it without reading code. Nothing starts half-configured: ``load_config`` either returns a
complete ``Config`` or raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A configuration mistake, located by file and dotted key path."""

    def __init__(self, file: Path | str, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The URL Twilio calls, without the path (e.g. https://bridge.example.edu). Needed behind a
    # TLS-terminating proxy so signatures are checked against the URL Twilio actually signed.
    public_url: str | None = None
    # Bodies above this are refused before parsing (Twilio's largest is ~1600 chars of body plus
    # media URLs; 64 KiB leaves ample room).
    max_body_bytes: int = 65536
    threads: int = 8


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    keep_bodies_days: int = 90


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    auth_token: str = field(repr=False)


@dataclass(frozen=True)
class RedcapTarget:
    url: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class KeywordConfig:
    """Keyword sets for a project: shipped languages plus project-specific words.

    With ``replace`` the project's own lists replace the language sets instead of extending
    them (STOP, START and HELP always stay, as Twilio keeps them).
    """

    languages: tuple[str, ...] = ("en",)
    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    help: tuple[str, ...] = ()
    replace: bool = False


@dataclass(frozen=True)
class NotifyConfig:
    emails: tuple[str, ...]
    on: frozenset[str] = frozenset({"stop", "start", "unmatched", "failed"})
    digest_minutes: int = 0
    # More than this many notifications for one project within a minute are combined into a
    # digest instead of one email each.
    burst_limit: int = 5
    show_full_phone: bool = False


@dataclass(frozen=True)
class ForwardConfig:
    url: str
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class ProjectConfig:
    name: str
    source: Path  # the file this project was defined in, for error messages
    redcap: RedcapTarget
    phone_field: str
    opt_out_field: str
    numbers: tuple[str, ...] = ()  # E.164
    messaging_service_sids: tuple[str, ...] = ()
    phone_event: str | None = None
    opt_out_event: str | None = None
    opt_out_checkbox: str | None = None
    opt_out_checkbox_event: str | None = None
    timezone: str = "UTC"  # IANA name; defaults to the server's zone when loaded
    default_region: str = "US"
    keywords: KeywordConfig = KeywordConfig()
    revocation_phrases: str = "review"  # "review" (record + notify) or "apply" (treat as STOP)
    notify: NotifyConfig | None = None
    forward: ForwardConfig | None = None


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    from_addr: str
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class SyncConfig:
    """How the worker talks to REDCap."""

    # Per REDCap host, shared by every project on it. REDCap bans an IP past 600/minute.
    requests_per_minute: int = 300
    batch_size: int = 500  # records per import
    poll_seconds: float = 1.0
    index_refresh_minutes: float = 5.0
    index_full_refresh_hours: float = 24.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    max_attempts: int | None = None  # None: retry transient failures forever
    request_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class AdminConfig:
    token: str = field(repr=False)


@dataclass(frozen=True)
class Config:
    path: Path
    storage: StorageConfig
    twilio_accounts: tuple[TwilioAccount, ...]
    projects: tuple[ProjectConfig, ...]
    server: ServerConfig = ServerConfig()
    sync: SyncConfig = SyncConfig()
    smtp: SmtpConfig | None = None
    admin: AdminConfig | None = None

    def project(self, name: str) -> ProjectConfig:
        for project in self.projects:
            if project.name == name:
                return project
        raise KeyError(name)

    def auth_token(self, account_sid: str) -> str | None:
        for account in self.twilio_accounts:
            if account.account_sid == account_sid:
                return account.auth_token
        return None


def load_config(path: str | Path) -> Config:
    """Read, substitute ``${ENV}`` and validate a config file (and its ``projects_dir``)."""
    raise NotImplementedError
