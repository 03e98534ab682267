"""Prometheus metrics, defined once for the process (prometheus_client's default registry).

Gauges that describe the store (queue depth, oldest pending age, jobs by state) are computed
when scraped, from the store itself, so they are right after a restart too.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from bridge.store import StoreError, utcnow

logger = logging.getLogger(__name__)

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
REDCAP_BUDGET_WAIT = Counter(
    "bridge_redcap_budget_wait_seconds_total",
    "Seconds REDCap requests waited for the request budget, by REDCap host", ["host"],
)
JOB_OUTCOMES = Counter(
    "bridge_job_outcomes_total", "Jobs finished by project and outcome", ["project", "outcome"],
)
EMAILS = Counter("bridge_emails_total", "Notification emails by result", ["result"])
FORWARDS = Counter("bridge_forwards_total", "Forwards to REDCap's survey endpoint by result",
                   ["result"])

# Series an alert rule watches should exist from the start, at 0, not appear on first failure.
for _result in ("sent", "failed"):
    EMAILS.labels(result=_result)

QueueState = tuple[dict[str, dict[str, int]], dict[str, str]]


class StoreCollector:
    """Gauges read from the store at scrape time: jobs by state, queue depth, oldest age.

    ``read`` returns jobs per project and status and each project's oldest open job (see
    ``bridge.history.queue_state``). Every configured project gets every state, at 0 when
    empty, so a rate or threshold alert never meets a missing series.
    """

    def __init__(self, read: Callable[[], QueueState], projects: list[str],
                 states: tuple[str, ...], open_states: tuple[str, ...],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.read = read
        self.projects = projects
        self.states = states
        self.open_states = open_states
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bridge_store_up", "1 when the store could be read for this scrape")
        try:
            jobs, oldest = self.read()
        except (StoreError, sqlite3.Error) as exc:
            logger.warning("metrics: cannot read the store: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self.clock()
        by_state = GaugeMetricFamily("bridge_jobs", "Jobs in the store by project and state",
                                     labels=["project", "state"])
        depth = GaugeMetricFamily("bridge_queue_depth",
                                  "Jobs waiting for or being written to REDCap", labels=["project"])
        age = GaugeMetricFamily("bridge_oldest_pending_age_seconds",
                                "Age of the oldest job waiting for REDCap (0 when none)",
                                labels=["project"])
        for project in [*self.projects, *sorted(set(jobs) - set(self.projects))]:
            counts = jobs.get(project, {})
            for state in self.states:
                by_state.add_metric([project, state], counts.get(state, 0))
            depth.add_metric([project], sum(counts.get(state, 0) for state in self.open_states))
            since = oldest.get(project)
            age.add_metric([project], 0 if since is None else
                           max(0.0, (now - datetime.fromisoformat(since)).total_seconds()))
        yield by_state
        yield depth
        yield age


def exposition(store_registry: CollectorRegistry) -> bytes:
    """The process-wide metrics followed by the store gauges, in Prometheus text format.

    The store gauges live in their own registry per app, so building several apps in one
    process (tests) never registers the same metric twice in the default registry.
    """
    return generate_latest() + generate_latest(store_registry)
