"""``backfill``: Twilio's Messages API faked at the HTTP layer, REDCap simulated over HTTP.

The fake answers ``GET /2010-04-01/Accounts/{sid}/Messages.json`` as Twilio does: newest first,
filtered by ``To`` and ``DateSent>``, in pages linked by ``next_page_uri``. It serves pages of
two (Twilio's default is 50) so that a handful of messages exercises paging.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import requests_mock

from bridge.backfill import INCOMPLETE_HISTORY, parse_since, run
from bridge.cli import build_parser
from bridge.config import Config
from bridge.sim import RedcapSimulator, SimProject
from bridge.store import Store
from bridge.sync import Worker
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PARTICIPANT,
    SUBACCOUNT_SID,
    classic_project,
    make_config,
    project_config,
)
from tests.process import write_config

API = "https://api.twilio.com/2010-04-01/Accounts/{}/Messages.json"
PAGE_SIZE = 2
OPTED_OUT = "+12025550143"
STILL_OUT = "+13105550199"
CHATTY = "+16175550100"
STRANGER = "+14155550000"


class FakeTwilio:
    """Twilio's Messages list for a set of accounts, with the requests it was sent."""

    def __init__(self, mocker: requests_mock.Mocker) -> None:
        self.messages: dict[str, list[dict]] = {ACCOUNT_SID: [], SUBACCOUNT_SID: []}
        self.queries: list[dict[str, list[str]]] = []
        self.status = 200
        self.mocker = mocker
        for sid in self.messages:
            mocker.get(API.format(sid), json=self._page)

    def add(self, sender: str, body: str, when: str, *, to: str = BRIDGE_NUMBER,
            direction: str = "inbound", account: str = ACCOUNT_SID) -> str:
        sid = "SM" + uuid.uuid4().hex
        sent = datetime.fromisoformat(when).astimezone(UTC)
        stamp = format_datetime(sent)
        self.messages[account].append({
            "account_sid": account, "api_version": "2010-04-01", "body": body,
            "date_created": stamp, "date_sent": stamp, "date_updated": stamp,
            "direction": direction, "error_code": None, "error_message": None, "from": sender,
            "messaging_service_sid": "MG" + "3" * 32, "num_media": "0", "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": sid,
            "status": "received" if direction == "inbound" else "delivered",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/"
                                          "Media.json"},
            "to": to, "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
            "_sent": sent,
        })
        return sid

    def _page(self, request: requests_mock.request._RequestObjectProxy,
              context: requests_mock.response._Context) -> dict:
        query = parse_qs(urlsplit(request.url).query)
        self.queries.append(query)
        if self.status != 200:
            context.status_code = self.status
            return {"code": 20003, "message": "Authenticate", "more_info":
                    "https://www.twilio.com/docs/errors/20003", "status": self.status}
        account = re.search(r"/Accounts/(AC\w+)/", request.url).group(1)
        after = datetime.fromisoformat(query["DateSent>"][0])
        selected = sorted((m for m in self.messages[account]
                           if m["to"] == query["To"][0] and m["_sent"] >= after),
                          key=lambda m: m["_sent"], reverse=True)
        page = int(query.get("Page", ["0"])[0])
        chunk = selected[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        base = f"/2010-04-01/Accounts/{account}/Messages.json"
        params = {"To": query["To"][0], "DateSent>": query["DateSent>"][0],
                  "PageSize": PAGE_SIZE}
        more = len(selected) > (page + 1) * PAGE_SIZE
        return {
            "first_page_uri": f"{base}?{urlencode({**params, 'Page': 0})}",
            "next_page_uri": f"{base}?{urlencode({**params, 'Page': page + 1})}"
                             f"&PageToken=PASM{uuid.uuid4().hex}" if more else None,
            "previous_page_uri": None, "page": page, "page_size": PAGE_SIZE,
            "start": page * PAGE_SIZE, "end": page * PAGE_SIZE + len(chunk) - 1,
            "uri": f"{base}?{urlencode({**params, 'Page': page})}",
            "messages": [{k: v for k, v in m.items() if k != "_sent"} for m in chunk],
        }


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with requests_mock.Mocker(real_http=True, case_sensitive=True) as mocker:
        yield FakeTwilio(mocker)


@pytest.fixture
def study(sim: RedcapSimulator) -> SimProject:
    project = classic_project({"1": "(555) 867-5309", "2": "202-555-0143", "3": "617-555-0100",
                               "4": "+1 (310) 555-0199"})
    for record in ("2", "4"):
        project.add_record(record, {"sms_opt_out": "2025-01-05 10:00:00",
                                    "sms_opted_out___1": "1"})
    return project


@pytest.fixture
def config(tmp_path: Path, sim: RedcapSimulator, study: SimProject) -> Config:
    return make_config(tmp_path, [project_config(sim, sim.add_project(study))])


@pytest.fixture
def history(twilio: FakeTwilio) -> FakeTwilio:
    twilio.add(PARTICIPANT, "Yes", "2025-03-02T09:00:00-05:00")
    twilio.add(PARTICIPANT, "stop", "2025-03-03T10:00:00-05:00")
    twilio.add(OPTED_OUT, "STOP", "2025-03-02T11:00:00-05:00")
    twilio.add(OPTED_OUT, "Start", "2025-03-04T12:30:00-05:00")
    twilio.add(CHATTY, "Hello, is this the sleep study?", "2025-03-02T08:00:00-05:00")
    twilio.add(CHATTY, "please stop texting me", "2025-03-06T08:00:00-05:00")
    twilio.add(STILL_OUT, "STOP", "2025-03-05T07:00:00-05:00")
    twilio.add(STILL_OUT, "START", "2025-02-20T07:00:00-05:00")  # before --since
    twilio.add(STRANGER, "STOP", "2025-03-05T09:00:00-05:00")
    # Sent by another of the account's numbers to ours: not a participant's reply.
    twilio.add("+18005550100", "STOP", "2025-03-07T09:00:00-05:00", direction="outbound-api")
    twilio.add(PARTICIPANT, "START", "2025-03-08T09:00:00-05:00", to="+18005550100")
    return twilio


def backfill(config: Config, *, apply: bool = False,
             since: str = "2025-03-01") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(config, "heart-study", since, apply=apply, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def jobs(config: Config) -> list[dict]:
    store = Store(config.storage.path)
    try:
        return [dict(row) for row in store.read().execute(
            "SELECT jobs.project, jobs.phone, jobs.action, jobs.event_at, jobs.status,"
            " messages.source FROM jobs JOIN messages ON messages.id = jobs.message_id"
            " ORDER BY jobs.id")]
    finally:
        store.close()


def test_dry_run_lists_the_differences_and_changes_nothing(
        config: Config, history: FakeTwilio, study: SimProject) -> None:
    code, out, err = backfill(config)
    assert code == 0, err
    assert "Differences from REDCap (2):" in out
    assert re.search(r"\+1555\*\*\*5309 +STOP +2025-03-03 10:00 EST +not opted out in REDCap:"
                     r" record 1", out)
    assert re.search(r"\+1202\*\*\*0143 +START +2025-03-04 12:30 EST +still opted out in"
                     r" REDCap: record 2", out)
    assert re.search(r"No matching REDCap record \(1; not queued\):\n +\+1415\*\*\*0000 +STOP",
                     out)
    assert "Already in agreement with REDCap: 1." in out
    assert re.search(r"may revoke consent \(1;.*\n +\+1617\*\*\*0100 +\? +2025-03-06 08:00", out)
    assert "Dry run: nothing changed. Run again with --apply to queue 2 jobs." in out
    assert INCOMPLETE_HISTORY in out
    assert "cannot be filtered by Messaging Service" in out
    for number in (PARTICIPANT, OPTED_OUT, STRANGER, "555-867-5309"):
        assert number not in out
    assert jobs(config) == []
    assert study.value("1", "sms_opt_out") == ""
    assert study.value("2", "sms_opted_out___1") == "1"


def test_history_is_read_page_by_page_from_every_account_since_the_date(
        config: Config, history: FakeTwilio) -> None:
    code, out, _ = backfill(config)
    assert code == 0
    first = [q for q in history.queries if "Page" not in q]
    assert {(q["To"][0], q["DateSent>"][0]) for q in first} == {
        (BRIDGE_NUMBER, "2025-03-01T05:00:00Z")}
    assert len(first) == 2  # one per configured account
    assert len(history.queries) == 2 + 4  # 9 messages to the number since: five pages
    assert "Read 9 messages from Twilio: 8 inbound; 4 senders" in out


def test_apply_queues_ordinary_jobs_at_the_original_time_that_the_worker_applies(
        config: Config, history: FakeTwilio, study: SimProject) -> None:
    code, out, _ = backfill(config, apply=True)
    assert code == 0
    assert "Queued 2 jobs.\n" in out
    assert "already recorded" not in out
    assert jobs(config) == [
        {"project": "heart-study", "phone": PARTICIPANT, "action": "stop",
         "event_at": "2025-03-03T15:00:00.000000+00:00", "status": "pending", "source": "backfill"},
        {"project": "heart-study", "phone": OPTED_OUT, "action": "start",
         "event_at": "2025-03-04T17:30:00.000000+00:00", "status": "pending", "source": "backfill"},
    ]
    store = Store(config.storage.path)
    try:
        Worker(config, store).drain()
    finally:
        store.close()
    assert study.value("1", "sms_opt_out") == "2025-03-03 10:00:00"
    assert study.value("1", "sms_opted_out___1") == "1"
    assert study.value("2", "sms_opt_out") == ""
    assert study.value("2", "sms_opted_out___1") == "0"
    assert study.value("4", "sms_opt_out") == "2025-01-05 10:00:00"  # agreed: untouched

    code, out, _ = backfill(config, apply=True)
    assert "No differences from REDCap." in out
    assert "Already in agreement with REDCap: 3." in out


def test_apply_twice_before_the_worker_ran_queues_once(config: Config,
                                                       history: FakeTwilio) -> None:
    backfill(config, apply=True)
    _, out, _ = backfill(config, apply=True)
    assert "Queued 0 jobs.\n2 of the messages were already recorded by the bridge" in out
    assert len(jobs(config)) == 2


def test_a_message_the_webhook_already_stored_is_not_queued_again(
        config: Config, twilio: FakeTwilio) -> None:
    from bridge.inbound import InboundMessage
    from bridge.intake import Intake

    sid = twilio.add(PARTICIPANT, "STOP", "2025-03-03T10:00:00-05:00")
    store = Store(config.storage.path)
    try:
        Intake(config, store).receive(InboundMessage(sid, ACCOUNT_SID, PARTICIPANT,
                                                     BRIDGE_NUMBER, "STOP"))
    finally:
        store.close()
    _, out, _ = backfill(config, apply=True)
    assert "Queued 0 jobs.\n1 of the messages were already recorded" in out
    assert [job["source"] for job in jobs(config)] == ["webhook"]


def test_twilio_refusing_the_credentials_is_an_error(config: Config,
                                                     twilio: FakeTwilio) -> None:
    twilio.status = 401
    code, out, err = backfill(config)
    assert code == 1
    assert "reading Twilio's message history failed" in err
    assert AUTH_TOKEN not in err
    assert out == ""


def test_twilio_out_of_reach_is_one_line_not_a_traceback(config: Config,
                                                         twilio: FakeTwilio) -> None:
    twilio.mocker.get(re.compile(r"https://api\.twilio\.com/"),
                      exc=requests.exceptions.ConnectionError(
                          "HTTPSConnectionPool(host='api.twilio.com'): Name or service not known"))
    code, out, err = backfill(config)
    assert code == 1 and out == ""
    assert err == ("error: cannot reach Twilio's API (ConnectionError): check this machine's"
                   " network, DNS and proxy settings\n")


def test_an_unknown_project_is_bad_input(config: Config, twilio: FakeTwilio) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(config, "no-such-study", "2025-03-01", apply=False, out=out, err=err) == 2
    assert err.getvalue() == f"error: no project named 'no-such-study' in {config.path}\n"
    assert twilio.queries == []


def test_project_without_numbers_is_refused_with_the_reason(
        tmp_path: Path, sim: RedcapSimulator, twilio: FakeTwilio) -> None:
    config = make_config(tmp_path, [project_config(sim, sim.add_project(classic_project()),
                                                   numbers=())])
    code, _, err = backfill(config)
    assert code == 2
    assert "can only be searched by number" in err
    assert twilio.queries == []


def test_nothing_to_compare_needs_no_redcap_call(config: Config, twilio: FakeTwilio,
                                                 sim: RedcapSimulator) -> None:
    code, out, _ = backfill(config)
    assert code == 0
    assert "0 senders with an opt-out or opt-in" in out
    assert sim.calls == []


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-01", datetime(2025, 3, 1, 5, tzinfo=UTC)),
    ("2025-03-01T12:30", datetime(2025, 3, 1, 17, 30, tzinfo=UTC)),
    ("2025-03-01T12:30:00+00:00", datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),
])
def test_since_is_read_in_the_projects_zone(text: str, expected: datetime) -> None:
    assert parse_since(text, "America/New_York") == expected


@pytest.mark.parametrize("since", ["yesterday", "2999-01-01"])
def test_bad_since_is_an_error(config: Config, twilio: FakeTwilio, since: str) -> None:
    code, _, err = backfill(config, since=since)
    assert code == 2
    assert err.startswith("error: --since")
    assert twilio.queries == []


def test_cli_subcommand_runs_from_a_config_file(
        tmp_path: Path, sim: RedcapSimulator, history: FakeTwilio, study: SimProject,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    path = write_config(
        tmp_path / "bridge.yaml", port=8080,
        accounts=[{"account_sid": ACCOUNT_SID, "auth_token": "${TWILIO_AUTH_TOKEN}"}],
        projects=[{
            "name": "heart-study", "twilio": {"numbers": [BRIDGE_NUMBER]},
            "redcap": {"url": sim.api_url, "token": sim.add_project(study)},
            "phone_field": "mobile", "opt_out_field": "sms_opt_out",
            "opt_out_checkbox": "sms_opted_out", "timezone": "America/New_York",
        }])
    args = build_parser().parse_args(["backfill", "--config", str(path), "--project",
                                      "heart-study", "--since", "2025-03-01"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Differences from REDCap (2):" in out
    assert "cannot be filtered by Messaging Service" not in out  # no services configured
