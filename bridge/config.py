"""Configuration: YAML files -> validated, frozen dataclasses.

Every mistake is reported as a ``ConfigError`` naming the file and the key, so an operator can
fix it without reading code. Nothing starts half-configured: ``load_config`` either returns a
complete ``Config`` or raises.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import functools
import math
import os
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import SplitResult, urlsplit, urlunsplit

import phonenumbers
import yaml


class ConfigError(Exception):
    """A configuration mistake, located by file and dotted key path."""

    def __init__(self, file: Path | str, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


class MissingVariable(ConfigError):
    """A ``${NAME}`` reference to an environment variable that is not set.

    Its own type so ``check`` can list every missing variable at once instead of one per run.
    """

    def __init__(self, file: Path | str, key: str, variable: str) -> None:
        self.variable = variable
        super().__init__(file, key, f"environment variable {variable} is not set")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The base URL Twilio calls, without /twilio/sms: https://bridge.example.edu, or with a path
    # prefix such as https://www.example.edu/sms-bridge; never a trailing slash. Needed behind a
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


# Stands in for an unset variable in load_config_without_secrets. It has the shape of a
# REDCap or Twilio token; where it does not fit, loading stops there.
_PLACEHOLDER = "0" * 32
_MAX_VARIABLES = 100


def load_config_without_secrets(path: str | Path, environ: Mapping[str, str] | None = None,
                                ) -> tuple[Config | None, list[MissingVariable]]:
    """``load_config`` with every unset ``${NAME}`` filled by a placeholder, and their list.

    For what needs the file but none of its secrets: ``check`` (which lists every unset
    variable at once rather than one per run) and the commands that only read or re-queue in
    the store (``status``, ``events``, ``consent``, ``retry``, ``purge``), which an operator
    should be able to run without loading the tokens into a shell. The config is None when a
    placeholder did not fit where a variable was used; the list then says what to set. A
    mistake that is not an unset variable raises ConfigError as usual.
    """
    env = dict(os.environ if environ is None else environ)
    missing: list[MissingVariable] = []
    for _ in range(_MAX_VARIABLES):
        try:
            return load_config(path, env), missing
        except MissingVariable as exc:
            missing.append(exc)
            env[exc.variable] = _PLACEHOLDER
        except ConfigError:
            # After a placeholder, most likely the placeholder not fitting where the variable
            # is used: the real value may well fit, so what to report is the unset variable.
            if missing:
                return None, missing
            raise
    return None, missing


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute ``${ENV}`` and validate a config file (and its ``projects_dir``).

    ``environ`` replaces ``os.environ`` as the source of ``${NAME}`` values, so tests and the
    ``check`` command can validate a file without touching the process environment.
    """
    file = Path(os.path.abspath(path))  # abspath, not resolve: a symlinked file keeps its folder
    root = _Section(
        _read_mapping_file(file), file, "", os.environ if environ is None else environ, _TOP_KEYS
    )
    server = _parse_server(root.section("server", _SERVER_KEYS))
    storage = _parse_storage(root.section("storage", _STORAGE_KEYS))
    accounts = _parse_twilio_accounts(root.section("twilio", _TWILIO_KEYS))
    sync = _parse_sync(root.section("sync", _SYNC_KEYS))
    smtp_section = root.optional_section("smtp", _SMTP_KEYS)
    smtp = None if smtp_section is None else _parse_smtp(smtp_section)
    admin_section = root.optional_section("admin", _ADMIN_KEYS)
    admin = None if admin_section is None else _parse_admin(admin_section)
    projects = _load_projects(root, smtp_configured=smtp is not None)
    return Config(
        path=file,
        storage=storage,
        twilio_accounts=accounts,
        projects=projects,
        server=server,
        sync=sync,
        smtp=smtp,
        admin=admin,
    )


