"""REDCap API client: the only module that speaks HTTP to REDCap.

Every failure comes out as ``RedcapError`` with ``permanent`` set, so callers decide between
retrying (network trouble, timeouts, 5xx, 429, and redirects, which are never followed) and
stopping to tell a person (403 token or rights, 400 unknown field or invalid value). Every
request first takes a token from the host's ``RequestBudget``. Tokens never appear in logs or
error messages.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests

from bridge import metrics
from bridge.budget import RequestBudget, host_of

logger = logging.getLogger(__name__)


class RedcapError(Exception):
    """A REDCap request failed. ``permanent`` errors need a person; the rest are retried."""

    def __init__(self, message: str, *, permanent: bool, status: int | None = None,
                 records: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status
        # Record IDs named in a validation error, so one bad record need not fail a batch.
        self.records = records


class UntrustedCertificate(RedcapError):
    """REDCap's TLS certificate did not verify: retried, but a person must supply the CA."""


class StopRequested(Exception):
    """The process is shutting down while waiting for the request budget."""


@dataclass(frozen=True)
class FieldInfo:
    name: str
    form: str
    field_type: str
    validation: str
    choices: str


@dataclass(frozen=True)
class ProjectInfo:
    """What the worker needs to know about a project's structure, read from REDCap once."""

    record_id_field: str
    longitudinal: bool
    repeating: bool
    fields: dict[str, FieldInfo]
    form_events: dict[str, frozenset[str]] = field(default_factory=dict)  # form -> events


