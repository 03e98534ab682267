"""REDCap checks for one project: reachable, token, rights, fields, events, phone values.

Nothing here writes to REDCap. The field and event rules are the worker's own
(``bridge.sync.setup_problems``), so ``check`` passes exactly when the worker would accept
the project.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from bridge.check.report import CheckResult, Status
from bridge.config import ProjectConfig
from bridge.phones import normalise
from bridge.redcap import ProjectInfo, RedcapClient, RedcapError, UntrustedCertificate
from bridge.sync import SetupProblem, setup_problems

_VERSION = re.compile(r"\d+\.\d+\.\d+")
EXAMPLES = 5  # unparseable phone values shown


class _Checks:
    """Collects one project's results under its section heading."""

    def __init__(self, project: ProjectConfig) -> None:
        self.project = project
        self.section = f"project {project.name} ({project.redcap.url})"
        self.results: list[CheckResult] = []

    def add(self, name: str, status: Status, summary: str, hint: str = "",
            **details: object) -> None:
        summary = summary.removeprefix(f"project {self.project.name!r}: ")  # the heading says it
        self.results.append(CheckResult(self.section, name, status, summary, hint, details))

    def skip(self, names: Sequence[str], reason: str) -> None:
        for name in names:
            self.add(name, Status.SKIP, f"{_LABELS[name]}: not checked ({reason})")


_LABELS = {
    "redcap.reachable": "REDCap reachable",
    "redcap.token": "token",
    "redcap.export": "export right",
    "redcap.import": "import right",
    "redcap.structure": "project structure",
    "redcap.fields": "fields",
    "redcap.opt_out_field": "opt-out field type",
    "redcap.checkbox": "opt-out checkbox",
    "redcap.events": "events",
    "redcap.phone_values": "phone values",
}
_AFTER_STRUCTURE = ("redcap.fields", "redcap.opt_out_field", "redcap.checkbox", "redcap.events",
                    "redcap.phone_values")


def check_project(project: ProjectConfig, client: RedcapClient) -> list[CheckResult]:
    checks = _Checks(project)
    can_export = _version(checks, client)
    if can_export is None:
        return checks.results
    _import_right(checks, client)
    if not can_export:
        checks.skip(_names(project, ("redcap.structure", *_AFTER_STRUCTURE)),
                    "needs the export right")
        return checks.results
    try:
        info = client.project_info()
    except RedcapError as exc:
        checks.add("redcap.structure", Status.FAIL,
                   f"cannot read the project's structure: {exc.message}",
                   "REDCap answered the version request but not metadata; try again, and ask"
                   " the REDCap administrator if it persists")
        checks.skip(_names(project, _AFTER_STRUCTURE), "the structure could not be read")
        return checks.results
    _fields(checks, info)
    _phone_values(checks, client, info)
    return checks.results


def _names(project: ProjectConfig, names: Sequence[str]) -> list[str]:
    return [name for name in names if name != "redcap.checkbox" or project.opt_out_checkbox]


# -- reachability, token, rights ---------------------------------------------------------------

