"""load_config: the shipped example loads, and every mistake names its file and key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import (
    ConfigError,
    KeywordConfig,
    NotifyConfig,
    ServerConfig,
    SyncConfig,
    _local_timezone,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
OTHER_ACCOUNT_SID = "AC" + "fedcba9876543210" * 2
AUTH_TOKEN = "0123456789abcdef" * 2
SERVICE_SID = "MG" + "0123456789abcdef" * 2
REDCAP_TOKEN = "0123456789ABCDEF" * 2
NUMBER = "+18057166646"
EXAMPLE_ENV = {
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "SMTP_PASSWORD": "smtp-secret",
    "BRIDGE_ADMIN_TOKEN": "an-admin-token-long-enough",
    "REDCAP_TOKEN_SLEEP": REDCAP_TOKEN,
    "REDCAP_TOKEN_HEART": REDCAP_TOKEN,
}
DELETE = object()


def project(name: str = "heart", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "twilio": {"numbers": [NUMBER]},
        "redcap": {"url": "https://redcap.example.edu/api/", "token": REDCAP_TOKEN},
        "phone_field": "mobile",
        "opt_out_field": "sms_opt_out",
        **extra,
    }


def minimal(*projects: dict[str, Any]) -> dict[str, Any]:
    return {
        "storage": {"path": "var/bridge.db"},
        "twilio": {"accounts": [{"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}]},
        "projects": list(projects) or [project()],
    }


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load(path: Path, **environ: str) -> Any:
    return load_config(path, environ=environ)


def error(path: Path, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    return caught.value


def edit(data: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    """A copy of ``data`` with ``dotted`` (e.g. ``projects.0.redcap.url``) set or deleted."""
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if value is DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


# --- the shipped examples --------------------------------------------------------------------


def test_example_config_loads_with_its_project_file() -> None:
    config = load_config(REPO / "config.example.yaml", environ=EXAMPLE_ENV)

    assert config.path == REPO / "config.example.yaml"
    assert config.storage.path == REPO / "var" / "bridge.db"
    assert config.auth_token(ACCOUNT_SID) == AUTH_TOKEN
    assert config.server.public_url == "https://bridge.example.edu"
    assert config.smtp is not None and config.smtp.password == "smtp-secret"
    assert config.smtp.from_addr == "REDCap SMS bridge <redcap-sms@example.edu>"
    assert config.admin is not None and config.admin.token == "an-admin-token-long-enough"
    assert [p.name for p in config.projects] == ["sleep-study", "heart-study"]

    sleep = config.project("sleep-study")
    assert sleep.source == REPO / "config.example.yaml"
    assert sleep.numbers == ("+16175550123",)
    assert sleep.notify is not None and "review" in sleep.notify.on
    assert sleep.forward is not None and sleep.forward.url == "https://redcap.example.edu/surveys/"

    heart = config.project("heart-study")
    assert heart.source == REPO / "config" / "projects" / "heart-study.yaml"
    assert heart.numbers == (NUMBER,)
    assert (heart.phone_event, heart.opt_out_event, heart.opt_out_checkbox_event) == (
        "enrollment_arm_1",
        "enrollment_arm_1",
        "enrollment_arm_1",
    )
    assert heart.redcap.token == REDCAP_TOKEN


def test_example_config_needs_its_secrets() -> None:
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "TWILIO_AUTH_TOKEN"}
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "config.example.yaml", environ=env)
    assert caught.value.key == "twilio.accounts[0].auth_token"
    assert "TWILIO_AUTH_TOKEN" in caught.value.message


# --- defaults and normalisation --------------------------------------------------------------


def test_minimal_config_takes_the_documented_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    config = load(write(tmp_path / "config.yaml", minimal()))

    assert config.path == tmp_path / "config.yaml"
    assert config.storage.path == tmp_path / "var" / "bridge.db"
    assert config.storage.keep_bodies_days == 90
    assert config.server == ServerConfig()
    assert config.sync == SyncConfig()
    assert config.smtp is None
    assert config.admin is None
    (heart,) = config.projects
    assert heart.source == tmp_path / "config.yaml"
    assert heart.timezone == "Europe/Berlin"  # the server's zone
    assert heart.default_region == "US"
    assert heart.keywords == KeywordConfig()
    assert heart.revocation_phrases == "review"
    assert heart.notify is None and heart.forward is None
    assert heart.messaging_service_sids == ()
    assert heart.phone_event is None and heart.opt_out_checkbox is None


def test_null_means_default(tmp_path: Path) -> None:
    data = edit(minimal(), "server", {"port": None, "public_url": None})
    data = edit(data, "sync", {"max_attempts": None, "poll_seconds": None})
    config = load(write(tmp_path / "config.yaml", data))
    assert config.server == ServerConfig()
    assert config.sync == SyncConfig()


def test_values_are_read_and_normalised(tmp_path: Path) -> None:
    data = minimal(
        project(
            twilio={"numbers": ["+1 (805) 716-6646"], "messaging_service_sids": [SERVICE_SID]},
            redcap={"url": "https://example.edu/redcap/api", "token": REDCAP_TOKEN},
            default_region="gb",
            keywords={"languages": ["es", "pt"], "stop": ["baja"], "replace": True},
            notify={"emails": ["team@example.edu"], "on": ["help"], "digest_minutes": 15},
            forward={"url": "http://localhost:8000/surveys/?x=1", "timeout_seconds": 2.5},
        )
    )
    data["server"] = {"public_url": "https://www.example.edu/sms-bridge/", "port": 9000}
    data["storage"] = {"path": "../data/./bridge.db", "keep_bodies_days": 7}
    data["sync"] = {"max_attempts": 10, "poll_seconds": 0.5, "retry_base_seconds": 300}
    data["smtp"] = {"host": "smtp.example.edu", "from": "bridge@example.edu", "ssl": True}
    config = load(write(tmp_path / "etc" / "config.yaml", data))

    assert config.server.public_url == "https://www.example.edu/sms-bridge"
    assert config.server.port == 9000
    assert config.storage.path == tmp_path / "data" / "bridge.db"
    assert config.storage.keep_bodies_days == 7
    assert (config.sync.max_attempts, config.sync.poll_seconds) == (10, 0.5)
    assert config.smtp is not None
    assert (config.smtp.port, config.smtp.ssl, config.smtp.starttls) == (465, True, False)
    (heart,) = config.projects
    assert heart.numbers == (NUMBER,)
    assert heart.messaging_service_sids == (SERVICE_SID,)
    assert heart.redcap.url == "https://example.edu/redcap/api/"
    assert heart.default_region == "GB"
    assert heart.keywords == KeywordConfig(languages=("es", "pt"), stop=("baja",), replace=True)
    assert heart.notify == NotifyConfig(
        emails=("team@example.edu",), on=frozenset({"help"}), digest_minutes=15
    )
    assert heart.forward is not None and heart.forward.timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("https://bridge.example.edu", "https://bridge.example.edu"),
        ("https://bridge.example.edu/", "https://bridge.example.edu"),
        ("http://10.0.0.5:8443/prefix/", "http://10.0.0.5:8443/prefix"),
        ("https://bridge.example.edu/twilio", "https://bridge.example.edu/twilio"),
    ],
)
def test_public_url_keeps_a_prefix_without_trailing_slash(
    tmp_path: Path, public_url: str, expected: str
) -> None:
    data = edit(minimal(), "server.public_url", public_url)
    assert load(write(tmp_path / "config.yaml", data)).server.public_url == expected


def test_yaml_words_are_not_booleans(tmp_path: Path) -> None:
    """`on:` stays a key and NO stays Norway (YAML 1.1 would read both as booleans)."""
    path = tmp_path / "config.yaml"
    write(path, minimal())
    path.write_text(
        path.read_text() + "smtp: {host: mail, from: a@example.edu}\n" + "projects_dir: projects\n",
        encoding="utf-8",
    )
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / "oslo.yaml").write_text(
        f"""
