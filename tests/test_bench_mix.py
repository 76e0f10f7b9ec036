"""The mix scenario's pure parts: the type chooser, the envelopes it builds, and the webhook receiver's tally."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest

from api.schemas import envelope_violations
from bench.actors import MARK_FIELD
from bench.mix import DEFAULT_SHARES, Mix, Tally, cycle, receiver_app
from queue_manager.settings import DEFAULT_SCHEMAS_DIR, Settings
from schemas import SchemaRegistry
from schemas.checks import destination_error


def test_cycle_spreads_each_type_by_its_share() -> None:
    # A third each, in a fixed order
    assert cycle(DEFAULT_SHARES) == ["log", "webhook", "ordered"]
    # Uneven shares are interleaved, not bunched
    assert cycle({"log": 2, "webhook": 1}) == ["log", "webhook", "log"]
    assert Counter(cycle({"log": 3, "webhook": 2, "ordered": 1})) == {"log": 3, "webhook": 2, "ordered": 1}
    # A zero share drops the type; no positive share is refused
    assert cycle({"log": 1, "ordered": 0}) == ["log"]
    with pytest.raises(ValueError, match="positive share"):
        cycle({"log": 0})


def test_mix_envelopes_are_valid_and_carry_their_bench_id() -> None:
    # Given the default mix, posting webhooks to a receiver on loopback
    mix = Mix(DEFAULT_SHARES, "http://127.0.0.1:8123", "run1m")
    registry = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR)
    envelopes = [mix.envelope(n) for n in range(300)]

    # Then a third of each type, each valid against the envelope and its payload schema
    assert Counter(e["type"] for e in envelopes) == {"log": 100, "webhook": 100, "ordered": 100}
    for envelope in envelopes:
        assert envelope_violations(envelope) == []
        assert registry.validate(envelope["type"], envelope["payload"]) == []
    # And the shipped API's default allow-list takes the receiver
    assert destination_error(envelopes[1]["payload"]["url"], Settings().webhook_allowed_hosts) is None
    # And each carries its own id where its actor (or the receiver) sees it
    assert envelopes[0]["payload"]["fields"][MARK_FIELD] == "run1m0"
    assert envelopes[1]["payload"]["body"] == {"bench_id": "run1m1"}
    assert json.loads(mix.body_of(2)) == envelopes[2]


def test_only_the_fifo_type_gets_a_group_and_consecutive_ones_go_to_different_groups() -> None:
    mix = Mix(DEFAULT_SHARES, "http://127.0.0.1:8123", "t", groups=32)
    registry = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR)
    envelopes = [mix.envelope(n) for n in range(3 * 64)]

    # Every FIFO message has a group id, no other message has one
    assert all(("group_id" in e) == (e["type"] in registry.fifo_types) for e in envelopes)
    groups = [e["group_id"] for e in envelopes if e["type"] == "ordered"]
    # The 64 ordered messages go round the 32 groups twice, never twice in a row to one group
    assert Counter(groups) == {f"g{g}": 2 for g in range(32)}
    assert all(a != b for a, b in itertools.pairwise(groups))


def test_tally_counts_every_request_and_keeps_each_id_s_first_time() -> None:
    tally = Tally()

    # Given two POSTs of one id (a redelivery), one of another, and two without a usable id
    tally.record("/hook/webhook", b'{"bench_id": "a"}', 10.0)
    tally.record("/hook/ordered", b'{"bench_id": "b"}', 11.0)
    tally.record("/hook/webhook", b'{"bench_id": "a"}', 12.0)
    tally.record("/hook/webhook", b"not json", 13.0)
    tally.record("/hook/webhook", b"[1]", 14.0)

    # Then every request counts, each id keeps its first time, and the rest are repeats
    assert tally.requests == 5
    assert tally.first_seen == {"a": 10.0, "b": 11.0}
    assert tally.duplicates == 3
    assert tally.summary() == {"requests": 5, "distinct": 2, "by_path": {"/hook/webhook": 4, "/hook/ordered": 1}}


async def test_receiver_answers_200_at_once_and_reports_what_it_saw(aiohttp_client: Any) -> None:
    client = await aiohttp_client(receiver_app(Tally()))

    # When a webhook is POSTed to it twice
    for _ in range(2):
        response = await client.post("/hook/webhook", json={"bench_id": "x1"}, headers={"Idempotency-Key": "m1"})
        assert response.status == 200

    # Then its tally and its first-seen times say so
    assert await (await client.get("/_tally")).json() == {
        "requests": 2,
        "distinct": 1,
        "by_path": {"/hook/webhook": 2},
    }
    assert list(await (await client.get("/_seen")).json()) == ["x1"]