class RedcapClient:
    def __init__(self, url: str, token: str, budget: RequestBudget, *, timeout: float = 30.0,
                 session: requests.Session | None = None,
                 stop: threading.Event | None = None) -> None:
        self.url = url
        self.host = host_of(url)
        self._token = token
        self.budget = budget
        self.timeout = timeout
        self.session = session or requests.Session()
        self.stop = stop

    def __repr__(self) -> str:
        return f"RedcapClient({self.url!r})"

    # -- transport ---------------------------------------------------------------------------

    def call(self, content: str, **params: str | Sequence[str]) -> requests.Response:
        """POST one API request and return the 200 response, or raise RedcapError."""
        data: dict[str, str] = {"token": self._token, "content": content, "format": "json",
                                "returnFormat": "json"}
        for key, value in params.items():
            if isinstance(value, str):
                data[key] = value
            else:
                for index, item in enumerate(value):
                    data[f"{key}[{index}]"] = item
        waiting = time.perf_counter()
        if not self.budget.acquire(self.stop):
            raise StopRequested()
        started = time.perf_counter()
        # Steady growth means the budget, not REDCap, sets the pace (a backlog drains).
        metrics.REDCAP_BUDGET_WAIT.labels(host=self.host).inc(started - waiting)
        try:
            # Never follow a redirect: requests would resend a 307/308's body, token and all,
            # to wherever it points, and turn a 301/302 into a GET that loses the import; and
            # each hop would be a request the budget did not count.
            response = self.session.post(self.url, data=data, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.Timeout as exc:
            self._observe(content, "timeout", started)
            raise RedcapError(f"REDCap did not answer within {self.timeout:g} s",
                              permanent=False) from exc
        except requests.exceptions.SSLError as exc:
            self._observe(content, "tls_error", started)
            raise _tls_problem(exc) from exc
        except requests.RequestException as exc:
            self._observe(content, "connection_error", started)
            raise RedcapError(f"cannot reach REDCap: {type(exc).__name__}",
                              permanent=False) from exc
        self._observe(content, str(response.status_code), started)
        if response.status_code == 200:
            return response
        raise _error_from(response)

    @staticmethod
    def _observe(content: str, result: str, started: float) -> None:
        metrics.REDCAP_REQUESTS.labels(content=content, result=result).inc()
        metrics.REDCAP_LATENCY.labels(content=content).observe(time.perf_counter() - started)

    def _json(self, content: str, **params: str | Sequence[str]) -> object:
        response = self.call(content, **params)
        try:
            return response.json()
        except ValueError as exc:
            raise RedcapError(f"REDCap answered {content} with something that is not JSON",
                              permanent=False) from exc

    # -- API -----------------------------------------------------------------------------------

    def version(self) -> str:
        return self.call("version").text.strip()

    def project(self) -> dict:
        return _expect(self._json("project"), dict, "project")

    def metadata(self) -> list[dict]:
        return _expect(self._json("metadata"), list, "metadata")

    def form_event_mapping(self) -> list[dict]:
        return _expect(self._json("formEventMapping"), list, "formEventMapping")

    def project_info(self) -> ProjectInfo:
        """Structure of the project: record ID field, longitudinal or not, field types."""
        project = self.project()
        metadata = self.metadata()
        if not metadata:
            raise RedcapError("the project has no fields", permanent=True)
        fields = {
            row["field_name"]: FieldInfo(
                name=row["field_name"], form=row.get("form_name", ""),
                field_type=row.get("field_type", ""),
                validation=row.get("text_validation_type_or_show_slider_number", "") or "",
                choices=row.get("select_choices_or_calculations", "") or "",
            )
            for row in metadata
        }
        longitudinal = str(project.get("is_longitudinal", "0")) == "1"
        form_events: dict[str, set[str]] = {}
        if longitudinal:
            for row in self.form_event_mapping():
                form_events.setdefault(row["form"], set()).add(row["unique_event_name"])
        return ProjectInfo(
            record_id_field=metadata[0]["field_name"],
            longitudinal=longitudinal,
            repeating=str(project.get("has_repeating_instruments_or_events", "0")) == "1",
            fields=fields,
            form_events={form: frozenset(events) for form, events in form_events.items()},
        )

    def export_records(self, fields: Sequence[str], *, records: Sequence[str] = (),
                       events: Sequence[str] = (), date_range_begin: str | None = None,
                       ) -> list[dict[str, str]]:
        params = _export_params(fields, records, events, date_range_begin)
        return _expect(self._json("record", action="export", **params), list, "record export")

    def iter_records(self, fields: Sequence[str], *, events: Sequence[str] = (),
                     date_range_begin: str | None = None) -> Iterator[dict[str, str]]:
        """``export_records`` decoded one row at a time, for exports of a whole project.

        The request is made (and its errors raised) at once; the rows come as they are
        read. A 100,000-record export then never exists as 100,000 dictionaries at once,
        which is most of the memory a phone index build would otherwise take.
        """
        params = _export_params(fields, (), events, date_range_begin)
        response = self.call("record", action="export", **params)
        try:
            text = response.content.decode(response.encoding or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise RedcapError("REDCap answered record export with undecodable text",
                              permanent=False) from exc
        return _iter_json_rows(text, "record export")

    def import_records(self, rows: Sequence[dict[str, str]]) -> int:
        """Import rows with ``overwrite`` so blanks clear values; returns REDCap's count."""
        result = self._json("record", action="import", type="flat",
                            overwriteBehavior="overwrite", returnContent="count",
                            dateFormat="YMD", data=json.dumps(list(rows)))
        if isinstance(result, dict) and "count" in result:
            return int(result["count"])
        raise RedcapError("REDCap answered the import without a count", permanent=False)


def _export_params(fields: Sequence[str], records: Sequence[str], events: Sequence[str],
                   date_range_begin: str | None) -> dict[str, str | Sequence[str]]:
    params: dict[str, str | Sequence[str]] = {"type": "flat", "rawOrLabel": "raw",
                                              "fields": list(fields)}
    if records:
        params["records"] = list(records)
    if events:
        params["events"] = list(events)
    if date_range_begin:
        params["dateRangeBegin"] = date_range_begin
    return params


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


def _iter_json_rows(text: str, what: str) -> Iterator[dict[str, str]]:
    """The objects of a JSON array, decoded one by one; RedcapError if it is not one."""

    def malformed() -> RedcapError:
        return RedcapError(f"REDCap answered {what} with something that is not a JSON list"
                           " of records", permanent=False)

    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise malformed()
    pos = _skip_space(text, pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            row, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            raise malformed() from None
        if not isinstance(row, dict):
            raise malformed()
        yield row
        pos = _skip_space(text, pos)
        if text.startswith("]", pos):
            if text[pos + 1:].strip():
                raise malformed()
            return
        if not text.startswith(",", pos):
            raise malformed()
        pos = _skip_space(text, pos + 1)


def _expect(value: object, kind: type, what: str):
    if not isinstance(value, kind):
        raise RedcapError(f"REDCap answered {what} with an unexpected shape", permanent=False)
    return value


_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^(')]+)")


def _tls_problem(exc: requests.exceptions.SSLError) -> RedcapError:
    """What went wrong with TLS, and the usual fix when REDCap's certificate is not trusted.

    Universities often sign their servers' certificates with their own CA, which the CA
    bundle requests uses (certifi's, not the system's) does not include.
    """
    failed = _VERIFY_FAILED.search(str(exc))
    if failed is None:
        return RedcapError(f"cannot reach REDCap: TLS failed ({type(exc).__name__})",
                           permanent=False)
    return UntrustedCertificate(
        f"cannot reach REDCap: its TLS certificate is not trusted here"
        f" ({failed.group(1).strip()}); if your institution signs its own certificates,"
        " set REQUESTS_CA_BUNDLE in the bridge's environment to a file holding its CA"
        " (on Debian and Ubuntu, /etc/ssl/certs/ca-certificates.crt once the CA is"
        " installed there)", permanent=False)


def _error_from(response: requests.Response) -> RedcapError:
    status = response.status_code
    if 300 <= status < 400:
        # Retried, not failed: a load balancer may redirect to a page during maintenance.
        # The target is named without its query or user part, which may carry secrets.
        target = urlsplit(response.headers.get("Location", ""))
        where = urlunsplit(target._replace(netloc=target.netloc.rpartition("@")[2],
                                           query="", fragment="")) or "nowhere"
        return RedcapError(f"REDCap HTTP {status}: redirected to {where}, not followed; if"
                           " that is the API's real address, set redcap.url to it",
                           permanent=False, status=status)
    message = _error_message(response)
    if status == 429 or status >= 500:
        return RedcapError(f"REDCap HTTP {status}: {message}", permanent=False, status=status)
    return RedcapError(f"REDCap HTTP {status}: {message}", permanent=True, status=status,
                       records=_records_named(message))


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:2000]
    return response.text.strip()[:500] or response.reason or "no message"


def _records_named(message: str) -> frozenset[str]:
    """Record IDs from validation lines shaped ``"record","field","value","message"``."""
    records: set[str] = set()
    for line in message.splitlines():
        if not line.startswith('"'):
            continue
        try:
            cells = next(csv.reader(io.StringIO(line)))
        except (csv.Error, StopIteration):
            continue
        if len(cells) >= 4:
            records.add(cells[0])
    return frozenset(records)


def chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