twilio: {{numbers: ["+4722000000"]}}
redcap: {{url: "https://redcap.example.no/api/", token: {REDCAP_TOKEN}}}
phone_field: mobile
opt_out_field: sms_opt_out
default_region: NO
notify: {{emails: [a@example.no], on: [stop]}}
""",
        encoding="utf-8",
    )
    oslo = load(path).project("oslo")
    assert oslo.default_region == "NO"
    assert oslo.notify is not None and oslo.notify.on == frozenset({"stop"})


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: bridge.db}}
twilio: {{accounts: [{{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}}}]}}
projects:
  - &base
    name: one
    twilio: {{numbers: ["{NUMBER}"]}}
    redcap: {{url: "https://redcap.example.edu/api/", token: {REDCAP_TOKEN}}}
    phone_field: mobile
    opt_out_field: sms_opt_out
  - <<: *base
    name: two
""",
        encoding="utf-8",
    )
    assert [p.name for p in load(path).projects] == ["one", "two"]


# --- the server's time zone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("America/Chicago", "America/Chicago"),
        (":Asia/Tokyo", "Asia/Tokyo"),
        ("EST5EDT,M3.2.0,M11.1.0", "UTC"),  # a POSIX rule has no IANA name
    ],
)
def test_local_timezone_follows_tz(monkeypatch: pytest.MonkeyPatch, tz: str, expected: str) -> None:
    monkeypatch.setenv("TZ", tz)
    assert _local_timezone() == expected


