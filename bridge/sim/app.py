"""The simulator's HTTP edge: one Flask route that hands the form to the simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request
from waitress.channel import ClientDisconnected

from bridge.sim.api import ApiRequest, Reply

# (client IP, HTTP method, parsed form) -> the reply, or None to drop the connection.
Handler = Callable[[str, str, ApiRequest], Reply | None]

# REDCap servers are usually set up for large imports (PHP post_max_size, max_input_vars);
# Flask's defaults (500 kB, 1000 fields) would refuse a big batch or a long records[] list.
MAX_FORM_BYTES = 64 * 1024 * 1024
MAX_FORM_FIELDS = 200_000


class DroppedConnection(Response):
    """A "response" that makes waitress close the connection without answering.

    Raising ``ClientDisconnected`` from the WSGI call (outside Flask's error handling, which
    would turn it into a 500) makes waitress drop the request and close the socket once
    nothing is left to send. The client sees a connection closed without a response, as from
    a crashed or restarted server.
    """

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise ClientDisconnected("connection dropped by an injected fault")


def create_app(handle: Handler) -> Flask:
    """The WSGI app: every method reaches the handler, which answers 501 to all but POST."""
    app = Flask(__name__)
    app.config.update(MAX_FORM_MEMORY_SIZE=MAX_FORM_BYTES, MAX_FORM_PARTS=MAX_FORM_FIELDS)

    @app.route(
        "/api/",
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        provide_automatic_options=False,
    )
    def api() -> Response:
        form = ApiRequest.from_form(request.form.items(multi=True))
        reply = handle(request.remote_addr or "", request.method, form)
        if reply is None:
            return DroppedConnection()
        return Response(reply.body, reply.status, content_type=reply.content_type)

    return app