def _version(checks: _Checks, client: RedcapClient) -> bool | None:
    """Reachable, token and export right from one ``content=version`` request.

    REDCap checks the token first and then the export right (it files ``version`` under
    exports), so its answer tells the three apart. Returns whether the export right is
    there, or None when nothing more can be checked.
    """
    url = checks.project.redcap.url
    later = _names(checks.project, ("redcap.token", "redcap.export", "redcap.import",
                                    "redcap.structure", *_AFTER_STRUCTURE))
    try:
        version = client.version()
    except RedcapError as exc:
        if exc.status is not None and 300 <= exc.status < 400:
            checks.add("redcap.reachable", Status.FAIL, f"{url} redirects elsewhere: {exc.message}",
                       "set redcap.url to the address REDCap's API answers at itself, usually"
                       " https://<your REDCap>/api/ (the bridge does not follow redirects: a"
                       " redirect would take the token along, or turn an import into a GET)")
            checks.skip(later, "REDCap does not answer at this address")
            return None
        if isinstance(exc, UntrustedCertificate):
            checks.add("redcap.reachable", Status.FAIL, exc.message,
                       "ask the REDCap administrator which CA signs the server's certificate,"
                       " and set REQUESTS_CA_BUNDLE where the bridge runs (the systemd unit's"
                       " Environment=, the container's environment) as well as for check")
            checks.skip(later, "REDCap not reachable")
            return None
        if not exc.permanent:
            reason = exc.message.removeprefix("cannot reach REDCap: ")
            # The ban is worth a word only when REDCap answered with it; a connection that
            # never opened is about the address and the network.
            hint = "REDCap answered HTTP 429: it has banned this IP address for too many" \
                " requests; ask the REDCap administrator to lift the ban" if exc.status == 429 \
                else f"check redcap.url ({url}) and that this machine can reach it (DNS," \
                " firewall, proxy)"
            checks.add("redcap.reachable", Status.FAIL, f"cannot reach REDCap: {reason}", hint)
            checks.skip(later, "REDCap not reachable")
            return None
        if exc.status != 403:
            checks.add("redcap.reachable", Status.FAIL,
                       f"{url} does not answer like REDCap's API: {exc.message}",
                       "redcap.url must be the API endpoint, https://<your REDCap>/api/")
            checks.skip(later, "not a REDCap API")
            return None
        checks.add("redcap.reachable", Status.OK, f"REDCap answers at {url}")
        if "Export privileges" not in exc.message:
            checks.add("redcap.token", Status.FAIL, f"REDCap refused the token: {exc.message}",
                       "copy the token again from the project's API page in REDCap (a token"
                       " belongs to one user in one project) and check where the config takes it"
                       " from")
            checks.skip(later[1:], "the token was refused")
            return None
        checks.add("redcap.token", Status.OK, "token accepted")
        checks.add("redcap.export", Status.FAIL, f"no export right: {exc.message}",
                   "ask the project owner to give the token's user 'API Export' in User Rights;"
                   " the bridge reads the phone field and the project's structure with it")
        return False
    if not _VERSION.fullmatch(version):
        shown = " ".join(version.split())[:60]
        checks.add("redcap.reachable", Status.FAIL,
                   f"{url} answered, but not with a REDCap version: {shown!r}",
                   "redcap.url must be the API endpoint, https://<your REDCap>/api/")
        checks.skip(later, "not a REDCap API")
        return None
    checks.add("redcap.reachable", Status.OK, f"REDCap {version} answers at {url}",
               version=version)
    checks.add("redcap.token", Status.OK, "token accepted")
    checks.add("redcap.export", Status.OK, "export right (REDCap requires it for any read)")
    return True


def _import_right(checks: _Checks, client: RedcapClient) -> None:
    """The import right, found with an import of no rows: nothing can be written.

    REDCap's API front controller (``API/index.php``) treats a record request carrying
    ``data`` as an import and refuses it with 403 "You do not have API Import/Update
    privileges" before any import code runs. So that answer means the right is missing, and
    any other answer means REDCap let the request past its rights check. What REDCap then
    does with an empty list of rows varies (a count of 0, or a 400 about the data); with no
    rows there is nothing it could create or change either way.
    """
    try:
        client.call("record", action="import", type="flat", overwriteBehavior="normal",
                    returnContent="count", data="[]")
    except RedcapError as exc:
        if exc.status == 403:
            checks.add("redcap.import", Status.FAIL, f"no import right: {exc.message}",
                       "ask the project owner to give the token's user 'API Import/Update' in"
                       " User Rights; without it no opt-out can be written")
        elif exc.permanent:
            checks.add("redcap.import", Status.OK,
                       "import right (REDCap passed its rights check, then refused the empty"
                       f" test import: {exc.message}; nothing was written)")
        else:
            checks.add("redcap.import", Status.WARN,
                       f"import right not verified: the empty test import failed: {exc.message}",
                       "run check again; a persistent failure here usually means REDCap or the"
                       " network is struggling")
        return
    checks.add("redcap.import", Status.OK,
               "import right (an empty test import was accepted; nothing was written)")


# -- fields and events -------------------------------------------------------------------------

