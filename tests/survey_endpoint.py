"""A loopback HTTP server standing in for REDCap's ``/surveys/`` endpoint (and broken kin).

It records what REDCap would see — URL, form fields in order, headers — so tests can check the
signature against its own URL. Paths: ``/surveys/`` and ``/other/`` answer TwiML with cookies,
``/slow/`` does so after ``slow_seconds``, ``/plain/`` answers text/plain, ``/redirect/`` a 302,
``/big/`` an oversized TwiML, anything else a 500.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from bridge.forward import MAX_RESPONSE_BYTES

SURVEY_TWIML = ('<?xml version="1.0" encoding="UTF-8"?>'
                "<Response><Message>Question 2: how did you sleep?</Message></Response>")
SESSION_COOKIE = "PHPSESSID=r3dc4p; path=/redcap/; domain=redcap.example.edu; HttpOnly"
SURVEY_COOKIE = "survey_q=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/redcap/surveys/"
HOST_COOKIE = "visit=1"  # valid for the stand-in's own host: a cookie jar would keep it


@dataclass
class Received:
    path: str
    url: str
    fields: list[tuple[str, str]]
    headers: dict[str, str]
    stored_first: bool | None = None


@dataclass
class SurveyEndpoint:
    """A loopback HTTP server playing REDCap's ``/surveys/``, with misbehaving siblings."""

    slow_seconds: float = 2.0
    received: list[Received] = field(default_factory=list)
    on_request: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def app(self, environ: dict, start_response: Callable) -> object:
        request = Request(environ)
        body = request.get_data(as_text=True)
        self.received.append(Received(
            path=request.path, url=self.base + request.full_path.rstrip("?"),
            fields=parse_qsl(body, keep_blank_values=True), headers=dict(request.headers),
            stored_first=self.on_request() if self.on_request else None))
        return self.respond(request.path)(environ, start_response)

    def respond(self, path: str) -> Response:
        if path == "/slow/":
            time.sleep(self.slow_seconds)
        if path in ("/surveys/", "/slow/", "/other/"):
            response = Response(SURVEY_TWIML.replace("2", "9") if path == "/other/"
                                else SURVEY_TWIML, content_type="text/xml; charset=utf-8")
            response.headers.add("Set-Cookie", SESSION_COOKIE)
            response.headers.add("Set-Cookie", SURVEY_COOKIE)
            response.headers.add("Set-Cookie", HOST_COOKIE)
            return response
        if path == "/plain/":
            response = Response("Thanks for your answer!", content_type="text/plain")
            response.headers.add("Set-Cookie", SESSION_COOKIE)
            return response
        if path == "/redirect/":
            return Response("", status=302, headers={"Location": self.url("/surveys/")})
        if path == "/big/":
            return Response("<Response>" + " " * MAX_RESPONSE_BYTES + "</Response>",
                            content_type="text/xml")
        return Response("REDCap crashed", status=500, content_type="text/html")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
