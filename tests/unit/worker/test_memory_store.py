"""MemoryStore's bounds and expiry, and `acquire`'s waiting, with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from rabbitflow.errors import ConfigError, LeaseBusy
from rabbitflow.worker.idempotency import Claim, IdempotencyStore, MemoryStore, acquire


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_is_an_idempotency_store() -> None:
    assert isinstance(MemoryStore(), IdempotencyStore)


async def test_claim_complete_then_done(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    assert await store.claim("a", 10) is Claim.NEW
    assert await store.claim("a", 10) is Claim.BUSY
    assert await store.complete("a") is True
    assert await store.claim("a", 10) is Claim.DONE


async def test_release_lets_a_retry_claim_again(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    await store.claim("a", 10)
    await store.release("a")
    assert await store.claim("a", 10) is Claim.NEW


async def test_release_leaves_a_completed_key_alone(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    await store.claim("a", 10)
    await store.complete("a")
    await store.release("a")
    assert await store.claim("a", 10) is Claim.DONE


async def test_an_expired_lease_can_be_claimed_again(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    await store.claim("a", 10)
    clock.now += 9.9
    assert await store.claim("a", 10) is Claim.BUSY
    clock.now += 0.1
    assert await store.claim("a", 10) is Claim.NEW


async def test_completing_after_the_lease_expired_reports_it(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    await store.claim("a", 1)
    clock.now += 2
    assert await store.complete("a") is False
    assert await store.claim("a", 1) is Claim.DONE, "recorded anyway: the effect happened"


async def test_completed_keys_are_forgotten_after_the_retention(clock: FakeClock) -> None:
    store = MemoryStore(retention="1h", clock=clock)
    await store.claim("a", 10)
    await store.complete("a")
    clock.now += 3599
    assert await store.claim("a", 10) is Claim.DONE
    clock.now += 1
    assert await store.claim("a", 10) is Claim.NEW


async def test_keeps_at_most_max_size_entries_evicting_the_least_recently_used(
    clock: FakeClock,
) -> None:
    store = MemoryStore(max_size=3, clock=clock)
    for key in "abc":
        await store.claim(key, 10)
        await store.complete(key)
    assert await store.claim("a", 10) is Claim.DONE  # touches a: b is now the oldest
    await store.claim("d", 10)
    assert len(store) == 3
    assert await store.claim("b", 10) is Claim.NEW, "b was evicted"
    assert await store.claim("a", 10) is Claim.DONE


async def test_prefix_separates_namespaces_only_in_name(clock: FakeClock) -> None:
    store = MemoryStore(prefix="svc-a:", clock=clock)
    await store.claim("k", 10)
    assert "svc-a:k" in store._entries


@pytest.mark.parametrize("max_size", [0, -1, True])
def test_max_size_must_be_positive(max_size: int) -> None:
    with pytest.raises(ConfigError, match="max_size"):
        MemoryStore(max_size)


async def test_acquire_returns_true_for_a_new_key_and_false_for_a_done_one() -> None:
    store = MemoryStore()
    assert await acquire(store, "a") is True
    await store.complete("a")
    assert await acquire(store, "a") is False


async def test_acquire_waits_out_a_busy_key_that_completes() -> None:
    store = MemoryStore()
    await store.claim("a", 30)

    async def finish_later() -> None:
        await asyncio.sleep(0.03)
        await store.complete("a")

    task = asyncio.create_task(finish_later())
    assert await acquire(store, "a", poll_interval=0.005, max_wait=2) is False
    await task


async def test_acquire_takes_over_a_busy_key_that_is_released() -> None:
    store = MemoryStore()
    await store.claim("a", 30)
    asyncio.get_running_loop().call_later(0.02, lambda: asyncio.ensure_future(store.release("a")))
    assert await acquire(store, "a", poll_interval=0.005, max_wait=2) is True


async def test_acquire_gives_up_on_a_key_busy_too_long() -> None:
    store = MemoryStore()
    await store.claim("a", 30)
    with pytest.raises(LeaseBusy, match="still being processed"):
        await acquire(store, "a", poll_interval=0.005, max_wait=0.03)
