"""``python -m bridge check``: verify before going live everything that can be verified.

Each check returns ``CheckResult`` lines (✓ ok, ✗ fail, ! warning, - not run); the run
passes when none failed. Nothing is written anywhere: REDCap gets reads and an import of no
rows, SMTP a login without a message, Twilio only reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from twilio.http import HttpClient

from bridge.budget import BudgetRegistry
from bridge.check.configuration import load_checked
from bridge.check.project import check_project
from bridge.check.report import CheckResult, Report, Status, render_json, render_text
from bridge.check.smtp import check_smtp
from bridge.check.storage import check_storage
from bridge.check.twilio_setup import check_twilio
from bridge.redcap import RedcapClient

__all__ = ["CheckResult", "Report", "Status", "render_json", "render_text", "run_checks"]

# A pre-flight check should not sit for the worker's full request timeout on a dead host.
CHECK_TIMEOUT_SECONDS = 20.0


def run_checks(path: str | Path, *, environ: Mapping[str, str] | None = None,
               twilio: bool = False, twilio_http_client: HttpClient | None = None) -> Report:
    config, results = load_checked(path, environ)
    if config is None:
        results.append(CheckResult("configuration", "config.rest", Status.SKIP,
                                   "REDCap, SMTP and Twilio: not checked until the"
                                   " configuration loads"))
        return Report(str(path), results)
    results.extend(check_storage(config))
    budgets = BudgetRegistry(config.sync.requests_per_minute)
    timeout = min(config.sync.request_timeout_seconds, CHECK_TIMEOUT_SECONDS)
    for project in config.projects:
        client = RedcapClient(project.redcap.url, project.redcap.token,
                              budgets.for_url(project.redcap.url), timeout=timeout)
        try:
            results.extend(check_project(project, client))
        finally:
            client.session.close()
    if config.smtp is not None:
        results.extend(check_smtp(config.smtp, timeout=CHECK_TIMEOUT_SECONDS))
    if twilio:
        results.extend(check_twilio(config, twilio_http_client))
    return Report(str(config.path), results)
