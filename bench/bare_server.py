"""A bare endpoint on the bridge's WSGI server settings: the ceiling for webhook intake.

It reads the request body and answers the same empty TwiML as ``POST /twilio/sms``, with
nothing in between (no Flask, no signature check, no classification, no SQLite). Served by
the same server as ``bridge.service.serve`` (``bridge.http_server.HttpServer``: waitress with
the same settings), so the difference between this and the bridge under the same load is the
cost of the bridge's own work per webhook.

    python bench/bare_server.py --port 8099 --threads 8
    python bench/bare_server.py --port 8099 --flask   # the same, as a one-route Flask app

``--flask`` shows what Flask's own request handling costs on this server before the bridge
does anything.
"""

from __future__ import annotations

import argparse
import signal
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--flask", action="store_true", help="a one-route Flask app instead")
    args = parser.parse_args()
    server = HttpServer(flask_app() if args.flask else app,
                        ServerConfig(port=args.port, threads=args.threads), [])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: server.stop())
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
