"""Let webhooks in while the worker computes: it hands over the GIL every few dozen items.

The worker shares the process, and so CPython's GIL, with the webhook handlers. When it runs
Python for tens of milliseconds at a stretch (recording and logging 500 outcomes, building a
100,000-record phone index), a handler that wants the GIL gets it only when the interpreter
forces a switch, after ``sys.getswitchinterval()`` (5 ms), and a webhook needs the GIL several
times before it is answered: the answers that arrive during such a stretch wait tens of
milliseconds (bench/README.md, "the paced tail is the worker"). A shorter switch interval for
the whole process cut that tail but cost a sixth of the intake rate (measured); yielding from
the worker's own loops costs the worker a system call, and the webhooks nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# Items between yields: the worker's loops spend 20-50 µs of CPU an item, so about a
# millisecond at a stretch.
EVERY = 32


def yielding(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, with the GIL offered to any waiting thread after every ``every`` of them.

    ``time.sleep(0)`` releases the GIL, so a thread waiting for it runs first; with none
    waiting it returns at once. Never use it inside a store transaction: the webhooks would
    then wait for the write lock instead.
    """
    for index, item in enumerate(items, 1):
        yield item
        if index % every == 0:
            time.sleep(0)
