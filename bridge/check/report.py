"""Check results and the report an operator reads: one line per check, with what to do."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field


class Status(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    WARN = "warn"  # worth a look, or could not be verified; does not fail the run
    SKIP = "skip"  # not run because an earlier check it needs failed

    @property
    def mark(self) -> str:
        return {"ok": "✓", "fail": "✗", "warn": "!", "skip": "-"}[self.value]


@dataclass(frozen=True)
class CheckResult:
    section: str  # "configuration", "project heart-study", "smtp", "twilio"
    name: str  # a stable identifier for scripts: "redcap.token", "smtp.login", ...
    status: Status
    summary: str
    hint: str = ""  # what to do about a failure or warning
    details: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"section": self.section, "name": self.name, "status": self.status.value,
                "summary": self.summary, "hint": self.hint, "details": self.details}


@dataclass(frozen=True)
class Report:
    config: str
    results: Sequence[CheckResult]

    @property
    def ok(self) -> bool:
        """True when nothing failed: warnings and skipped checks alone do not fail a run."""
        return not any(result.status is Status.FAIL for result in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status is status)


def render_text(report: Report) -> str:
    lines = [f"bridge check: {report.config}"]
    section = None
    for result in report.results:
        if result.section != section:
            section = result.section
            lines.append("")
            lines.append(section)
        lines.append(f"  {result.status.mark} {result.summary}")
        if result.hint and result.status in (Status.FAIL, Status.WARN):
            lines.append(f"      → {result.hint}")
    checked = len(report.results) - report.count(Status.SKIP)
    failed, warned = report.count(Status.FAIL), report.count(Status.WARN)
    lines.append("")
    verdict = "All checks passed" if report.ok else f"{failed} of {checked} checks failed"
    extras = [f"{warned} warning{'s' if warned != 1 else ''}"] if warned else []
    skipped = report.count(Status.SKIP)
    if skipped:
        extras.append(f"{skipped} not run")
    lines.append(verdict + (f" ({', '.join(extras)})" if extras else "") + ".")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    return json.dumps({
        "config": report.config,
        "ok": report.ok,
        "counts": {status.value: report.count(status) for status in Status},
        "checks": [result.as_dict() for result in report.results],
    }, indent=2) + "\n"
