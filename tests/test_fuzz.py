"""Hostile input at the webhook: fuzzed requests, replays, unknown accounts, oversized bodies.

Guarantees: whatever arrives, the webhook never answers 500 (nor a 503, which here could only
hide a crash: the store is healthy), never stores an event that was not validly signed, and
nothing unsigned ever reaches REDCap. Bodies over ``server.max_body_bytes`` are refused before
they are read, let alone parsed.

The suite runs a bounded fuzz; a long one by hand:

    BRIDGE_FUZZ_EXAMPLES=100000 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.inbound import MAX_BODY_CHARS, sign
from bridge.phones import normalise
from bridge.sim import RedcapSimulator
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PARTICIPANT,
    PUBLIC_URL,
    SUBACCOUNT_SID,
    WEBHOOK_URL,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.faults import StoreReader
from tests.process import BridgeProcess, free_port
from tests.test_serve import serve_config

EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "1500"))
RAW_EXAMPLES = max(EXAMPLES // 8, 40)
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
# Validly signed fuzz messages come from a number no record has; everything else claims to
# come from the participant, whose record must never be touched.
SIGNED_SENDER = "+12025550199"
FIELDS = ("MessageSid", "SmsSid", "SmsMessageSid", "AccountSid", "From", "To", "Body",
          "OptOutType", "MessagingServiceSid", "NumMedia", "ApiVersion", "MediaUrl0")
CONTENT_TYPES = (
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
    "application/x-www-form-urlencoded; charset=latin-1",
    "application/x-www-form-urlencoded; charset=utf-16", "application/json",
    "multipart/form-data; boundary=fuzz", "multipart/form-data", "text/plain", "text/xml",
    "application/octet-stream", "", "garbage/\x00\xff", "application/x-www-form-urlencoded;;;",
)
METHODS = ("POST", "POST", "POST", "POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PATHS = ("/twilio/sms", "/twilio/sms", "/twilio/sms", "/twilio/sms/", "/twilio/SMS",
         "/twilio/sms?x=1", "/twilio/sms%00", "/twilio/../twilio/sms", "//twilio/sms")
NEVER = (500, 503)


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    signed: dict[str, str] | None = None  # the form it carries a valid signature for
    knowable: bool = True  # False: whether the signature still holds is not known up front

    def __repr__(self) -> str:  # bodies can be huge; show enough to replay by hand
        headers = {name: value[:80] for name, value in self.headers.items()}
        return (f"Request({self.method} {self.path!r}, {len(self.body)} bytes"
                f" {self.body[:300]!r}, headers={headers}, signed={self.signed is not None},"
                f" knowable={self.knowable})")


@dataclass
class Ledger:
    """Every form validly signed so far, by MessageSid: the only things allowed in the store."""

    signed: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def record(self, params: dict[str, str]) -> None:
        for key in ("MessageSid", "SmsMessageSid", "SmsSid"):
            if params.get(key):
                self.signed.setdefault(params[key], []).append(params)

    def matches(self, row: sqlite3.Row) -> bool:
        """The stored message says exactly what one of the forms signed with its SID said."""
        return any(
            row["from_phone"] in (params["From"].strip(), normalise(params["From"].strip()))
            and row["body"] == (params.get("Body") or "")[:MAX_BODY_CHARS]
            and row["account_sid"] == params["AccountSid"]
            for params in self.signed.get(row["message_sid"], ()))


values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "STOP", "stop", "START", PARTICIPANT, "5558675309", ACCOUNT_SID,
                     SUBACCOUNT_SID, "SM" + "a" * 32, "MM" + "0" * 32, BRIDGE_NUMBER, "\x00",
                     "%FF", "&", "=", "+", "whatsapp:" + PARTICIPANT, "\ud800", "☃" * 5]),
    st.builds(lambda char, count: char * count, st.characters(), st.integers(500, 80_000)),
)
# What can travel in an HTTP header: latin-1, no line breaks.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=40)


def valid_text(text: str) -> str:
    """What survives UTF-8 (lone surrogates cannot be sent, signed or not)."""
    return text.encode("utf-8", "replace").decode("utf-8")


forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=20)), values,
                        max_size=14).map(
    lambda form: {valid_text(key): valid_text(value) for key, value in form.items()})


def encode(params: dict[str, str], charset: str) -> bytes:
    return urlencode(params, encoding=charset, errors="replace").encode("ascii")


@st.composite
def requests_(draw: st.DrawFn, ledger: Ledger) -> Request:
    """A request to the bridge: anything from line noise to a perfect signed Twilio post."""
    method = draw(st.sampled_from(METHODS))
    path = draw(st.sampled_from(PATHS))
    headers: dict[str, str] = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    kind = draw(st.sampled_from(["forged", "forged", "tampered", "bytes", "signed", "mutated",
                                 "json"]))
    signed: dict[str, str] | None = None
    knowable = True
    if kind == "signed":  # validly signed, whatever it says: 200, or 400 when malformed
        params = draw(forms)
        params["AccountSid"] = draw(st.sampled_from([ACCOUNT_SID, ACCOUNT_SID, "", "AC"]))
        params["From"] = draw(st.sampled_from([SIGNED_SENDER, "", " ", "garbage", "+1"]))
        if draw(st.booleans()):
            params["MessageSid"] = "SM" + draw(st.text("0123456789abcdef", min_size=32,
                                                       max_size=32))
        body = encode(params, "utf-8")
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        url = PUBLIC_URL + path if path.startswith("/twilio/sms?") else WEBHOOK_URL
        headers["X-Twilio-Signature"] = sign(url, params, AUTH_TOKEN)
        if path in ("/twilio/sms", "/twilio/sms?x=1") and params["AccountSid"] == ACCOUNT_SID:
            signed = params
            ledger.record(params)
    elif kind == "tampered":  # a signed Twilio post with one thing changed after signing
        params = twilio_params(draw(st.sampled_from(["STOP", "START", "hello"])),
                               SIGNED_SENDER)
        headers["X-Twilio-Signature"] = sign(WEBHOOK_URL, params, AUTH_TOKEN)
        ledger.record(dict(params))
        change = draw(st.sampled_from(["value", "drop", "impersonate"]))
        if change == "impersonate":
            params["From"] = PARTICIPANT
        elif change == "drop":
            del params[draw(st.sampled_from(sorted(params)))]
        else:  # a changed value, or a parameter Twilio did not send
            name = draw(st.sampled_from([*params, "Extra"]))
            new = valid_text(draw(values))
            params[name] = new if new != params.get(name) else new + "x"
        body = encode(params, "utf-8")
    elif kind == "mutated":  # a signed body with bytes flipped, cut or inserted
        params = twilio_params(draw(st.sampled_from(["STOP", "START"])), SIGNED_SENDER)
        headers["X-Twilio-Signature"] = sign(WEBHOOK_URL, params, AUTH_TOKEN)
        ledger.record(dict(params))
        raw = bytearray(encode(params, "utf-8"))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(raw)))
            action = draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip" and at < len(raw):
                raw[at] ^= 1 << draw(st.integers(0, 7))
            elif action == "cut":
                del raw[at:at + draw(st.integers(1, 30))]
            else:
                raw[at:at] = draw(st.binary(min_size=1, max_size=10))
        body = bytes(raw)
        knowable = False
    elif kind == "json":
        body = json.dumps(twilio_params("STOP")).encode()
        headers["X-Twilio-Signature"] = draw(header_text)
    elif kind == "bytes":
        body = draw(st.binary(max_size=2000))
    else:  # forged: a plausible form claiming to be the participant, signed with nothing
        params = {**twilio_params("STOP"), **draw(forms)}
        params["From"] = PARTICIPANT
        body = encode(params, draw(st.sampled_from(["utf-8", "latin-1", "utf-16"])))
        signature = draw(st.one_of(st.none(), header_text,
                                   st.just(sign(WEBHOOK_URL, params, "f" * 32)),
                                   st.just(sign("http://localhost/twilio/sms", params,
                                                AUTH_TOKEN))))
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
    if draw(st.booleans()):
        headers["I-Twilio-Idempotency-Token"] = draw(header_text)
    return Request(method, path, body, headers, signed, knowable)


def check_store(bridge: Bridge, ledger: Ledger) -> None:
    """Every stored message is one that was validly signed, with exactly the signed content."""
    for row in bridge.store.read().execute("SELECT * FROM messages"):
        assert ledger.matches(row), f"stored without a valid signature: {dict(row)}"


def test_fuzzed_webhook_requests_never_500_never_store_unsigned_never_reach_redcap(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    ledger = Ledger()
    seen: dict[int, int] = {}

    @FUZZ_SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(requests_(ledger))
        response = bridge.client.open(request.path, method=request.method, data=request.body,
                                      headers=request.headers, base_url=PUBLIC_URL)
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status not in NEVER, (request, response.get_data(as_text=True))
        on_webhook = request.method == "POST" and request.path.split("?")[0] == "/twilio/sms"
        if request.signed is not None and on_webhook:
            assert status in (200, 400, 413), status
        elif request.knowable and request.method != "OPTIONS":
            assert status != 200, request
        check_store(bridge, ledger)

    run()
    bridge.drain()
    assert not [call for call in sim.calls if call.action == "import"]
    assert project.imports_per_record["1"] == 0
    jobs = bridge.store.read().execute("SELECT phone FROM jobs").fetchall()
    assert PARTICIPANT not in {row["phone"] for row in jobs}
    # The fuzz reached every layer: refusals, malformed-but-signed, and accepted messages.
    assert {200, 400, 403, 405, 413} <= set(seen), seen


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


http_requests = st.one_of(
    st.binary(max_size=3000),
    st.builds(
        lambda method, path, headers, body: (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode("latin-1", "replace")
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            + b"\r\n" + body),
        st.sampled_from(["POST", "GET", "PUT", "POST", "BREW", "", "POST POST"]),
        st.sampled_from(["/twilio/sms", "*", "http://evil/twilio/sms", "/" + "a" * 9000, ""]),
        st.lists(st.tuples(
            st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Content-Type",
                             b"X-Twilio-Signature", b"Expect", b"Connection", b"Host",
                             b"Content-Length ", b"X" * 10_000, b"\x00"]),
            st.one_of(st.binary(max_size=40),
                      st.sampled_from([b"-1", b"0", b"99999999999999999999", b"chunked",
                                       b"chunked, identity", b"100-continue", b"5, 6",
                                       b"application/x-www-form-urlencoded"]))),
            max_size=6),
        st.binary(max_size=500)),
)


def test_raw_http_garbage_against_the_real_server(tmp_path: Path, sim: RedcapSimulator) -> None:
    """Malformed HTTP at waitress itself (bad request lines, lying Content-Length, broken
    chunking, header floods): the server never answers 500 and stays up; nothing is stored."""
    token = sim.add_project(classic_project({"1": PARTICIPANT}))
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    with BridgeProcess(config, port, env=env) as bridge:

        @settings(max_examples=RAW_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(http_requests)
        def run(data: bytes) -> None:
            answer = raw_request(port, data)
            status_line = answer.split(b"\r\n", 1)[0]
            assert b" 500 " not in status_line and b" 503 " not in status_line, answer[:300]

        run()
        assert requests.get(bridge.url + "/healthz", timeout=5).status_code == 200
        assert bridge.stop() == 0
    assert StoreReader(tmp_path / "bridge.db").stored_sids() == set()
    assert "Traceback" not in bridge.logs()


# --- the body limit, at the real server -------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path,
                                                            sim: RedcapSimulator) -> None:
    """A declared Content-Length over ``max_body_bytes`` is answered 413 at once, without
    waiting for (or buffering) the body; a chunked one is cut off at the limit."""
    token = sim.add_project(classic_project({"1": PARTICIPANT}))
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    with BridgeProcess(config, port, env=env) as bridge:
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /twilio/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 50000000\r\n\r\nBody=STOP&")
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - began < 2

        url = bridge.url + "/twilio/sms"
        params = twilio_params("STOP" + " " * 70_000)
        signature = sign(url, params, AUTH_TOKEN)

        def chunks() -> object:
            body = urlencode(params).encode()
            for start in range(0, len(body), 4096):
                yield body[start:start + 4096]

        response = requests.post(url, data=chunks(), timeout=10, headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413

        # Just under the limit, signed: accepted.
        params = twilio_params("STOP")
        params["Padding"] = "x" * (65536 - len(urlencode(params)) - len("&Padding="))
        assert len(urlencode(params)) == 65536
        response = requests.post(url, data=params, timeout=10, headers={
            "X-Twilio-Signature": sign(url, params, AUTH_TOKEN)})
        assert response.status_code == 200
        assert bridge.stop() == 0
    assert StoreReader(tmp_path / "bridge.db").stored_sids() == {params["MessageSid"]}


# --- replays and accounts ---------------------------------------------------------------------


def test_a_correctly_signed_request_for_an_unconfigured_account_is_refused(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    """Signed with that account's real token, but the bridge has no token for it: 403 and
    nothing stored, whichever token signed it (including one of ours)."""
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    stranger = "AC" + "9" * 32
    for token in ("9" * 32, AUTH_TOKEN):
        params = twilio_params("STOP", account=stranger)
        assert bridge.post(params, token=token).status_code == 403
    params = twilio_params("STOP")
    del params["AccountSid"]
    assert bridge.post(params).status_code == 403
    assert bridge.store.read().execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    bridge.drain()
    assert project.imports_per_record["1"] == 0
