"""Phone index: normalised number -> the records whose phone field holds it, per project.

Looking numbers up in REDCap per message costs an export per event; a blast of thousands of
STOPs would need thousands of exports and get the bridge banned. The index is built from one
export of the record ID and phone field, kept in memory and in the store (so a restart needs
no full export), and refreshed incrementally with ``dateRangeBegin``. ``filterLogic`` is never
used: it has no escaping, so it must not be built from received data.

Only record IDs are kept: the opt-out field is written in ``opt_out_event``, whichever event or
repeat instance the phone number was found in.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.config import ProjectConfig
from bridge.cooperative import yielding
from bridge.phones import to_e164
from bridge.redcap import ProjectInfo, RedcapClient
from bridge.store import Store, iso, utcnow

logger = logging.getLogger(__name__)

# dateRangeBegin is read in the REDCap server's clock and zone, which the bridge cannot see;
# reading back this far before the last refresh absorbs clock skew and slow saves.
REFRESH_OVERLAP = timedelta(minutes=10)


def source_of(project: ProjectConfig) -> str:
    """What an index of ``project`` is read from, as saved beside it.

    An index saved from another phone field, event or region, or from another REDCap project
    (a project entry pointed from a test project to the live one, say), would answer with the
    wrong records: they would get the opt-outs, and the right ones would not. Refreshing it
    would not help, since an incremental refresh reads only records changed since. So such an
    index is read afresh. The token appears only as a digest (a new token for the same project
    costs one export); the store keeps no secret.
    """
    return json.dumps({
        "url": project.redcap.url,
        "token_sha256": hashlib.sha256(project.redcap.token.encode()).hexdigest()[:16],
        "phone_field": project.phone_field, "phone_event": project.phone_event,
        "region": project.default_region,
    }, sort_keys=True)


class PhoneIndex:
    def __init__(self, project: ProjectConfig, store: Store) -> None:
        self.project = project
        self.store = store
        self.source = source_of(project)
        self._by_phone: dict[str, tuple[str, ...]] = {}
        self._by_record: dict[str, tuple[str, ...]] = {}
        self.refreshed_at: datetime | None = None
        self.full_refreshed_at: datetime | None = None
        self.loaded = False

    def __len__(self) -> int:
        return len(self._by_record)

    def lookup(self, phone: str) -> tuple[str, ...]:
        return self._by_phone.get(phone, ())

    def load(self) -> None:
        """Load the last persisted index (cheap; no REDCap call), unless it was read from
        something else than the project as now configured: then it is built anew."""
        saved = self.store.index_source(self.project.name)
        if saved != self.source:  # None: never built, or built by a release before this one
            if saved is not None:
                logger.info("phone index %s: saved from another REDCap project, phone field,"
                            " event or region than now configured; reading it afresh",
                            self.project.name)
            self._replace_all({})
            self.refreshed_at = self.full_refreshed_at = None
            self.loaded = True
            return
        pairs, refreshed, full = self.store.load_index(self.project.name)
        by_record: dict[str, tuple[str, ...]] = {}
        for record, phone in pairs:
            by_record[record] = (*by_record.get(record, ()), phone)
        self._replace_all(by_record)
        self.refreshed_at = datetime.fromisoformat(refreshed) if refreshed else None
        self.full_refreshed_at = datetime.fromisoformat(full) if full else None
        self.loaded = True

    def refresh(self, client: RedcapClient, info: ProjectInfo, *, full: bool) -> int:
        """Export the ID and phone field (everything, or what changed) and update the index.

        Returns the number of records read. The refresh time is taken before the export, so
        a record saved during the export is read again next time rather than missed. Rows
        are decoded one at a time and only the index itself is built: a full refresh of a
        100,000-record project costs one export and about the index's own size in memory.
        """
        started = utcnow()
        since = None
        if not full and self.refreshed_at is not None:
            local = (self.refreshed_at - REFRESH_OVERLAP).astimezone(
                ZoneInfo(self.project.timezone))
            since = local.strftime("%Y-%m-%d %H:%M:%S")
        events = [self.project.phone_event] if info.longitudinal and self.project.phone_event \
            else []
        id_field, phone_field = info.record_id_field, self.project.phone_field
        region = self.project.default_region
        found: dict[str, tuple[str, ...]] = {}  # record -> its numbers (none: no usable one)
        for row in yielding(client.iter_records([id_field, phone_field], events=events,
                                                date_range_begin=since)):
            record = row.get(id_field, "")
            if not record:
                continue
            numbers = found.get(record, ())
            number = to_e164(row.get(phone_field), region)
            found[record] = (*numbers, number) if number and number not in numbers else numbers
        if full or self.refreshed_at is None:
            self._replace_all({record: numbers for record, numbers in found.items() if numbers})
            self.full_refreshed_at = started
        else:
            self._replace_records(found)
        self.refreshed_at = started
        pairs = ((record, phone) for record, numbers in found.items() for phone in numbers)
        self.store.save_index(self.project.name, pairs, iso(started), full=since is None,
                              records=found.keys(), source=self.source)
        logger.info("phone index %s: %s refresh read %d records; %d records, %d numbers",
                    self.project.name, "incremental" if since else "full", len(found),
                    len(self._by_record), len(self._by_phone))
        return len(found)

    def _replace_all(self, by_record: dict[str, tuple[str, ...]]) -> None:
        by_phone: dict[str, tuple[str, ...]] = {}
        for record, phones in by_record.items():
            for phone in phones:
                by_phone[phone] = (*by_phone.get(phone, ()), record)
        for phone, records in by_phone.items():
            if len(records) > 1:
                by_phone[phone] = tuple(sorted(records, key=_record_order))
        self._by_record = by_record
        self._by_phone = by_phone

    def _replace_records(self, phones: dict[str, tuple[str, ...]]) -> None:
        for record, numbers in phones.items():
            old = self._by_record.get(record, ())
            for phone in old:
                remaining = tuple(r for r in self._by_phone.get(phone, ()) if r != record)
                if remaining:
                    self._by_phone[phone] = remaining
                else:
                    self._by_phone.pop(phone, None)
            if numbers:
                self._by_record[record] = numbers
            else:
                self._by_record.pop(record, None)
            for phone in numbers:
                self._by_phone[phone] = tuple(sorted({*self._by_phone.get(phone, ()), record},
                                                     key=_record_order))


def _record_order(record: str) -> tuple[int, int | str]:
    """Numeric record IDs in numeric order, others after them alphabetically."""
    return (0, int(record)) if record.isdigit() else (1, record)
