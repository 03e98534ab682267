"""A bare endpoint on the bridge's WSGI server settings: the ceiling for webhook intake.

It reads the request body and answers the same empty TwiML as ``POST /twilio/sms``, with
nothing in between (no Flask, no signature check, no classification, no SQLite). Served by
the same server as ``bridge.service.serve`` (``bridge.http_server.HttpServer``: waitress with
the same settings), so the difference between this and the bridge under the same load is the
cost of the bridge's own work per webhook.

    python bench/bare_server.py --port 8099 --threads 8
    python bench/bare_server.py --port 8099 --flask   # the same, as a one-route Flask app
    python bench/bare_server.py --port 8099 --floor --auth-token TOKEN

``--flask`` shows what Flask's own request handling costs on this server before the bridge
does anything. ``--floor`` is the least intake the scale issue allows, built from the
bridge's own parts: the form, twilio's signature check, the message fields, the keyword
classification and one durable SQLite transaction shared by concurrent webhooks (the
bridge's store and group commit), then the answer. None of what the bridge adds: no routing,
no phone normalisation, no log line, no metrics, no worker applying the jobs. No bridge that
does its job can take in webhooks faster than this floor.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.config import ServerConfig  # noqa: E402
from bridge.http_server import HttpServer  # noqa: E402
from bridge.inbound import EMPTY_TWIML, TWIML_CONTENT_TYPE  # noqa: E402

if TYPE_CHECKING:
    from flask import Flask

ANSWER = EMPTY_TWIML.encode()


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", TWIML_CONTENT_TYPE),
                              ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]


def flask_app() -> Flask:
    from flask import Flask, Response, request  # only here: the plain endpoint stays bare

    app = Flask(__name__)

    @app.post("/twilio/sms")
    def twilio_sms() -> Response:
        request.form  # noqa: B018 - parse the body, as the bridge's route does
        return Response(EMPTY_TWIML, status=200, content_type=TWIML_CONTENT_TYPE)

    @app.post("/")
    def ready() -> Response:
        return Response(EMPTY_TWIML, status=200, content_type=TWIML_CONTENT_TYPE)

    return app


def floor_app(store_path: Path, auth_token: str) -> Callable:
    """The floor endpoint: 403 for a bad signature, as the bridge answers."""
    from bridge.consent import Intent, classify
    from bridge.group_commit import GroupCommit
    from bridge.inbound import (
        Form,
        SignatureError,
        parse_message,
        signed_url,
        verify_signature,
    )
    from bridge.intake import default_keywords
    from bridge.store import PENDING, NewJob, NewMessage, Store, utcnow

    writer = GroupCommit(Store(store_path))
    keywords = default_keywords()

    def floor(environ: dict, start_response: Callable) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if environ.get("PATH_INFO") == "/twilio/sms":
            form = Form.parse(body, environ.get("CONTENT_TYPE"))
            try:
                verify_signature(signed_url(environ, None), form,
                                 environ.get("HTTP_X_TWILIO_SIGNATURE"), auth_token)
            except SignatureError:
                start_response("403 Forbidden", [("Content-Length", "0")])
                return [b""]
            message = parse_message(form)
            intent = classify(message.body, message.opt_out_type, keywords)
            writer.record_inbound(NewMessage(
                message_sid=message.message_sid, account_sid=message.account_sid,
                from_phone=message.from_number, to_phone=message.to_number,
                messaging_service_sid=message.messaging_service_sid, body=message.body,
                opt_out_type=message.opt_out_type, intent=intent.value, source="webhook",
                received_at=utcnow()),
                [NewJob("floor", message.from_number, intent.value, PENDING)]
                if intent is not Intent.NONE else [])
        start_response("200 OK", [("Content-Type", TWIML_CONTENT_TYPE),
                                  ("Content-Length", str(len(ANSWER)))])
        return [ANSWER]

    return floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--flask", action="store_true", help="a one-route Flask app instead")
    parser.add_argument("--floor", action="store_true",
                        help="the least intake the scale issue allows (needs --auth-token)")
    parser.add_argument("--auth-token", default="", help="the token webhooks are signed with")
    parser.add_argument("--store", type=Path,
                        help="the floor's SQLite file (default: in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="floor-") as folder:
        if args.floor:
            chosen = floor_app(args.store or Path(folder) / "floor.sqlite3", args.auth_token)
        else:
            chosen = flask_app() if args.flask else app
        server = HttpServer(chosen, ServerConfig(port=args.port, threads=args.threads), [])
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: server.stop())
        server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
