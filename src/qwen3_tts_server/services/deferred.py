"""Settlements a call could not write when it ended, retried until they are.

A call that fails settles its reservation (and its row) on the way out; if the database is
away at that moment, the write fails and the hold would stay, and with leases (services/
leases.py) a live process's holds are never released by anyone else. So the failed settlement
is kept here, and the lease thread retries it at every heartbeat (services/system.py) until
the database takes it; a process that dies first leaves it to the lease of whoever lives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class DeferredSettlements:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, settle: Callable[[], object]) -> None:
        """Keep `settle` (one transaction, safe to run again) to retry; `what` names it."""
        with self._lock:
            self._pending.append((what, settle))

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def retry(self) -> int:
        """Run every pending settlement once; keep those that fail. Returns how many ran."""
        with self._lock:
            pending, self._pending = self._pending, []
        done = 0
        for what, settle in pending:
            try:
                settle()
            except Exception as error:  # still away: the next heartbeat tries again
                log.warning("could not settle %s yet: %r", what, error)
                with self._lock:
                    self._pending.append((what, settle))
            else:
                done += 1
                log.info("settled %s after an earlier failure", what)
        return done