# The keys each section accepts. Anything else is reported as a typo, with the closest match.
_TOP_KEYS = ("server", "storage", "twilio", "sync", "smtp", "admin", "projects_dir", "projects")
_SERVER_KEYS = ("host", "port", "public_url", "max_body_bytes", "threads")
_STORAGE_KEYS = ("path", "keep_bodies_days")
_TWILIO_KEYS = ("accounts",)
_ACCOUNT_KEYS = ("account_sid", "auth_token")
_SYNC_KEYS = (
    "requests_per_minute",
    "batch_size",
    "poll_seconds",
    "index_refresh_minutes",
    "index_full_refresh_hours",
    "retry_base_seconds",
    "retry_max_seconds",
    "max_attempts",
    "request_timeout_seconds",
)
_SMTP_KEYS = ("host", "port", "starttls", "ssl", "username", "password", "from", "timeout_seconds")
_ADMIN_KEYS = ("token",)
_PROJECT_KEYS = (
    "name",
    "twilio",
    "redcap",
    "phone_field",
    "phone_event",
    "opt_out_field",
    "opt_out_event",
    "opt_out_checkbox",
    "opt_out_checkbox_event",
    "timezone",
    "default_region",
    "keywords",
    "revocation_phrases",
    "notify",
    "forward",
)
_PROJECT_TWILIO_KEYS = ("numbers", "messaging_service_sids")
_REDCAP_KEYS = ("url", "token")
_KEYWORD_KEYS = ("languages", "stop", "start", "help", "replace")
_NOTIFY_KEYS = ("emails", "on", "digest_minutes", "burst_limit", "show_full_phone")
_FORWARD_KEYS = ("url", "timeout_seconds")

_NOTIFY_EVENTS = ("stop", "start", "unmatched", "failed", "help", "review")
_REVOCATION_MODES = ("review", "apply")
# Twilio abandons a webhook after 15 s in total, so a forward must give up before that.
_TWILIO_WEBHOOK_SECONDS = 15.0
_MIN_ADMIN_TOKEN_LENGTH = 16

# Twilio's own OpenAPI patterns allow either case of hex after the prefix.
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_AUTH_TOKEN = re.compile(r"[0-9a-fA-F]{32}")
_REDCAP_TOKEN = re.compile(r"[0-9A-F]{32}")
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")  # REDCap's rule for variable names
_EVENT_NAME = re.compile(r"[a-z0-9_]+")  # REDCap's generated unique event names
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*")
_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>.]+(?:\.[^@\s<>.]+)+")
# $${ is a literal "${"; ${NAME} is substituted; any other "${" is a mistake worth reporting.
_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")

_T = TypeVar("_T")


class _Required(enum.Enum):
    """Marks a setting without a default (a type, unlike ``object()``, that hints can name)."""

    TOKEN = enum.auto()


_REQUIRED = _Required.TOKEN


