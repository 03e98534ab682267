"""REDCap's API surface: request parameters in, status and body out.

This is the layer that knows REDCap's parameter names, their defaults and the order in which
REDCap checks them (token, content, format, rights, action). It knows nothing of sockets or
Flask, so it can be read next to the API documentation.

What the simulator does not do, it refuses with a 400 naming the simulator, rather than
answering differently from REDCap: formats other than json, ``filterLogic``, ``type=eav``,
``rawOrLabel=label``, ``forceAutoNumber``, ``dateFormat`` other than YMD, and contents other
than version, project, metadata, event, formEventMapping and record. Errors are always JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bridge.sim.model import ApiError, ExportQuery, SimProject

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
VERSION = "15.7.6"

NO_PERMISSION = "You do not have permissions to use the API"
NO_EXPORT = "You do not have API Export privileges"
NO_IMPORT = "You do not have API Import/Update privileges"
BAD_DATA = (
    "The data being imported is not formatted correctly. The JSON must be in an array, as in "
    "[{ ... }]."
)

# Contents REDCap knows but the simulator does not serve (told apart from invalid ones).
UNSUPPORTED_CONTENTS = frozenset(
    {
        "arm",
        "dag",
        "exportFieldNames",
        "file",
        "fileRepository",
        "generateNextRecordName",
        "instrument",
        "log",
        "participantList",
        "pdf",
        "repeatingFormsEvents",
        "report",
        "surveyLink",
        "surveyQueueLink",
        "surveyReturnCode",
        "user",
        "userRole",
    }
)

_ARRAY_KEY = re.compile(r"(\w+)\[\d*\]")
_DATE_RANGE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class ApiRequest:
    """The form fields of one API request, with PHP-style arrays gathered into lists."""

    params: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_form(cls, items: Iterable[tuple[str, str]]) -> ApiRequest:
        """Read ``name[0]=a&name[1]=b`` (or ``name[]=``) into lists, as PHP does."""
        params: dict[str, str] = {}
        arrays: dict[str, list[str]] = {}
        for key, value in items:
            match = _ARRAY_KEY.fullmatch(key)
            if match:
                arrays.setdefault(match.group(1), []).append(value)
            else:
                params[key] = value
        return cls(params, arrays)

    def get(self, name: str, default: str = "") -> str:
        return self.params.get(name, default)

    def array(self, name: str) -> list[str]:
        """An array parameter; a plain comma-separated value is accepted too."""
        values = list(self.arrays.get(name, ()))
        values += [part.strip() for part in self.get(name).split(",") if part.strip()]
        return values


@dataclass(frozen=True)
class Reply:
    """An HTTP answer; ``records`` counts the records it carried, for the call log."""

    status: int
    body: str
    content_type: str = JSON_TYPE
    records: int = 0


def error_reply(status: int, message: str) -> Reply:
    """REDCap's error shape: ``{"error": "..."}``."""
    return Reply(status, json.dumps({"error": message}))


def answer(project: SimProject | None, request: ApiRequest) -> Reply:
    """Answer one API request for the project its token named (None: no such token)."""
    try:
        return _dispatch(project, request)
    except ApiError as error:
        return error_reply(error.status, error.message)


def _dispatch(project: SimProject | None, request: ApiRequest) -> Reply:
    if project is None:
        raise ApiError(403, NO_PERMISSION)
    content = request.get("content")
    if content in UNSUPPORTED_CONTENTS:
        raise ApiError(400, f"content={content} is not supported by the simulator")
    if content not in {"version", "project", "metadata", "event", "formEventMapping", "record"}:
        raise ApiError(400, 'The value of the parameter "content" is not valid')
    action = request.get("action", "export")
    if action not in ("export", "import"):
        raise ApiError(400, 'The value of the parameter "action" is not valid')
    if action == "import" and content != "record":
        raise ApiError(400, f"Importing content={content} is not supported by the simulator")
    if action == "export" and not project.can_export:
        raise ApiError(403, NO_EXPORT)
    if action == "import" and not project.can_import:
        raise ApiError(403, NO_IMPORT)
    if content == "version":
        return Reply(200, VERSION, TEXT_TYPE)
    for name in ("format", "returnFormat"):
        if request.get(name, "json") != "json":
            raise ApiError(400, f"{name}={request.get(name)} is not supported by the simulator")
    if "format" not in request.params:
        raise ApiError(400, "The simulator needs format=json (REDCap's default is xml)")
    if content == "project":
        return _json(project.project_info())
    if content == "metadata":
        return _json(project.metadata(request.array("fields"), request.array("forms")))
    if content in ("event", "formEventMapping"):
        if not project.longitudinal:
            raise ApiError(400, "You cannot export events for classic projects")
        rows = project.events() if content == "event" else project.form_event_mapping()
        return _json(rows)
    if action == "import":
        return _import_records(project, request)
    return _export_records(project, request)


