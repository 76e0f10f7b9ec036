"""The rules that keep message groups in order, on their own: the worker's gate, the batcher's
choice of what goes in the next batch, and what it sends again after SQS answered."""

from __future__ import annotations

import dataclasses

import pytest

from queue_manager.sqs.groups import GroupGate, next_batch, plan_resend


@dataclasses.dataclass(frozen=True)
class R:
    """One entry's result, as `plan_resend` reads it."""

    ok: bool
    retryable: bool = False


OK, RETRY, FINAL = R(True), R(False, True), R(False, False)


def test_the_gate_lets_one_message_of_a_group_out_and_the_next_when_it_is_done() -> None:
    gate: GroupGate[str] = GroupGate()
    # Given a1 out, a2 and a3 held behind it, b1 of another group out as well
    assert gate.admit("a", "a1") is True
    assert gate.admit("a", "a2") is False
    assert gate.admit("b", "b1") is True
    assert gate.admit("a", "a3") is False
    assert (gate.held(), gate.out()) == (2, 2)
    # When the running ones finish, the next of their group comes out, in order
    assert gate.done("a") == "a2"
    assert gate.done("b") is None
    assert gate.done("a") == "a3"
    assert gate.done("a") is None
    # Then the group is free again: its next message goes at once
    assert gate.admit("a", "a4") is True


def test_messages_without_a_group_are_never_held() -> None:
    gate: GroupGate[str] = GroupGate()
    assert gate.admit(None, "x") and gate.admit(None, "y")
    assert gate.done(None) is None and gate.held() == 0


def test_releasing_a_group_hands_back_what_it_held_in_order_and_frees_it() -> None:
    gate: GroupGate[str] = GroupGate()
    for item in ("a1", "a2", "a3"):
        gate.admit("a", item)
    gate.admit("b", "b1")
    gate.admit("b", "b2")
    assert gate.release("a") == ["a2", "a3"]
    assert gate.admit("a", "a9") is True
    assert gate.release_all() == ["b2"]
    assert (gate.held(), gate.out()) == (0, 0)


def entries(spec: str) -> list[tuple[str | None, int]]:
    """'a a b - a' → [(a, 0), (a, 1), (b, 2), (None, 3), (a, 4)]: groups in arrival order."""
    return [(None if g == "-" else g, i) for i, g in enumerate(spec.split())]


def batch(
    spec: str,
    *,
    busy: frozenset[str] = frozenset(),
    max_entries: int = 10,
    max_bytes: int = 10**6,
    sizes: dict[int, int] | None = None,
) -> tuple[list[int], list[int]]:
    """The positions `next_batch` takes and leaves of the entries `spec` describes."""
    taken, waiting = next_batch(
        entries(spec),
        busy,
        group=lambda e: e[0],
        size=lambda e: (sizes or {}).get(e[1], 1),
        max_entries=max_entries,
        max_bytes=max_bytes,
    )
    return [i for _, i in taken], [i for _, i in waiting]


def test_a_batch_takes_entries_in_arrival_order_up_to_ten() -> None:
    assert batch("a b a - c a b a b a c c") == (list(range(10)), [10, 11])


def test_a_busy_group_waits_and_the_others_fill_the_batch() -> None:
    assert batch("a b a c a b", busy=frozenset({"a"})) == ([1, 3, 5], [0, 2, 4])


def test_a_group_that_does_not_fit_never_lets_its_later_entries_through() -> None:
    # Entry 1 (group a) is too large for what is left of the batch: entry 3 (also a) must wait with it,
    # while b's entry 2, and the ungrouped 4, still fit.
    assert batch("a a b a -", max_bytes=10, sizes={0: 5, 1: 6, 2: 1, 3: 1, 4: 1}) == ([0, 2, 4], [1, 3])
    # One entry always goes, however large, so nothing waits forever.
    assert batch("a", max_bytes=10, sizes={0: 50}) == ([0], [])


@pytest.mark.parametrize(
    ("groups", "results", "resend", "overtaken", "failed"),
    [
        # Everything accepted: nothing to do.
        ("a b a", [OK, OK, OK], [], [], set()),
        # AWS fails the rest of a group behind a failed entry, whatever it says of them: all go again, in order.
        ("a a b a", [RETRY, FINAL, OK, FINAL], [0, 1, 3], [], set()),
        # A failure for good fails the group from there on: what waits behind it must not go either.
        ("a a b", [FINAL, FINAL, OK], [], [], {"a"}),
        ("a b a", [OK, OK, FINAL], [], [], {"a"}),
        # A server that accepts later entries of the group (ministack) overtook the failed one: it is
        # not sent again behind them, and what waits may follow them.
        ("a a a", [RETRY, OK, OK], [], [0], set()),
        ("a a a a", [OK, RETRY, OK, RETRY], [3], [1], set()),
        # Entries without a group go again only for their own retryable errors.
        ("- - -", [RETRY, FINAL, OK], [0], [], set()),
    ],
)
def test_what_is_sent_again_after_a_batch_keeps_each_group_in_order(
    groups: str, results: list[R], resend: list[int], overtaken: list[int], failed: set[str]
) -> None:
    plan = plan_resend([None if g == "-" else g for g in groups.split()], results, may_resend=True)
    assert (plan.resend, plan.overtaken, plan.failed_groups) == (resend, overtaken, failed)


def test_on_the_last_attempt_nothing_is_sent_again_and_the_failed_groups_stop() -> None:
    plan = plan_resend(["a", "a", "b", None], [RETRY, FINAL, OK, RETRY], may_resend=False)
    assert (plan.resend, plan.overtaken, plan.failed_groups) == ([], [], {"a"})