def test_local_timezone_reads_the_localtime_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TZ", raising=False)
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/America/Denver")
    assert _local_timezone(link, tmp_path / "missing") == "America/Denver"


def test_local_timezone_reads_etc_timezone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    (tmp_path / "localtime").write_bytes(b"TZif")  # a copied file, not a symlink: no name
    (tmp_path / "timezone").write_text("Europe/Paris\n", encoding="utf-8")
    assert _local_timezone(tmp_path / "localtime", tmp_path / "timezone") == "Europe/Paris"


def test_local_timezone_falls_back_to_utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    assert _local_timezone(tmp_path / "missing", tmp_path / "missing") == "UTC"


# --- projects_dir ----------------------------------------------------------------------------


def test_projects_dir_adds_files_in_name_order_named_by_stem(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    write(projects / "b-study.yaml", {k: v for k, v in project().items() if k != "name"})
    write(projects / "a-study.yml", {k: v for k, v in project().items() if k != "name"})
    write(projects / "c.yaml", project("custom-name"))
    write(projects / ".hidden.yaml", {"not": "a project"})
    (projects / "README.txt").write_text("ignored", encoding="utf-8")
    data = minimal(project("inline"))
    data["projects_dir"] = "projects"
    config = load(write(tmp_path / "config.yaml", data))

    assert [p.name for p in config.projects] == ["inline", "a-study", "b-study", "custom-name"]
    assert [p.source for p in config.projects] == [
        tmp_path / "config.yaml",
        projects / "a-study.yml",
        projects / "b-study.yaml",
        projects / "c.yaml",
    ]


def test_projects_dir_alone_is_enough(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "heart.yaml", project())
    data = edit(minimal(), "projects", DELETE)
    data["projects_dir"] = str(tmp_path / "conf.d")  # absolute paths stay as they are
    assert [p.name for p in load(write(tmp_path / "config.yaml", data)).projects] == ["heart"]


def test_duplicate_project_name_across_files_names_both(tmp_path: Path) -> None:
    write(tmp_path / "projects" / "a.yaml", project("same"))
    write(tmp_path / "projects" / "b.yaml", project("same"))
    data = edit(minimal(), "projects_dir", "projects")
    failure = error(write(tmp_path / "config.yaml", data))
    assert failure.file == str(tmp_path / "projects" / "b.yaml")
    assert failure.key == "name"
    assert str(tmp_path / "projects" / "a.yaml") in failure.message


def test_duplicate_project_name_inline_and_in_a_file(tmp_path: Path) -> None:
    write(tmp_path / "projects" / "heart.yaml", {k: v for k, v in project().items() if k != "name"})
    data = edit(minimal(), "projects_dir", "projects")
    failure = error(write(tmp_path / "config.yaml", data))
    assert failure.file == str(tmp_path / "projects" / "heart.yaml")
    assert f"{tmp_path / 'config.yaml'} (projects[0].name)" in failure.message


def test_shared_number_goes_to_both_projects(tmp_path: Path) -> None:
    config = load(write(tmp_path / "config.yaml", minimal(project("one"), project("two"))))
    assert [p.numbers for p in config.projects] == [(NUMBER,), (NUMBER,)]


@pytest.mark.parametrize(
    ("dotted", "value", "key", "fragment"),
    [
        ("redcap.url", "https://redcap.example.edu/", "redcap.url", "/api/"),
        ("phone_feild", "mobile", "phone_feild", "did you mean 'phone_field'?"),
        ("twilio.numbers", ["8057166646"], "twilio.numbers[0]", "E.164"),
        ("opt_out_field", DELETE, "opt_out_field", "required"),
    ],
)
def test_errors_in_a_project_file_name_that_file(
    tmp_path: Path, dotted: str, value: object, key: str, fragment: str
) -> None:
    project_file = write(tmp_path / "projects" / "heart.yaml", edit(project(), dotted, value))
    data = edit(minimal(), "projects", DELETE)
    data["projects_dir"] = "projects"
    failure = error(write(tmp_path / "config.yaml", data))
    assert (failure.file, failure.key) == (str(project_file), key)
    assert fragment in failure.message


def test_unreadable_project_file_is_named(tmp_path: Path) -> None:
    project_file = tmp_path / "projects" / "broken.yaml"
    project_file.parent.mkdir()
    project_file.write_text("name: [unclosed\n", encoding="utf-8")
    data = edit(minimal(), "projects_dir", "projects")
    failure = error(write(tmp_path / "config.yaml", data))
    assert failure.file == str(project_file)
    assert "not valid YAML" in failure.message


def test_empty_project_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / "empty.yaml").write_text("# nothing yet\n", encoding="utf-8")
    data = edit(minimal(), "projects_dir", "projects")
    failure = error(write(tmp_path / "config.yaml", data))
    assert failure.file.endswith("empty.yaml") and "empty" in failure.message


