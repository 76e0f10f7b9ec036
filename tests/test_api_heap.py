"""The API's collector settings once started: start-up's heap frozen, the young generation collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from api import server


@pytest.fixture
def restored_collector() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


@pytest.mark.usefixtures("restored_collector")
def test_freeze_heap_leaves_what_exists_out_of_collections_and_collects_the_young_every_10000_allocations() -> None:
    built_at_start = {"schemas": [1, 2, 3]}
    gc.unfreeze()
    server.freeze_heap()
    assert gc.get_freeze_count() > 0
    assert all(o is not built_at_start for o in gc.get_objects())  # frozen: no collection walks it
    assert gc.get_threshold()[0] == server.YOUNG_COLLECTION_ALLOCATIONS == 10_000
    made_after = {"request": [4, 5, 6]}
    assert any(o is made_after for o in gc.get_objects())  # later objects are collected as usual