class _YamlLoader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 booleans and duplicate keys refused.

    YAML 1.1 reads unquoted yes/no/on/off/y/n as booleans, which would turn ``notify: {on: …}``
    into a ``True`` key and ``default_region: NO`` (Norway) into ``False``. Here only true and
    false are booleans, so ``starttls: yes`` arrives as a string and is reported as one. A key
    given twice is almost always an editing mistake that PyYAML would silently settle by keeping
    the last value.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            # Keys merged in with "<<" may legitimately be overridden, so only own keys count.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_mapping_file(file: Path) -> dict[Any, Any]:
    """The top-level mapping of a YAML file, or a ``ConfigError`` saying why there is none."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read the file: {exc.strerror or exc}") from None
    loader = _YamlLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(file, "", f"not valid YAML: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(file, "", "the file is empty; expected a mapping of settings")
    if not isinstance(data, dict):
        raise ConfigError(
            file, "", f"expected a mapping of settings at the top level, got {_describe(data)}"
        )
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint as one line, with the 1-based line and column where it noticed."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc)


class _Section:
    """One YAML mapping that knows its file and dotted key path.

    Every value is read through here, so every type error, missing key and bad value is
    reported with its location without the parsing code threading it through by hand. Unknown
    keys are refused on construction, before anything else can be misread because of a typo.
    A key set to null counts as absent, so it takes its default.
    """

    def __init__(
        self,
        data: object,
        file: Path,
        path: str,
        environ: Mapping[str, str],
        keys: Sequence[str],
    ) -> None:
        self.file = file
        self.path = path
        self.environ = environ
        if not isinstance(data, dict):
            raise ConfigError(file, path, _type_error("a mapping of settings", data))
        for key in data:
            if not isinstance(key, str):
                raise self.error("", f"key {key!r} is not a setting name")
            if key not in keys:
                raise self.error(key, _unknown_key(key, keys))
        self._data: dict[str, object] = data

    def key(self, name: str) -> str:
        """The dotted path of ``name`` in this section, as shown in errors."""
        if not name:
            return self.path
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def has(self, name: str) -> bool:
        return self._data.get(name) is not None

    def section(self, name: str, keys: Sequence[str]) -> _Section:
        """A nested mapping; an absent one reads as empty, so its settings take their defaults."""
        value = self._data.get(name)
        return _Section(
            {} if value is None else value, self.file, self.key(name), self.environ, keys
        )

    def optional_section(self, name: str, keys: Sequence[str]) -> _Section | None:
        """A nested mapping whose mere presence switches a feature on (smtp, notify, …)."""
        return self.section(name, keys) if self.has(name) else None

    def sections(self, name: str, keys: Sequence[str], *, required: bool) -> list[_Section]:
        """A list of mappings, such as ``twilio.accounts`` or ``projects``."""
        value = self._data.get(name)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise self.error(name, _type_error("a list", value))
        if required and not value:
            raise self.error(name, "needs at least one entry")
        return [
            _Section(item, self.file, f"{self.key(name)}[{index}]", self.environ, keys)
            for index, item in enumerate(value)
        ]

    @overload
    def text(self, name: str) -> str: ...

    @overload
    def text(self, name: str, default: _T) -> str | _T: ...

    def text(self, name: str, default: object = _REQUIRED) -> object:
        """A non-empty string with ``${NAME}`` references filled in from the environment."""
        value = self._data.get(name)
        if value is None:
            if default is _REQUIRED:
                raise self.error(name, "missing; this setting is required")
            return default
        return self._string(name, value)

    def texts(self, name: str, default: tuple[str, ...] | _Required = _REQUIRED) -> tuple[str, ...]:
        """A list of non-empty strings; a required list must have at least one entry."""
        value = self._data.get(name)
        if value is None:
            if isinstance(default, _Required):
                raise self.error(name, "missing; this setting is required")
            return default
        if not isinstance(value, list):
            raise self.error(name, _type_error("a list", value))
        if not value and isinstance(default, _Required):
            raise self.error(name, "needs at least one entry")
        return tuple(self._string(f"{name}[{index}]", item) for index, item in enumerate(value))

    def integer(
        self, name: str, default: _T, *, minimum: int = 1, maximum: int | None = None
    ) -> int | _T:
        value = self._data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, _type_error("a whole number", value))
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return value

    def positive_number(self, name: str, default: float) -> float:
        """A duration or similar: integers and decimals both welcome, but above zero."""
        value = self._data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, _type_error("a number", value))
        if not 0 < value < math.inf:
            raise self.error(name, f"must be a number above 0, got {value}")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, _type_error("true or false", value))
        return value

    def _string(self, name: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.error(name, _type_error("a string", value))
        value = _ENV_REFERENCE.sub(lambda match: self._environment_value(name, match), value)
        if not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def _environment_value(self, name: str, match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        variable = match.group(1)
        if variable is None:
            raise self.error(
                name,
                "'${' must be followed by a variable name and '}' (write $${ for a literal ${)",
            )
        if variable not in self.environ:
            raise MissingVariable(self.file, self.key(name), variable)
        return self.environ[variable]


def _describe(value: object) -> str:
    """A value's YAML type (and the value, when short and harmless) for an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value if len(value) <= 40 else value[:37] + '...'!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"  # e.g. an unquoted 2024-01-31 is a date