# --- ${ENV} substitution ---------------------------------------------------------------------


def test_environment_variables_fill_in_text_anywhere(tmp_path: Path) -> None:
    data = edit(minimal(), "twilio.accounts.0.auth_token", "${TWILIO_TOKEN}")
    data = edit(data, "projects.0.redcap.url", "https://${REDCAP_HOST}/api/")
    data = edit(data, "smtp", {"host": "mail", "from": "a@example.edu", "password": "a$${b}${P}"})
    data = edit(data, "smtp.username", "bridge")
    data = edit(data, "projects.0.notify", {"emails": ["${TEAM}"]})
    config = load(
        write(tmp_path / "config.yaml", data),
        TWILIO_TOKEN=AUTH_TOKEN,
        REDCAP_HOST="redcap.example.edu",
        P="${NOT_AGAIN}",
        TEAM="team@example.edu",
    )
    assert config.twilio_accounts[0].auth_token == AUTH_TOKEN
    assert config.projects[0].redcap.url == "https://redcap.example.edu/api/"
    assert config.smtp is not None
    assert config.smtp.password == "a${b}${NOT_AGAIN}"  # escaped, and not substituted twice
    assert config.projects[0].notify is not None
    assert config.projects[0].notify.emails == ("team@example.edu",)


def test_environment_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_TOKEN", REDCAP_TOKEN)
    data = edit(minimal(), "projects.0.redcap.token", "${BRIDGE_TEST_TOKEN}")
    assert load_config(write(tmp_path / "config.yaml", data)).projects[0].redcap.token == (
        REDCAP_TOKEN
    )