def _fields(checks: _Checks, info: ProjectInfo) -> None:
    project = checks.project
    problems = setup_problems(project, info)
    by_aspect: dict[str, list[SetupProblem]] = {}
    for problem in problems:
        by_aspect.setdefault(problem.aspect, []).append(problem)
    source = str(project.source)

    missing = by_aspect.get("field", [])
    for problem in missing:
        name = getattr(project, problem.key)
        close = difflib.get_close_matches(name, list(info.fields), n=1)
        checks.add("redcap.fields", Status.FAIL, problem.message,
                   (f"did you mean {close[0]!r}? " if close else "") + f"fix {problem.key} in"
                   f" {source} (REDCap's variable name, not the label) or add the field in"
                   " REDCap's Online Designer", key=problem.key)
    if not missing:
        named = ", ".join(f"{key} {getattr(project, key)!r}" for key in
                          ("phone_field", "opt_out_field", "opt_out_checkbox")
                          if getattr(project, key))
        checks.add("redcap.fields", Status.OK, f"fields exist: {named}")
    missing_keys = {problem.key for problem in missing}

    if "opt_out_field" in missing_keys:
        checks.skip(["redcap.opt_out_field"], "the field does not exist")
    elif by_aspect.get("opt_out_type"):
        checks.add("redcap.opt_out_field", Status.FAIL, by_aspect["opt_out_type"][0].message,
                   f"make {project.opt_out_field!r} a Text Box with no validation or with"
                   " 'Datetime (Y-M-D H:M)' or 'Datetime w/ seconds' validation, or point"
                   " opt_out_field at such a field")
    else:
        field = info.fields[project.opt_out_field]
        checks.add("redcap.opt_out_field", Status.OK,
                   f"opt_out_field {field.name!r} can hold a date and time"
                   f" ({field.validation or 'text, no validation'})")

    if project.opt_out_checkbox:
        if "opt_out_checkbox" in missing_keys:
            checks.skip(["redcap.checkbox"], "the field does not exist")
        elif by_aspect.get("checkbox"):
            checks.add("redcap.checkbox", Status.FAIL, by_aspect["checkbox"][0].message,
                       f"make {project.opt_out_checkbox!r} a checkbox with a choice coded 1"
                       " (e.g. '1, Opted out of texts'), or remove opt_out_checkbox")
        else:
            checks.add("redcap.checkbox", Status.OK,
                       f"opt_out_checkbox {project.opt_out_checkbox!r} has option 1")

    _events(checks, info, by_aspect.get("events", []), source)


def _events(checks: _Checks, info: ProjectInfo, problems: list[SetupProblem],
            source: str) -> None:
    project = checks.project
    for problem in problems:
        if not info.longitudinal:
            hint = (f"remove phone_event, opt_out_event and opt_out_checkbox_event from {source}:"
                    " the project is classic (or the token belongs to another project)")
        elif getattr(project, problem.key) is None:
            hint = (f"set {problem.key} in {source} to the unique event name (REDCap: Project"
                    " Setup > Define My Events, e.g. baseline_arm_1) whose instruments hold the"
                    " field")
        else:
            hint = ("use an event the field's instrument is designated for (REDCap: Project"
                    " Setup > Designate Instruments for My Events)")
        checks.add("redcap.events", Status.FAIL, problem.message, hint, key=problem.key)
    if problems:
        return
    if info.longitudinal:
        named = ", ".join(f"{key} {getattr(project, key)!r}" for key in
                          ("phone_event", "opt_out_event", "opt_out_checkbox_event")
                          if getattr(project, key))
        checks.add("redcap.events", Status.OK,
                   f"longitudinal project; {named} hold their fields' instruments")
    else:
        checks.add("redcap.events", Status.OK, "classic project; no event keys set")


# -- phone values ------------------------------------------------------------------------------

