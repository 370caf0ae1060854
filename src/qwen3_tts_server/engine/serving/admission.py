"""Fair admission: per-user queues served round-robin into the engine's slots, with bounds.

Why per user: one queue in arrival order lets whoever sends most take every slot and every
queue place; a user who sends 90 requests at once then shuts out everyone else. Here:

* Each user's jobs wait in their own queue. A free slot goes to the next user in a ring that
  has waiting chunks (the user then moves to the back of the ring), so k users with work each
  get every k-th free slot, whatever each one sent; within a user, its jobs take turns too, so
  a user's own stream is not stuck behind that user's large batch.
* A user may hold at most `user_slots` slots (default: all of them) and at most `user_jobs`
  unfinished jobs; the next job is refused at once (QueueFull → 429 + Retry-After) while other
  users' jobs are still taken, up to the total bound `max_jobs`.
* `reserve` extra slots exist only for users who hold none: a short request from a new user
  starts at the next step even while one user's large batch fills every ordinary slot, instead
  of waiting for one of its chunks to end. A lone user still gets all ordinary slots.

Pure bookkeeping, no locking and no threads: the scheduler calls it under its lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, Protocol, TypeVar


class QueuedJob(Protocol):
    """What admission needs to know about a job."""

    @property
    def user(self) -> Hashable: ...

    def waiting(self) -> bool:
        """Has chunks that have not been admitted yet."""
        ...


J = TypeVar("J", bound=QueuedJob)


class Refused(Exception):
    """The job was not queued; `reason` says which bound it hit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FairQueue(Generic[J]):
    def __init__(
        self, *, slots: int, reserve: int, user_slots: int, max_jobs: int, user_jobs: int
    ) -> None:
        if min(slots, user_slots, max_jobs, user_jobs) < 1 or reserve < 0:
            raise ValueError("slots and job bounds must be >= 1 and reserve >= 0")
        self.slots = slots
        self.reserve = reserve
        self.user_slots = min(user_slots, slots)
        self.max_jobs = max_jobs
        self.user_jobs = user_jobs
        self._jobs: dict[Hashable, deque[J]] = {}
        self._ring: deque[Hashable] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[J]:
        for jobs in self._jobs.values():
            yield from jobs

    def jobs_of(self, user: Hashable) -> int:
        return len(self._jobs.get(user, ()))

    def add(self, job: J) -> None:
        """Queue an unfinished job, or raise Refused when a bound is reached."""
        if self.jobs_of(job.user) >= self.user_jobs:
            raise Refused("user")
        if self._count >= self.max_jobs:
            raise Refused("total")
        self._jobs.setdefault(job.user, deque()).append(job)
        self._count += 1
        if job.user not in self._ring:
            self._ring.append(job.user)

    def remove(self, job: J) -> None:
        """Forget a finished, failed or withdrawn job (no-op if not queued)."""
        jobs = self._jobs.get(job.user)
        if jobs is None or job not in jobs:
            return
        jobs.remove(job)
        self._count -= 1
        if not jobs:
            del self._jobs[job.user]
            if job.user in self._ring:
                self._ring.remove(job.user)

    def pick(self, held: dict[Hashable, int]) -> J | None:
        """The job whose next chunk gets a slot now, or None when nobody may start one.

        `held`: slots each user holds now. Below `slots` in total, users under `user_slots` may
        start chunks; in the `reserve` above it, only users who hold no slot.
        """
        total = sum(held.values())
        if total >= self.slots + self.reserve:
            return None
        for _ in range(len(self._ring)):
            user = self._ring[0]
            self._ring.rotate(-1)
            mine = held.get(user, 0)
            allowed = mine < self.user_slots if total < self.slots else mine == 0
            if not allowed:
                continue
            jobs = self._jobs.get(user, deque())
            for _ in range(len(jobs)):
                job = jobs[0]
                jobs.rotate(-1)  # this user's next pick starts at its next job
                if job.waiting():
                    return job  # (the ring already moved this user to the back)
        return None
