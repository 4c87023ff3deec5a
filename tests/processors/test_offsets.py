"""Where a Faust worker's processing of a partition must go on, and the gaps it refuses (processors.offsets)."""

from __future__ import annotations

from processors.offsets import Gap, find_gap, start_offset


def test_a_partition_the_group_committed_on_goes_on_at_the_commit() -> None:
    assert start_offset(40, 0) == 40


def test_a_partition_the_group_never_committed_on_starts_at_its_first_record() -> None:
    # aiokafka reports "no commit" as None (the admin client as -1).
    assert start_offset(None, 0) == 0
    assert start_offset(-1, 0) == 0
    assert start_offset(None, 12) == 12


def test_a_commit_that_retention_removed_starts_at_the_first_record_left() -> None:
    assert start_offset(5, 30) == 30


def test_records_in_order_advance_the_expected_offsets() -> None:
    expected = {0: 0, 1: 7}
    assert find_gap([(0, 0), (1, 7), (0, 1), (1, 8), (0, 2)], expected) is None
    assert expected == {0: 3, 1: 9}


def test_redelivered_records_are_not_gaps() -> None:
    expected = {0: 10}
    assert find_gap([(0, 8), (0, 9), (0, 10)], expected) is None
    assert expected == {0: 11}


def test_a_worker_killed_before_its_first_commit_notices_records_dropped_at_its_restart() -> None:
    """The kill -9 test's shape (tests/processors/test_faust_recovery.py): the worker is killed before Faust's first
    offset commit, so the restarted worker finds no commit on any partition. If Faust drops the records it fetched
    first (0..27) and delivers 28 on, the check must not take 28 for the start: Faust would commit past 0..27 (it
    guards a gap at the head only after a commit) and those readings would never be judged."""
    expected = {1: start_offset(None, 0)}
    assert find_gap([(1, 28), (1, 29)], expected) == Gap(partition=1, first=0, received=28)


def test_a_gap_after_the_commit_is_found_in_a_batch_of_several_partitions() -> None:
    expected = {0: 5, 2: 3}
    assert find_gap([(0, 5), (2, 3), (2, 4), (0, 9)], expected) == Gap(partition=0, first=6, received=9)
