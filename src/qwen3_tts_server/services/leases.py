"""Instance leases: which server processes are alive, so their work is never settled by mistake.

Every server process registers an `instances` row at start (`register`) and renews its
heartbeat every LEASE_S / 6 seconds (`renew`). The open streams and reservations it makes name
it (`instance_id`). A process whose heartbeat is older than LEASE_S is dead (kill -9, a lost
host, a frozen VM): any live process finds it (`lapsed`), settles what it owned (services/
system.py: open rows INTERRUPTED, holds released) and then deletes its row (`forget`). A live
replica's work is never touched, however long its streams run, and a dead one's is settled
within LEASE_S plus one heartbeat, instead of a blind grace period.

A live process whose row was forgotten (its database unreachable for longer than the lease)
writes it again at its next heartbeat; whatever was settled meanwhile stays settled, and its
late settles only add their charges (services/quota.py `settle`).

Times are the servers' clocks: replicas on several hosts need them in step (NTP) to well
within LEASE_S.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.db.models import Instance, utcnow
from qwen3_tts_server.db.session import transaction

#: Heartbeats per lease: a process misses five in a row before it counts as dead.
BEATS_PER_LEASE = 6


def new_instance_id() -> str:
    """A fresh id for this process: never reused, so a restarted server is a new instance."""
    return uuid.uuid4().hex


class Lease:
    """This process's instance row, and the view of everyone else's."""

    def __init__(
        self, sessions: sessionmaker[Session], instance_id: str, duration: timedelta
    ) -> None:
        self._sessions = sessions
        self.instance_id = instance_id
        self.duration = duration

    @property
    def heartbeat_s(self) -> float:
        return self.duration.total_seconds() / BEATS_PER_LEASE

    def register(self) -> None:
        """Insert this process's row (or refresh it if it is there already)."""
        self.renew()

    def renew(self) -> None:
        """Move the heartbeat to now; write the row again if another process forgot it."""
        now = utcnow()
        with transaction(self._sessions) as session:
            renewed = session.execute(
                update(Instance)
                .where(Instance.id == self.instance_id)
                .values(heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
            if int(renewed.rowcount) == 0:  # type: ignore[attr-defined]
                session.add(
                    Instance(
                        id=self.instance_id,
                        host=socket.gethostname()[:255],
                        pid=os.getpid(),
                        started_at=now,
                        heartbeat_at=now,
                    )
                )

    def lapsed(self) -> list[str]:
        """The other instances whose heartbeat is older than the lease: dead processes."""
        cutoff = utcnow() - self.duration
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(Instance.id).where(
                        Instance.heartbeat_at < cutoff, Instance.id != self.instance_id
                    )
                )
            )

    def forget(self, instance_ids: list[str]) -> None:
        """Delete the rows of lapsed instances whose work has been settled (one that renewed
        meanwhile keeps its row)."""
        if not instance_ids:
            return
        cutoff = utcnow() - self.duration
        with transaction(self._sessions) as session:
            session.execute(
                delete(Instance)
                .where(Instance.id.in_(instance_ids), Instance.heartbeat_at < cutoff)
                .execution_options(synchronize_session=False)
            )

    def end(self) -> None:
        """Delete this process's row at a clean stop (its work is settled by then)."""
        with transaction(self._sessions) as session:
            session.execute(
                delete(Instance)
                .where(Instance.id == self.instance_id)
                .execution_options(synchronize_session=False)
            )