def test_missing_environment_variable_names_it_and_the_key(tmp_path: Path) -> None:
    data = edit(minimal(), "projects.0.redcap.token", "${REDCAP_TOKEN_HEART}")
    failure = error(write(tmp_path / "config.yaml", data))
    assert failure.key == "projects[0].redcap.token"
    assert "REDCAP_TOKEN_HEART" in failure.message and "not set" in failure.message


@pytest.mark.parametrize("value", ["${}", "${1ABC}", "abc${OPEN"])
def test_malformed_reference_is_an_error(tmp_path: Path, value: str) -> None:
    data = edit(minimal(), "server.host", value)
    failure = error(write(tmp_path / "config.yaml", data), OPEN="x")
    assert failure.key == "server.host"
    assert "$${" in failure.message


def test_empty_environment_value_is_refused(tmp_path: Path) -> None:
    data = edit(minimal(), "projects.0.phone_field", "${FIELD}")
    failure = error(write(tmp_path / "config.yaml", data), FIELD="")
    assert (failure.key, failure.message) == ("projects[0].phone_field", "must not be empty")


# --- validation: one mistake, one located message --------------------------------------------

P = "projects.0"
SMTP = {"host": "smtp.example.edu", "from": "bridge@example.edu"}

INVALID: list[tuple[str, object, str, str]] = [
    # required keys
    ("storage.path", DELETE, "storage.path", "required"),
    ("storage", DELETE, "storage.path", "required"),
    ("twilio.accounts", [], "twilio.accounts", "at least one"),
    ("twilio", DELETE, "twilio.accounts", "at least one"),
    (f"{P}.name", DELETE, "projects[0].name", "required"),
    (f"{P}.redcap.url", DELETE, "projects[0].redcap.url", "required"),
    (f"{P}.redcap", DELETE, "projects[0].redcap.url", "required"),
    (f"{P}.redcap.token", DELETE, "projects[0].redcap.token", "required"),
    (f"{P}.phone_field", DELETE, "projects[0].phone_field", "required"),
    (f"{P}.opt_out_field", DELETE, "projects[0].opt_out_field", "required"),
    (f"{P}.twilio", DELETE, "projects[0].twilio", "numbers or messaging_service_sids"),
    (f"{P}.twilio.numbers", [], "projects[0].twilio", "numbers or messaging_service_sids"),
    ("projects", DELETE, "projects", "no projects"),
    ("projects", [], "projects", "no projects"),
    # wrong shapes and types
    ("server", [1, 2], "server", "expected a mapping"),
    ("projects", {"name": "x"}, "projects", "expected a list"),
    (P, "heart", "projects[0]", "expected a mapping"),
    ("server.port", "8080", "server.port", "remove the quotes"),
    ("server.port", True, "server.port", "expected a whole number"),
    ("server.port", 8080.5, "server.port", "expected a whole number"),
    ("server.port", 70000, "server.port", "at most 65535"),
    ("server.port", 0, "server.port", "at least 1"),
    ("server.threads", 0, "server.threads", "at least 1"),
    ("server.max_body_bytes", -1, "server.max_body_bytes", "at least 1"),
    ("server.host", 127, "server.host", "put it in quotes"),
    ("server.host", "", "server.host", "must not be empty"),
    ("storage.keep_bodies_days", 0, "storage.keep_bodies_days", "at least 1"),
    ("sync.poll_seconds", 0, "sync.poll_seconds", "above 0"),
    ("sync.poll_seconds", "1", "sync.poll_seconds", "remove the quotes"),
    ("sync.poll_seconds", "${POLL}", "sync.poll_seconds", "only fill in text"),
    ("sync.poll_seconds", float("inf"), "sync.poll_seconds", "above 0"),
    ("sync.batch_size", 1.5, "sync.batch_size", "whole number"),
    ("sync.requests_per_minute", 0, "sync.requests_per_minute", "at least 1"),
    ("sync.max_attempts", 0, "sync.max_attempts", "at least 1"),
    ("sync.retry_max_seconds", 1, "sync.retry_max_seconds", "retry_base_seconds (2)"),
    ("sync.index_refresh_minutes", -5, "sync.index_refresh_minutes", "above 0"),
    (f"{P}.phone_field", 123, "projects[0].phone_field", "put it in quotes"),
    (f"{P}.phone_field", ["mobile"], "projects[0].phone_field", "expected a string, got a list"),
    (f"{P}.twilio.numbers", NUMBER, "projects[0].twilio.numbers", "expected a list"),
    (f"{P}.twilio.numbers", [18057166646], "projects[0].twilio.numbers[0]", "in quotes"),
    (f"{P}.notify", {"emails": "a@example.edu"}, "projects[0].notify.emails", "expected a list"),
    (f"{P}.keywords.replace", "no", "projects[0].keywords.replace", "write true or false"),
    # unknown keys
    ("sever", {}, "sever", "unknown key 'sever'; did you mean 'server'?"),
    (f"{P}.phone_feild", "x", "projects[0].phone_feild", "did you mean 'phone_field'?"),
    (f"{P}.redcap.tokn", "x", "projects[0].redcap.tokn", "did you mean 'token'?"),
    (f"{P}.zzz", 1, "projects[0].zzz", "expected one of: name, twilio"),
    ("twilio.accounts.0.sid", "x", "twilio.accounts[0].sid", "unknown key 'sid'"),
    (f"{P}.notify", {"email": ["a@b.cd"]}, "projects[0].notify.email", "'emails'"),
    # Twilio identifiers and secrets
    ("twilio.accounts.0.account_sid", "AC123", "twilio.accounts[0].account_sid", "'AC' and 32"),
    ("twilio.accounts.0.account_sid", SERVICE_SID, "twilio.accounts[0].account_sid", "'AC'"),
    ("twilio.accounts.0.auth_token", "abc", "twilio.accounts[0].auth_token", "32 hex"),
    ("twilio.accounts.0.auth_token", "g" * 32, "twilio.accounts[0].auth_token", "32 hex"),
    (
        "twilio.accounts",
        [{"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}] * 2,
        "twilio.accounts[1].account_sid",
        "listed twice (also at twilio.accounts[0].account_sid)",
    ),
    (
        f"{P}.twilio.messaging_service_sids",
        [ACCOUNT_SID],
        "projects[0].twilio.messaging_service_sids[0]",
        "'MG' and 32 hex",
    ),
    (
        f"{P}.twilio.messaging_service_sids",
        [SERVICE_SID, SERVICE_SID],
        "projects[0].twilio.messaging_service_sids[1]",
        "listed twice",
    ),
    (f"{P}.redcap.token", REDCAP_TOKEN.lower(), "projects[0].redcap.token", "uppercase hex"),
    (f"{P}.redcap.token", REDCAP_TOKEN[:-1], "projects[0].redcap.token", "has 31 characters"),
    # URLs
    (f"{P}.redcap.url", "redcap.example.edu/api/", "projects[0].redcap.url", "http:// or"),
    (f"{P}.redcap.url", "ftp://redcap.example.edu/api/", "projects[0].redcap.url", "http://"),
    (f"{P}.redcap.url", "https:///api/", "projects[0].redcap.url", "with a host"),
    (f"{P}.redcap.url", "https://r.example.edu/", "projects[0].redcap.url", "ending in /api/"),
    (f"{P}.redcap.url", "https://r.example.edu/api/?x", "projects[0].redcap.url", "query"),
    (f"{P}.redcap.url", "https://r.example.edu/api/#x", "projects[0].redcap.url", "#fragment"),
    (f"{P}.redcap.url", "https://r.example.edu:99999/api/", "projects[0].redcap.url", "port"),
    ("server.public_url", "bridge.example.edu", "server.public_url", "http:// or https://"),
    ("server.public_url", "https://b.example.edu/?a=1", "server.public_url", "query string"),
    (
        "server.public_url",
        "https://b.example.edu/twilio/sms",  # the console URL pasted whole
        "server.public_url",
        "without the webhook's path: got 'https://b.example.edu/twilio/sms', give"
        " 'https://b.example.edu'",
    ),
    ("server.public_url", "https://b.example.edu/p/twilio/events/", "server.public_url",
     "give 'https://b.example.edu/p'"),
    (f"{P}.forward", {"url": "mailto:x@y.z"}, "projects[0].forward.url", "http://"),
    (f"{P}.forward", {}, "projects[0].forward.url", "required"),
    (
        f"{P}.forward",
        {"url": "https://r.example.edu/surveys/", "timeout_seconds": 15},
        "projects[0].forward.timeout_seconds",
        "below 15",
    ),
    # phone numbers, regions, zones
    (f"{P}.twilio.numbers", ["8057166646"], "projects[0].twilio.numbers[0]", "E.164"),
    (f"{P}.twilio.numbers", ["+15558675309"], "projects[0].twilio.numbers[0]", "valid phone"),
    (
        f"{P}.twilio.numbers",
        [NUMBER, "+1 805-716-6646"],
        "projects[0].twilio.numbers[1]",
        "+18057166646 is listed twice",
    ),
    (f"{P}.default_region", "XX", "projects[0].default_region", "unknown region 'XX'"),
    (f"{P}.timezone", "America/NewYork", "projects[0].timezone", "'America/New_York'"),
    (f"{P}.timezone", "EST+5", "projects[0].timezone", "IANA name"),
    # names of things
    (f"{P}.name", "heart study", "projects[0].name", "project name"),
    (f"{P}.phone_field", "Mobile", "projects[0].phone_field", "REDCap field name"),
    (f"{P}.opt_out_checkbox", "opt-out", "projects[0].opt_out_checkbox", "REDCap field name"),
    (f"{P}.revocation_phrases", "ignore", "projects[0].revocation_phrases", "review or apply"),
    (f"{P}.keywords.languages", ["EN"], "projects[0].keywords.languages[0]", "lowercase"),
    (f"{P}.keywords.languages", [""], "projects[0].keywords.languages[0]", "not be empty"),
    (f"{P}.keywords.stop", ["ok", 1], "projects[0].keywords.stop[1]", "expected a string"),
    # events of longitudinal projects
    (
        f"{P}.opt_out_checkbox_event",
        "enrollment_arm_1",
        "projects[0].opt_out_checkbox_event",
        "opt_out_checkbox is not",
    ),
    (f"{P}.phone_event", "enrollment_arm_1", "projects[0].opt_out_event", "longitudinal"),
    (f"{P}.opt_out_event", "enrollment_arm_1", "projects[0].phone_event", "longitudinal"),
    (f"{P}.phone_event", "Enrollment Arm 1", "projects[0].phone_event", "unique event name"),
    # notifications
    (f"{P}.notify", {}, "projects[0].notify.emails", "required"),
    (f"{P}.notify", {"emails": []}, "projects[0].notify.emails", "at least one"),
    (f"{P}.notify", {"emails": ["a@b.cd", "pi"]}, "projects[0].notify.emails[1]", "email"),
    # smtp and admin
    ("smtp", {"from": "a@example.edu"}, "smtp.host", "required"),
    ("smtp", {"host": "mail"}, "smtp.from", "required"),
    ("smtp", {"host": "mail", "from": "Bridge"}, "smtp.from", "email address"),
    ("smtp", {**SMTP, "ssl": True, "starttls": True}, "smtp.ssl", "cannot both be true"),
    ("smtp", {**SMTP, "starttls": "yes"}, "smtp.starttls", "write true or false"),
    ("smtp", {**SMTP, "username": "bridge"}, "smtp.password", "give both or neither"),
    ("smtp", {**SMTP, "password": "x"}, "smtp.username", "give both or neither"),
    ("smtp", {**SMTP, "port": 0}, "smtp.port", "at least 1"),
    ("smtp", {**SMTP, "timeout_seconds": 0}, "smtp.timeout_seconds", "above 0"),
    ("admin", {}, "admin.token", "required"),
    ("admin", {"token": "short"}, "admin.token", "at least 16"),
    # projects_dir
    ("projects_dir", "no-such-dir", "projects_dir", "not a directory"),
    ("projects_dir", 5, "projects_dir", "expected a string"),
]


@pytest.mark.parametrize(
    ("dotted", "value", "key", "fragment"),
    INVALID,
    ids=[f"{dotted}={value!r}"[:60] for dotted, value, _, _ in INVALID],
)
def test_each_mistake_names_its_file_and_key(
    tmp_path: Path, dotted: str, value: object, key: str, fragment: str
) -> None:
    path = write(tmp_path / "config.yaml", edit({**minimal(), "smtp": SMTP}, dotted, value))
    failure = error(path, POLL="1")
    assert (failure.file, failure.key) == (str(path), key)
    assert fragment in failure.message
    assert str(failure) == f"{path}: {key}: {failure.message}"


def test_notify_needs_smtp(tmp_path: Path) -> None:
    data = edit(minimal(), "projects.0.notify", {"emails": ["team@example.edu"]})
    failure = error(write(tmp_path / "config.yaml", data))
    assert failure.key == "projects[0].notify"
    assert "smtp section" in failure.message


@pytest.mark.parametrize(
    "dotted", ["twilio.accounts.0.auth_token", "projects.0.redcap.token", "admin.token"]
)
def test_secrets_are_never_echoed(tmp_path: Path, dotted: str) -> None:
    secret = "s3cr3t-value!"
    failure = error(write(tmp_path / "config.yaml", edit(minimal(), dotted, secret)))
    assert secret not in str(failure)


# --- the file itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server: {port: 1\n", "not valid YAML"),
        ("storage:\n  path: a\n   bad: indent\n", "(line 3, column"),
        ("- a\n- b\n", "expected a mapping of settings at the top level, got a list"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("server: {port: 1}\nserver: {port: 2}\n", "duplicate key 'server' (line 2, column 1)"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
        ("1: x\n", "key 1 is not a setting name"),
        ("yes: x\n", "unknown key 'yes'"),
    ],
)
def test_file_level_problems(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    failure = error(path)
    assert failure.file == str(path)
    assert fragment in failure.message


def test_missing_file(tmp_path: Path) -> None:
    failure = error(tmp_path / "nope.yaml")
    assert (failure.file, failure.key, failure.message) == (
        str(tmp_path / "nope.yaml"),
        "",
        "file not found",
    )
    assert str(failure) == f"{tmp_path / 'nope.yaml'}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "cannot read the file" in error(tmp_path).message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"server: {host: \xff}\n")
    assert "not UTF-8" in error(path).message


def test_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "etc" / "config.yaml", minimal())
    monkeypatch.chdir(tmp_path)
    config = load(Path("etc") / "config.yaml")
    assert config.path == tmp_path / "etc" / "config.yaml"
    assert config.projects[0].source == config.path
    assert config.storage.path == tmp_path / "etc" / "var" / "bridge.db"