def _export_records(project: SimProject, request: ApiRequest) -> Reply:
    """``filterLogic`` is refused: the bridge must never depend on it (it has no escaping)."""
    if request.get("filterLogic"):
        raise ApiError(400, "filterLogic is not supported by the simulator")
    _require(request, "type", "flat")
    _require(request, "rawOrLabel", "raw")
    query = ExportQuery(
        records=request.array("records"),
        fields=request.array("fields"),
        forms=request.array("forms"),
        events=request.array("events"),
        modified_from=_date_range(request, "dateRangeBegin"),
        modified_until=_date_range(request, "dateRangeEnd"),
    )
    rows, records = project.export_records(query)
    return _json(rows, records)


def _import_records(project: SimProject, request: ApiRequest) -> Reply:
    _require(request, "type", "flat")
    _require(request, "dateFormat", "YMD")
    if request.get("forceAutoNumber", "false").lower() not in ("", "false", "0"):
        raise ApiError(400, "forceAutoNumber is not supported by the simulator")
    overwrite_behavior = request.get("overwriteBehavior", "normal")
    if overwrite_behavior not in ("normal", "overwrite"):
        raise ApiError(400, 'The value of the parameter "overwriteBehavior" is not valid')
    return_content = request.get("returnContent", "count")
    if return_content not in ("count", "ids"):
        raise ApiError(400, f"returnContent={return_content} is not supported by the simulator")
    rows = _parse_rows(request.get("data"))
    ids = project.import_records(rows, overwrite=overwrite_behavior == "overwrite")
    body: object = {"count": len(ids)} if return_content == "count" else ids
    return _json(body, len(ids))


def _parse_rows(data: str) -> list[dict[str, str]]:
    """The ``data`` parameter: a JSON array of flat objects.

    Numbers are taken as their text and null as blank, as REDCap's PHP decoding does;
    anything nested is malformed.
    """
    try:
        decoded = json.loads(data)
    except ValueError:
        raise ApiError(400, BAD_DATA) from None
    if not isinstance(decoded, list) or not all(isinstance(row, dict) for row in decoded):
        raise ApiError(400, BAD_DATA)
    rows: list[dict[str, str]] = []
    for row in decoded:
        clean: dict[str, str] = {}
        for key, value in row.items():
            if value is None:
                clean[key] = ""
            elif isinstance(value, str):
                clean[key] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                clean[key] = str(value)
            else:
                raise ApiError(400, BAD_DATA)
        rows.append(clean)
    return rows


def _require(request: ApiRequest, name: str, supported: str) -> None:
    value = request.get(name, supported) or supported
    if value != supported:
        raise ApiError(400, f"{name}={value} is not supported by the simulator")


def _date_range(request: ApiRequest, name: str) -> datetime | None:
    """``dateRangeBegin``/``End`` as a UTC datetime; both bounds are inclusive."""
    text = request.get(name)
    if not text:
        return None
    try:
        return datetime.strptime(text, _DATE_RANGE_FORMAT)
    except ValueError:
        raise ApiError(
            400, f'The value of the parameter "{name}" is not a valid date (YYYY-MM-DD HH:MM:SS)'
        ) from None


def _json(body: object, records: int = 0) -> Reply:
    return Reply(200, json.dumps(body, separators=(",", ":")), JSON_TYPE, records)