def _type_error(expected: str, value: object) -> str:
    """'expected X, got Y', plus the fix for the usual YAML surprises."""
    message = f"expected {expected}, got {_describe(value)}"
    if expected == "a string" and isinstance(value, int | float) and not isinstance(value, bool):
        return message + "; put it in quotes (YAML reads an unquoted +18057166646 as a number)"
    if expected == "true or false" and isinstance(value, str):
        return message + "; write true or false without quotes"
    if isinstance(value, str) and expected in ("a whole number", "a number"):
        if "${" in value:
            return message + "; ${NAME} can only fill in text settings"
        return message + "; remove the quotes"
    return message


def _unknown_key(key: str, keys: Sequence[str]) -> str:
    return f"unknown key {key!r}" + (
        _suggestion(key, keys) or f"; expected one of: {', '.join(keys)}"
    )


def _suggestion(word: str, choices: Iterable[str]) -> str:
    """'; did you mean …?' for the closest choice, or nothing when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _matching(s: _Section, name: str, value: str, pattern: re.Pattern[str], expected: str) -> str:
    if not pattern.fullmatch(value):
        raise s.error(name, f"expected {expected}, got {value!r}")
    return value


def _secret(s: _Section, name: str, pattern: re.Pattern[str], expected: str) -> str:
    """A token checked for shape; the message describes it without ever echoing it."""
    value = s.text(name)
    if not pattern.fullmatch(value):
        raise s.error(name, f"expected {expected}; the value given has {len(value)} characters")
    return value


def _http_url(s: _Section, name: str, value: str) -> SplitResult:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 -- the property raises ValueError on a malformed port
    except ValueError:
        raise s.error(name, f"has an invalid port: {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise s.error(name, f"expected an http:// or https:// URL with a host, got {value!r}")
    if "#" in value:
        raise s.error(name, f"must not contain a #fragment, got {value!r}")
    return parts


def _redcap_url(s: _Section, name: str) -> str:
    """The API endpoint, normalised to end in ``/api/``.

    Without the slash the web server usually answers with a redirect, which HTTP clients follow
    as a GET: the import would be lost. Any other path is a mistake (often the REDCap home page).
    """
    value = s.text(name)
    parts = _http_url(s, name, value)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if parts.query or not path.endswith("/api/"):
        raise s.error(
            name,
            "expected REDCap's API endpoint, ending in /api/ with no query string "
            f"(e.g. https://redcap.example.edu/api/), got {value!r}",
        )
    return urlunsplit(parts._replace(path=path))


# The paths Twilio is given in its console; server.public_url is what comes before them.
_WEBHOOK_PATHS = ("/twilio/sms", "/twilio/events")


def _public_url(s: _Section, name: str) -> str | None:
    """The base URL Twilio calls: a path prefix is kept, a trailing slash is dropped."""
    value = s.text(name, None)
    if value is None:
        return None
    parts = _http_url(s, name, value)
    if parts.query:
        raise s.error(name, f"must not have a query string, got {value!r}")
    path = parts.path.rstrip("/")
    for route in _WEBHOOK_PATHS:
        if path.endswith(route):
            # The bridge appends the path it was called on; with the route in the base too,
            # the URL it checks the signature against is never Twilio's, and every webhook
            # would be refused with 403.
            raise s.error(name, f"is the base URL, without the webhook's path: got {value!r},"
                          f" give {urlunsplit(parts._replace(path=path[:-len(route)]))!r}")
    return urlunsplit(parts._replace(path=path))


def _e164(s: _Section, name: str, value: str) -> str:
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise s.error(
            name, f"expected a valid phone number in E.164 form, like +18057166646, got {value!r}"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email(s: _Section, name: str, value: str) -> str:
    return _matching(s, name, value, _EMAIL, "an email address like team@example.edu")


def _resolve(base: Path, value: str) -> Path:
    """A path from the config, taken relative to the config file's folder unless absolute."""
    return Path(os.path.normpath(base / value))


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _local_timezone(
    localtime: Path = Path("/etc/localtime"), timezone_file: Path = Path("/etc/timezone")
) -> str:
    """The server's IANA zone name, for projects that do not name one.

    ``TZ`` decides when set (a POSIX rule such as ``EST5EDT,M3.2.0,M11.1.0`` has no IANA name,
    so it yields UTC); otherwise the ``/etc/localtime`` symlink or ``/etc/timezone``. When none
    of these names a known zone, the answer is UTC rather than a guess.
    """
    tz = os.environ.get("TZ")
    if tz:
        candidates = [tz.removeprefix(":")]
    else:
        candidates = []
        with contextlib.suppress(OSError):
            target = str(localtime.readlink())
            if "zoneinfo/" in target:
                candidates.append(target.rsplit("zoneinfo/", 1)[1])
        with contextlib.suppress(OSError, UnicodeDecodeError):
            candidates.append(timezone_file.read_text(encoding="utf-8").strip())
    return next((name for name in candidates if name in _known_timezones()), "UTC")