def _phone_values(checks: _Checks, client: RedcapClient, info: ProjectInfo) -> None:
    project = checks.project
    if project.phone_field not in info.fields:
        checks.skip(["redcap.phone_values"], "phone_field does not exist")
        return
    event_ok = not info.longitudinal or project.phone_event in info.form_events.get(
        info.fields[project.phone_field].form, frozenset())
    if not event_ok:
        checks.skip(["redcap.phone_values"], "phone_event does not fit")
        return
    events = [project.phone_event] if info.longitudinal and project.phone_event else []
    try:
        rows = client.export_records([info.record_id_field, project.phone_field], events=events)
    except RedcapError as exc:
        checks.add("redcap.phone_values", Status.FAIL,
                   f"cannot export the phone field: {exc.message}",
                   "the bridge reads this field to find records; check the token's data export"
                   " rights for that instrument (User Rights > Data Export / Data Viewing)")
        return
    stats = phone_stats(rows, info.record_id_field, project.phone_field, project.default_region)
    summary, status, hint = phone_summary(project, stats)
    checks.add("redcap.phone_values", status, summary, hint, **stats)


def phone_stats(rows: Sequence[dict[str, str]], record_field: str, phone_field: str,
                region: str) -> dict:
    """What the phone field holds, as the phone index will read it."""
    records: set[str] = set()
    with_value: set[str] = set()
    parsed: set[str] = set()
    by_number: dict[str, set[str]] = {}
    unparseable: list[tuple[str, str]] = []
    for row in rows:
        record = row.get(record_field, "")
        if not record:
            continue
        records.add(record)
        raw = (row.get(phone_field) or "").strip()
        if not raw:
            continue
        with_value.add(record)
        number = normalise(raw, region)
        if number is None:
            unparseable.append((record, raw))
            continue
        parsed.add(record)
        by_number.setdefault(number, set()).add(record)
    shared = {number: found for number, found in by_number.items() if len(found) > 1}
    return {
        "records": len(records),
        "field_exported": any(phone_field in row for row in rows),
        "with_value": len(with_value),
        "parsed": len(parsed),
        "unparseable": len(unparseable),
        "numbers": len(by_number),
        "shared_numbers": len(shared),
        "records_sharing": len(set().union(*shared.values())) if shared else 0,
        "examples": [{"record": record, "value": mask_raw(raw)}
                     for record, raw in unparseable[:EXAMPLES]],
    }


def phone_summary(project: ProjectConfig, stats: dict) -> tuple[str, Status, str]:
    field = project.phone_field
    if stats["records"] == 0:
        return f"phone values: no records yet in {field!r}", Status.OK, ""
    parts = [plural(stats["records"], "record"), f"{stats['parsed']} with a number that parses"]
    if stats["records"] > stats["with_value"]:
        parts.append(f"{stats['records'] - stats['with_value']} empty")
    if stats["shared_numbers"]:
        parts.append(f"{plural(stats['shared_numbers'], 'number')} shared by several records"
                     f" ({stats['records_sharing']} records; an opt-out updates them all)")
    if stats["unparseable"]:
        examples = ", ".join(f"record {item['record']}: {item['value']!r}"
                             for item in stats["examples"])
        verb = "is not a phone number" if stats["unparseable"] == 1 else "are not phone numbers"
        parts.append(f"{plural(stats['unparseable'], 'value')} that {verb} (e.g. {examples})")
    summary = f"phone values in {field!r}: " + "; ".join(parts)
    if not stats["field_exported"]:
        return (f"phone values: REDCap exported {plural(stats['records'], 'record')} without"
                f" the field {field!r}"), Status.FAIL, (
            "the token's user may export only de-identified data, or none, from the instrument"
            " holding it (REDCap: User Rights > Data Export Rights); the bridge needs full"
            " export of that field to find records")
    if stats["with_value"] == 0:
        return summary, Status.WARN, (f"no record has a value in {field!r}: is phone_field the"
                                      " field that holds participants' mobile numbers?")
    if stats["unparseable"]:
        return summary, Status.WARN, (
            "an opt-out from these participants cannot be matched until the value is"
            f" corrected in REDCap; numbers without a country code are read as"
            f" {project.default_region} (default_region)")
    return summary, Status.OK, ""


def mask_raw(value: str) -> str:
    """A stored value that is not a phone number, safe to print: its shape, not its digits.

    Every digit but the last two becomes ``*``; letters and punctuation stay, since they are
    usually why the value does not parse ("n/a", "ext", a missing digit).
    """
    line = " ".join(value.split())
    text = line[:24]
    digits = sum(ch.isdigit() for ch in text)
    seen = 0
    out = []
    for ch in text:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > digits - 2 else "*")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(line) > 24 else "")

def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
