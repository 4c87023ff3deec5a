"""The flush policy: size or age, whichever comes first."""

from __future__ import annotations

import pytest

from ingest.batching import BatchPolicy


def test_an_empty_batch_is_never_due() -> None:
    assert not BatchPolicy(10, 0.05).is_due(0, None, 100.0)


def test_a_full_batch_is_due_at_once() -> None:
    policy = BatchPolicy(10, 0.05)
    assert policy.is_due(10, 1.0, 1.0)
    assert not policy.is_due(9, 1.0, 1.0)


def test_an_old_batch_is_due() -> None:
    policy = BatchPolicy(10, 0.05)
    assert policy.deadline(1.0) == pytest.approx(1.05)
    assert not policy.is_due(1, 1.0, 1.04)
    assert policy.is_due(1, 1.0, 1.05)


def test_zero_age_flushes_every_item() -> None:
    assert BatchPolicy(10, 0.0).is_due(1, 5.0, 5.0)


@pytest.mark.parametrize(("size", "age"), [(0, 1.0), (1, -0.1)])
def test_nonsense_policies_are_refused(size: int, age: float) -> None:
    with pytest.raises(ValueError, match="batch"):
        BatchPolicy(size, age)