def _parse_server(s: _Section) -> ServerConfig:
    return ServerConfig(
        host=s.text("host", ServerConfig.host),
        port=s.integer("port", ServerConfig.port, maximum=65535),
        public_url=_public_url(s, "public_url"),
        max_body_bytes=s.integer("max_body_bytes", ServerConfig.max_body_bytes),
        threads=s.integer("threads", ServerConfig.threads),
    )


def _parse_storage(s: _Section) -> StorageConfig:
    return StorageConfig(
        path=_resolve(s.file.parent, s.text("path")),
        keep_bodies_days=s.integer("keep_bodies_days", StorageConfig.keep_bodies_days),
    )


def _parse_twilio_accounts(s: _Section) -> tuple[TwilioAccount, ...]:
    accounts: list[TwilioAccount] = []
    first_seen: dict[str, str] = {}
    for item in s.sections("accounts", _ACCOUNT_KEYS, required=True):
        sid = _matching(
            item,
            "account_sid",
            item.text("account_sid"),
            _ACCOUNT_SID,
            "an account SID: 'AC' and 32 hex characters",
        )
        if sid in first_seen:
            raise item.error(
                "account_sid", f"account {sid} is listed twice (also at {first_seen[sid]})"
            )
        first_seen[sid] = item.key("account_sid")
        token = _secret(
            item, "auth_token", _AUTH_TOKEN, "the account's auth token: 32 hex characters"
        )
        accounts.append(TwilioAccount(account_sid=sid, auth_token=token))
    return tuple(accounts)


def _parse_sync(s: _Section) -> SyncConfig:
    retry_base = s.positive_number("retry_base_seconds", SyncConfig.retry_base_seconds)
    retry_max = s.positive_number("retry_max_seconds", SyncConfig.retry_max_seconds)
    if retry_max < retry_base:
        raise s.error("retry_max_seconds", f"must be at least retry_base_seconds ({retry_base:g})")
    return SyncConfig(
        requests_per_minute=s.integer("requests_per_minute", SyncConfig.requests_per_minute),
        batch_size=s.integer("batch_size", SyncConfig.batch_size),
        poll_seconds=s.positive_number("poll_seconds", SyncConfig.poll_seconds),
        index_refresh_minutes=s.positive_number(
            "index_refresh_minutes", SyncConfig.index_refresh_minutes
        ),
        index_full_refresh_hours=s.positive_number(
            "index_full_refresh_hours", SyncConfig.index_full_refresh_hours
        ),
        retry_base_seconds=retry_base,
        retry_max_seconds=retry_max,
        max_attempts=s.integer("max_attempts", SyncConfig.max_attempts),
        request_timeout_seconds=s.positive_number(
            "request_timeout_seconds", SyncConfig.request_timeout_seconds
        ),
    )


