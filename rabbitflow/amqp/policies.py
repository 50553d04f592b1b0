"""Apply a topology's ``policies:`` through the management API (``declare`` and workers).

AMQP 0-9-1 cannot set policies: they are runtime parameters, set with
``PUT /api/policies/{vhost}/{name}``. A policy already there with the same pattern,
apply-to, priority and definition is left alone (``exists``); a differing one is replaced
(``updated``) — unlike a queue's arguments, a policy changes in place and the broker
re-applies it to the matching objects at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rabbitflow.amqp.management import JsonObject
from rabbitflow.amqp.plan import compare_policies
from rabbitflow.errors import DeclareFailed, ManagementError, ManagementUnavailable
from rabbitflow.topology.policies import NEEDS_3_12, PolicyDecl, policies_from_definitions


class PolicyApi(Protocol):
    """The part of the management API policies need (a fake implements it in unit tests)."""

    async def overview(self) -> JsonObject: ...

    async def policies(self, vhost: str) -> list[JsonObject]: ...

    async def put_policy(self, vhost: str, name: str, document: JsonObject) -> None: ...


@dataclass(frozen=True)
class PolicyResult:
    """What applying one policy did: ``created``, ``updated`` or ``exists``."""

    name: str
    status: str

    def __str__(self) -> str:
        return f"{self.status:<8} {'policy':<8} {self.name}"


async def apply_policies(
    api: PolicyApi, vhost: str, policies: Sequence[PolicyDecl]
) -> list[PolicyResult]:
    """Create or update each policy in ``vhost``; report what each needed.

    Raises:
        DeclareFailed: a policy needs a newer RabbitMQ (``apply_to: quorum_queues`` and
            the like on 3.10/3.11), the management API is off, or the broker refused one
            (its reason included).
    """
    if not policies:
        return []
    try:
        return await _apply(api, vhost, policies)
    except ManagementUnavailable as exc:
        raise DeclareFailed(
            f"the topology has {len(policies)} polic{'y' if len(policies) == 1 else 'ies'}, "
            f"set through the management API: {exc}"
        ) from None


async def _apply(api: PolicyApi, vhost: str, policies: Sequence[PolicyDecl]) -> list[PolicyResult]:
    newer = [p for p in policies if p.apply_to in NEEDS_3_12]
    if newer:
        version = str((await api.overview()).get("rabbitmq_version", ""))
        if _older_than(version, (3, 12)):
            p = newer[0]
            raise DeclareFailed(
                f"policy {p.name!r}: apply_to {p.apply_to} needs RabbitMQ 3.12 or newer "
                f"(this broker is {version}); use apply_to: queues with a pattern that "
                "matches only those queues"
            )
    live = policies_from_definitions(await api.policies(vhost))
    changed = {c.name for c in compare_policies(policies, live) if c.action.value != "extra"}
    existing = {p.name for p in live}
    results: list[PolicyResult] = []
    for p in policies:
        if repr(p.name) not in changed:
            results.append(PolicyResult(p.name, "exists"))
            continue
        try:
            await api.put_policy(vhost, p.name, p.document())
        except ManagementUnavailable:
            raise
        except ManagementError as exc:
            raise DeclareFailed(f"vhost {vhost!r}: cannot set policy {p.name!r}: {exc}") from None
        results.append(PolicyResult(p.name, "updated" if p.name in existing else "created"))
    return results


def _older_than(version: str, minimum: tuple[int, int]) -> bool:
    m = re.match(r"(\d+)\.(\d+)", version)
    return m is not None and (int(m[1]), int(m[2])) < minimum
