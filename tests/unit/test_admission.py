"""Fair admission bookkeeping: round-robin per user, per-user bounds, reserve slots."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from qwen3_tts_server.engine.serving.admission import FairQueue, Refused


@dataclass(eq=False)
class FakeJob:
    user: Hashable
    chunks: int = 1

    def waiting(self) -> bool:
        return self.chunks > 0


def queue(**overrides: int) -> FairQueue[FakeJob]:
    options = {"slots": 4, "reserve": 1, "user_slots": 4, "max_jobs": 10, "user_jobs": 3}
    return FairQueue(**(options | overrides))


def take(fair: FairQueue[FakeJob], held: dict[Hashable, int]) -> Hashable | None:
    """Admit one chunk the way the loop does; returns whose it was."""
    job = fair.pick(held)
    if job is None:
        return None
    job.chunks -= 1
    held[job.user] = held.get(job.user, 0) + 1
    return job.user


def test_free_slots_go_round_robin_whatever_each_user_sent() -> None:
    fair = queue(slots=6, reserve=0)
    fair.add(FakeJob("flood", chunks=50))
    fair.add(FakeJob("a", chunks=2))
    fair.add(FakeJob("b", chunks=1))
    held: dict[Hashable, int] = {}
    order = [take(fair, held) for _ in range(6)]
    assert order == ["flood", "a", "b", "flood", "a", "flood"]
    assert take(fair, held) is None  # every slot taken


def test_one_users_jobs_take_turns() -> None:
    fair = queue(slots=6, reserve=0)
    batch, stream = FakeJob("u", chunks=10), FakeJob("u", chunks=10)
    fair.add(batch)
    fair.add(stream)
    picked = []
    for _ in range(4):
        job = fair.pick({})
        assert job is not None
        job.chunks -= 1
        picked.append(job)
    assert picked == [batch, stream, batch, stream]


def test_a_flooding_user_is_refused_while_others_are_queued() -> None:
    fair = queue()
    for _ in range(3):
        fair.add(FakeJob("flood"))
    with pytest.raises(Refused) as refused:
        fair.add(FakeJob("flood"))
    assert refused.value.reason == "user"
    fair.add(FakeJob("other"))
    assert fair.jobs_of("other") == 1 and len(fair) == 4


def test_the_total_bound_holds_for_everyone() -> None:
    fair = queue(max_jobs=2)
    fair.add(FakeJob("a"))
    fair.add(FakeJob("b"))
    with pytest.raises(Refused) as refused:
        fair.add(FakeJob("c"))
    assert refused.value.reason == "total"


def test_reserve_slots_only_for_users_holding_none() -> None:
    fair = queue(slots=2, reserve=1)
    fair.add(FakeJob("batch", chunks=10))
    held: dict[Hashable, int] = {}
    assert [take(fair, held), take(fair, held)] == ["batch", "batch"]
    assert take(fair, held) is None  # ordinary slots full; the reserve is not for "batch"
    fair.add(FakeJob("short"))
    assert take(fair, held) == "short"
    fair.add(FakeJob("third"))
    assert take(fair, held) is None  # reserve used up


def test_a_user_below_its_share_does_not_take_a_reserve_slot() -> None:
    fair = queue(slots=2, reserve=1)
    fair.add(FakeJob("a", chunks=5))
    fair.add(FakeJob("b", chunks=5))
    held: dict[Hashable, int] = {}
    assert [take(fair, held), take(fair, held)] == ["a", "b"]
    assert take(fair, held) is None  # both hold a slot: the reserve waits for a newcomer
    fair.add(FakeJob("c"))
    assert take(fair, held) == "c"


def test_user_slot_share() -> None:
    fair = queue(slots=4, reserve=0, user_slots=2)
    fair.add(FakeJob("a", chunks=5))
    held: dict[Hashable, int] = {}
    assert [take(fair, held), take(fair, held), take(fair, held)] == ["a", "a", None]


def test_finished_jobs_leave_and_withdrawn_ones_are_forgotten() -> None:
    fair = queue()
    job = FakeJob("a")
    fair.add(job)
    fair.remove(job)
    fair.remove(job)  # idempotent
    assert len(fair) == 0 and fair.jobs_of("a") == 0
    assert fair.pick({}) is None


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="bounds"):
        queue(slots=0)