def _parse_smtp(s: _Section) -> SmtpConfig:
    host = s.text("host")
    ssl = s.flag("ssl", SmtpConfig.ssl)
    # STARTTLS is the default only where it makes sense: not on top of implicit TLS.
    starttls = s.flag("starttls", SmtpConfig.starttls and not ssl)
    if ssl and starttls:
        raise s.error(
            "ssl",
            "ssl and starttls cannot both be true: ssl speaks TLS from the first byte "
            "(usually port 465), starttls upgrades a plain connection (usually port 587)",
        )
    username = s.text("username", None)
    password = s.text("password", None)
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise s.error(missing, "missing; username and password go together: give both or neither")
    from_addr = s.text("from")
    _email(s, "from", parseaddr(from_addr)[1])
    return SmtpConfig(
        host=host,
        from_addr=from_addr,
        port=s.integer("port", 465 if ssl else SmtpConfig.port, maximum=65535),
        starttls=starttls,
        ssl=ssl,
        username=username,
        password=password,
        timeout_seconds=s.positive_number("timeout_seconds", SmtpConfig.timeout_seconds),
    )


def _parse_admin(s: _Section) -> AdminConfig:
    token = s.text("token")
    if len(token) < _MIN_ADMIN_TOKEN_LENGTH:
        raise s.error(
            "token",
            f"too short to be a secret: use at least {_MIN_ADMIN_TOKEN_LENGTH} characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)",
        )
    return AdminConfig(token=token)


def _load_projects(root: _Section, *, smtp_configured: bool) -> tuple[ProjectConfig, ...]:
    local_timezone = _local_timezone()
    projects: list[ProjectConfig] = []
    defined_at: dict[str, str] = {}
    for section, default_name in _project_sections(root):
        project = _parse_project(
            section, default_name, local_timezone=local_timezone, smtp_configured=smtp_configured
        )
        where = f"{section.file} ({section.key('name')})"
        if project.name in defined_at:
            raise section.error(
                "name", f"project {project.name!r} is already defined in {defined_at[project.name]}"
            )
        defined_at[project.name] = where
        projects.append(project)
    if not projects:
        raise root.error(
            "projects", "no projects: list them under projects: or put files in projects_dir"
        )
    return tuple(projects)


def _project_sections(root: _Section) -> Iterator[tuple[_Section, str | None]]:
    """Inline projects, then one per ``*.yaml``/``*.yml`` file in ``projects_dir`` by name.

    Each comes with its default name: none inline, the file's stem for a file. Files whose
    name starts with a dot (editor and macOS leftovers) are skipped.
    """
    for section in root.sections("projects", _PROJECT_KEYS, required=False):
        yield section, None
    projects_dir = root.text("projects_dir", None)
    if projects_dir is None:
        return
    directory = _resolve(root.file.parent, projects_dir)
    if not directory.is_dir():
        raise root.error("projects_dir", f"not a directory: {directory}")
    files = sorted(
        entry
        for entry in directory.iterdir()
        if entry.suffix in (".yaml", ".yml") and not entry.name.startswith(".") and entry.is_file()
    )
    for file in files:
        yield _Section(_read_mapping_file(file), file, "", root.environ, _PROJECT_KEYS), file.stem


