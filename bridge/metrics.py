"""Prometheus metrics, defined once for the process (prometheus_client's default registry).

Gauges that describe the store (queue depth, oldest pending age, jobs by state) are computed
when scraped, from the store itself, so they are right after a restart too.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOKS = Counter(
    "bridge_webhooks_total", "Inbound Twilio requests by endpoint and outcome",
    ["endpoint", "outcome"],
)
REDCAP_REQUESTS = Counter(
    "bridge_redcap_requests_total", "REDCap API requests by content and result",
    ["content", "result"],
)
REDCAP_LATENCY = Histogram(
    "bridge_redcap_request_seconds", "REDCap API request latency", ["content"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOB_OUTCOMES = Counter(
    "bridge_job_outcomes_total", "Jobs finished by project and outcome", ["project", "outcome"],
)
EMAILS = Counter("bridge_emails_total", "Notification emails by result", ["result"])
FORWARDS = Counter("bridge_forwards_total", "Forwards to REDCap's survey endpoint by result",
                   ["result"])
