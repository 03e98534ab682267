"""The benchmark's floor endpoint does the intake it claims, or its numbers mean nothing.

``bench/bare_server.py --floor`` is the yardstick the scale benchmark compares the bridge
with: the least intake the issue allows. If it skipped the signature check or the durable
write, it would look faster than any real intake could be; these tests hold it to both.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from bridge.inbound import sign
from tests.process import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "f" * 32
SID = "SM" + "1" * 32
FORM = {"MessageSid": SID, "AccountSid": "AC" + "2" * 32, "From": "+12025550123",
        "To": "+12025550100", "Body": "STOP", "NumMedia": "0"}


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    store = tmp_path / "floor.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_server.py"), "--port", str(port),
         "--floor", "--auth-token", TOKEN, "--store", str(store)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/twilio/sms"
    try:
        for _ in range(200):
            try:
                requests.post(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None:
                    raise AssertionError("the floor endpoint exited") from None
                time.sleep(0.05)
        yield url, store
    finally:
        proc.terminate()
        proc.wait(10)


def post(url: str, form: dict[str, str], signature: str) -> requests.Response:
    return requests.post(url, data=urlencode(form), timeout=5, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})


def test_a_signed_stop_is_stored_with_its_job_before_the_answer(floor: tuple[str, Path]
                                                                ) -> None:
    url, store = floor
    answer = post(url, FORM, sign(url, FORM, TOKEN))
    assert answer.status_code == 200
    assert "<Response" in answer.text
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT message_sid, intent FROM messages").fetchall() == \
            [(SID, "stop")]
        assert conn.execute("SELECT phone, action, status FROM jobs").fetchall() == \
            [("+12025550123", "stop", "pending")]


def test_a_bad_signature_is_refused_and_nothing_stored(floor: tuple[str, Path]) -> None:
    url, store = floor
    assert post(url, FORM, sign(url, FORM, "0" * 32)).status_code == 403
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