def _parse_project(
    s: _Section, default_name: str | None, *, local_timezone: str, smtp_configured: bool
) -> ProjectConfig:
    name = s.text("name") if default_name is None else s.text("name", default_name)
    _matching(
        s,
        "name",
        name,
        _PROJECT_NAME,
        "a project name of up to 64 letters, digits, '.', '_' or '-'"
        + ("" if s.has("name") else " (it comes from the file name unless name: is set)"),
    )
    numbers, service_sids = _parse_project_twilio(s)
    redcap = s.section("redcap", _REDCAP_KEYS)
    target = RedcapTarget(
        url=_redcap_url(redcap, "url"),
        token=_secret(
            redcap, "token", _REDCAP_TOKEN, "a REDCap API token: 32 uppercase hex characters"
        ),
    )
    phone_field = _field(s, "phone_field")
    opt_out_field = _field(s, "opt_out_field")
    opt_out_checkbox = _field(s, "opt_out_checkbox", None)
    phone_event, opt_out_event, checkbox_event = _parse_events(s, opt_out_checkbox)
    timezone = s.text("timezone", local_timezone)
    if timezone not in _known_timezones():
        raise s.error(
            "timezone",
            f"unknown time zone {timezone!r}, expected an IANA name like America/New_York"
            + _suggestion(timezone, _known_timezones()),
        )
    region = s.text("default_region", ProjectConfig.default_region).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise s.error("default_region", f"unknown region {region!r}; expected a code like US or GB")
    revocation = s.text("revocation_phrases", ProjectConfig.revocation_phrases)
    if revocation not in _REVOCATION_MODES:
        raise s.error("revocation_phrases", f"expected review or apply, got {revocation!r}")
    keywords = s.optional_section("keywords", _KEYWORD_KEYS)
    notify = s.optional_section("notify", _NOTIFY_KEYS)
    if notify is not None and not smtp_configured:
        raise s.error("notify", "email notifications need an smtp section in the main config file")
    forward = s.optional_section("forward", _FORWARD_KEYS)
    return ProjectConfig(
        name=name,
        source=s.file,
        redcap=target,
        phone_field=phone_field,
        opt_out_field=opt_out_field,
        numbers=numbers,
        messaging_service_sids=service_sids,
        phone_event=phone_event,
        opt_out_event=opt_out_event,
        opt_out_checkbox=opt_out_checkbox,
        opt_out_checkbox_event=checkbox_event,
        timezone=timezone,
        default_region=region,
        keywords=ProjectConfig.keywords if keywords is None else _parse_keywords(keywords),
        revocation_phrases=revocation,
        notify=None if notify is None else _parse_notify(notify),
        forward=None if forward is None else _parse_forward(forward),
    )


@overload
def _field(s: _Section, name: str) -> str: ...


@overload
def _field(s: _Section, name: str, default: None) -> str | None: ...


def _field(s: _Section, name: str, default: _Required | None = _REQUIRED) -> str | None:
    """A REDCap variable name (a typo here would only surface as REDCap errors later)."""
    value = s.text(name) if isinstance(default, _Required) else s.text(name, default)
    if value is None:
        return None
    return _matching(
        s,
        name,
        value,
        _FIELD_NAME,
        "a REDCap field name: lowercase letters, digits and underscores, starting with a letter",
    )


