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

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.config import ProjectConfig
from bridge.phones import normalise
from bridge.redcap import ProjectInfo, RedcapClient
from bridge.store import Store, iso, utcnow

logger = logging.getLogger(__name__)

# dateRangeBegin is read in the REDCap server's clock and zone, which the bridge cannot see;
# reading back this far before the last refresh absorbs clock skew and slow saves.
REFRESH_OVERLAP = timedelta(minutes=10)


class PhoneIndex:
    def __init__(self, project: ProjectConfig, store: Store) -> None:
        self.project = project
        self.store = store
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
        """Load the last persisted index (cheap; no REDCap call)."""
        pairs, refreshed, full = self.store.load_index(self.project.name)
        self._replace_all(pairs)
        self.refreshed_at = datetime.fromisoformat(refreshed) if refreshed else None
        self.full_refreshed_at = datetime.fromisoformat(full) if full else None
        self.loaded = True

    def refresh(self, client: RedcapClient, info: ProjectInfo, *, full: bool) -> int:
        """Export the ID and phone field (everything, or what changed) and update the index.

        Returns the number of records read. The refresh time is taken before the export, so
        a record saved during the export is read again next time rather than missed.
        """
        started = utcnow()
        since = None
        if not full and self.refreshed_at is not None:
            local = (self.refreshed_at - REFRESH_OVERLAP).astimezone(
                ZoneInfo(self.project.timezone))
            since = local.strftime("%Y-%m-%d %H:%M:%S")
        events = [self.project.phone_event] if info.longitudinal and self.project.phone_event \
            else []
        rows = client.export_records([info.record_id_field, self.project.phone_field],
                                     events=events, date_range_begin=since)
        phones: dict[str, set[str]] = {}
        for row in rows:
            record = row.get(info.record_id_field, "")
            if not record:
                continue
            found = phones.setdefault(record, set())
            number = normalise(row.get(self.project.phone_field), self.project.default_region)
            if number:
                found.add(number)
        pairs = [(record, phone) for record, numbers in phones.items() for phone in numbers]
        if full or self.refreshed_at is None:
            self._replace_all(pairs)
            self.full_refreshed_at = started
        else:
            self._replace_records(phones)
        self.refreshed_at = started
        self.store.save_index(self.project.name, pairs, iso(started), full=since is None,
                              records=phones.keys())
        logger.info("phone index %s: %s refresh read %d records; %d records, %d numbers",
                    self.project.name, "incremental" if since else "full", len(phones),
                    len(self._by_record), len(self._by_phone))
        return len(phones)

    def _replace_all(self, pairs: Iterable[tuple[str, str]]) -> None:
        by_record: dict[str, list[str]] = {}
        by_phone: dict[str, list[str]] = {}
        for record, phone in pairs:
            by_record.setdefault(record, []).append(phone)
            by_phone.setdefault(phone, []).append(record)
        self._by_record = {record: tuple(phones) for record, phones in by_record.items()}
        self._by_phone = {phone: tuple(sorted(records, key=_record_order))
                          for phone, records in by_phone.items()}

    def _replace_records(self, phones: dict[str, set[str]]) -> None:
        touched: set[str] = set()
        for record, numbers in phones.items():
            old = self._by_record.get(record, ())
            touched.update(old)
            touched.update(numbers)
            for phone in old:
                remaining = tuple(r for r in self._by_phone.get(phone, ()) if r != record)
                if remaining:
                    self._by_phone[phone] = remaining
                else:
                    self._by_phone.pop(phone, None)
            if numbers:
                self._by_record[record] = tuple(numbers)
            else:
                self._by_record.pop(record, None)
            for phone in numbers:
                self._by_phone[phone] = tuple(sorted({*self._by_phone.get(phone, ()), record},
                                                     key=_record_order))


def _record_order(record: str) -> tuple[int, int | str]:
    """Numeric record IDs in numeric order, others after them alphabetically."""
    return (0, int(record)) if record.isdigit() else (1, record)