def _parse_project_twilio(s: _Section) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The numbers and Messaging Services whose inbound messages belong to this project.

    The same number or service may appear in several projects: its messages go to each.
    """
    twilio = s.section("twilio", _PROJECT_TWILIO_KEYS)
    numbers: list[str] = []
    for index, value in enumerate(twilio.texts("numbers", ())):
        number = _e164(twilio, f"numbers[{index}]", value)
        if number in numbers:
            raise twilio.error(f"numbers[{index}]", f"{number} is listed twice")
        numbers.append(number)
    service_sids: list[str] = []
    for index, value in enumerate(twilio.texts("messaging_service_sids", ())):
        key = f"messaging_service_sids[{index}]"
        sid = _matching(twilio, key, value, _SERVICE_SID, "'MG' and 32 hex characters")
        if sid in service_sids:
            raise twilio.error(key, f"{sid} is listed twice")
        service_sids.append(sid)
    if not numbers and not service_sids:
        raise s.error(
            "twilio",
            "needs at least one entry in numbers or messaging_service_sids: "
            "they decide which inbound messages belong to this project",
        )
    return tuple(numbers), tuple(service_sids)


def _parse_events(
    s: _Section, opt_out_checkbox: str | None
) -> tuple[str | None, str | None, str | None]:
    """The events of a longitudinal project: all of them, or none for a classic project."""
    events = {
        name: s.text(name, None)
        for name in ("phone_event", "opt_out_event", "opt_out_checkbox_event")
    }
    for name, value in events.items():
        if value is not None:
            _matching(s, name, value, _EVENT_NAME, "a REDCap unique event name like baseline_arm_1")
    if events["opt_out_checkbox_event"] is not None and opt_out_checkbox is None:
        raise s.error(
            "opt_out_checkbox_event", "is set but opt_out_checkbox is not; it is that field's event"
        )
    given = [name for name, value in events.items() if value is not None]
    if given:
        needed = ["phone_event", "opt_out_event"]
        if opt_out_checkbox is not None:
            needed.append("opt_out_checkbox_event")
        for name in needed:
            if events[name] is None:
                raise s.error(
                    name,
                    f"missing; {given[0]} is set, so the project is longitudinal "
                    "and every field needs its event",
                )
    return events["phone_event"], events["opt_out_event"], events["opt_out_checkbox_event"]


def _parse_keywords(s: _Section) -> KeywordConfig:
    languages = s.texts("languages", KeywordConfig.languages)
    for index, language in enumerate(languages):
        _matching(
            s, f"languages[{index}]", language, _LANGUAGE, "a lowercase language code like en or es"
        )
    keywords = KeywordConfig(
        languages=languages,
        stop=s.texts("stop", KeywordConfig.stop),
        start=s.texts("start", KeywordConfig.start),
        help=s.texts("help", KeywordConfig.help),
        replace=s.flag("replace", KeywordConfig.replace),
    )
    from bridge.consent import load_keyword_sets  # consent imports this module's dataclasses

    try:  # build the sets now, so an unknown language or a clash stops start-up
        load_keyword_sets(keywords)
    except ValueError as exc:
        raise s.error("languages" if "language" in str(exc) else "", str(exc)) from exc
    return keywords


def _parse_notify(s: _Section) -> NotifyConfig:
    emails = s.texts("emails")
    for index, address in enumerate(emails):
        _email(s, f"emails[{index}]", address)
    events = s.texts("on", tuple(sorted(NotifyConfig.on)))
    if not events:
        raise s.error("on", "is empty; remove notify to turn notifications off")
    for index, event in enumerate(events):
        if event not in _NOTIFY_EVENTS:
            raise s.error(
                f"on[{index}]",
                f"unknown event {event!r}, expected some of: {', '.join(_NOTIFY_EVENTS)}"
                + _suggestion(event, _NOTIFY_EVENTS),
            )
    return NotifyConfig(
        emails=emails,
        on=frozenset(events),
        digest_minutes=s.integer("digest_minutes", NotifyConfig.digest_minutes, minimum=0),
        burst_limit=s.integer("burst_limit", NotifyConfig.burst_limit),
        show_full_phone=s.flag("show_full_phone", NotifyConfig.show_full_phone),
    )


def _parse_forward(s: _Section) -> ForwardConfig:
    url = s.text("url")
    _http_url(s, "url", url)
    timeout = s.positive_number("timeout_seconds", ForwardConfig.timeout_seconds)
    if timeout >= _TWILIO_WEBHOOK_SECONDS:
        raise s.error(
            "timeout_seconds",
            f"must be below {_TWILIO_WEBHOOK_SECONDS:g}: Twilio abandons the whole webhook "
            f"after {_TWILIO_WEBHOOK_SECONDS:g} seconds",
        )
    return ForwardConfig(url=url, timeout_seconds=timeout)
