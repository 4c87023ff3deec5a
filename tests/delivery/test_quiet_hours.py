from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.delivery.notification import Channel, Priority
from processors.delivery.quiet_hours import QuietHours, release_at

CHICAGO = ZoneInfo("America/Chicago")
NIGHT = QuietHours(time(22, 0), time(7, 0), "America/Chicago")


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHICAGO)


@pytest.mark.parametrize(
    ("at", "quiet"),
    [
        (local(2026, 1, 10, 21, 59), False),
        (local(2026, 1, 10, 22, 0), True),
        (local(2026, 1, 11, 3, 0), True),
        (local(2026, 1, 11, 6, 59), True),
        (local(2026, 1, 11, 7, 0), False),
        (local(2026, 1, 11, 12, 0), False),
    ],
)
def test_wrapping_span_in_the_recipients_zone(at: datetime, quiet: bool) -> None:
    assert NIGHT.contains(at) is quiet
    # The same instant seen from UTC gives the same answer: the zone is the recipient's, not the server's.
    assert NIGHT.contains(at.astimezone(UTC)) is quiet


def test_daytime_span_and_empty_span() -> None:
    lunch = QuietHours(time(12, 0), time(13, 0), "Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    assert lunch.contains(datetime(2026, 5, 4, 12, 30, tzinfo=paris))
    assert not lunch.contains(datetime(2026, 5, 4, 13, 0, tzinfo=paris))
    assert not QuietHours(time(9, 0), time(9, 0), "UTC").contains(datetime(2026, 5, 4, 9, 0, tzinfo=UTC))


def test_non_critical_push_waits_for_the_end_of_quiet_hours() -> None:
    at = local(2026, 1, 10, 23, 30)
    assert release_at(NIGHT, Priority.HIGH, Channel.PUSH, at) == local(2026, 1, 11, 7, 0).astimezone(UTC)
    after_midnight = local(2026, 1, 11, 2, 0)
    assert release_at(NIGHT, Priority.LOW, Channel.EMAIL, after_midnight) == local(2026, 1, 11, 7, 0)


@pytest.mark.parametrize("channel", list(Channel))
def test_critical_is_never_delayed(channel: Channel) -> None:
    at = local(2026, 1, 11, 3, 0)
    assert release_at(NIGHT, Priority.CRITICAL, channel, at) == at


@pytest.mark.parametrize("channel", [Channel.IN_APP, Channel.WEBHOOK])
def test_silent_channels_are_not_delayed(channel: Channel) -> None:
    at = local(2026, 1, 11, 3, 0)
    assert release_at(NIGHT, Priority.NORMAL, channel, at) == at


def test_no_quiet_hours_or_outside_them_goes_at_once() -> None:
    at = local(2026, 1, 11, 3, 0)
    assert release_at(None, Priority.LOW, Channel.PUSH, at) == at
    noon = local(2026, 1, 11, 12, 0)
    assert release_at(NIGHT, Priority.LOW, Channel.PUSH, noon) == noon


def test_end_follows_wall_clock_across_dst_changes() -> None:
    # Spring forward in Chicago on 2026-03-08: 07:00 CDT is 12:00 UTC (the day before, 07:00 CST was 13:00 UTC).
    assert NIGHT.end_after(local(2026, 3, 7, 23, 0)) == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert NIGHT.end_after(local(2026, 3, 6, 23, 0)) == datetime(2026, 3, 7, 13, 0, tzinfo=UTC)
    # Fall back on 2026-11-01: 07:00 CST is 13:00 UTC.
    assert NIGHT.end_after(local(2026, 10, 31, 23, 0)) == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


def test_end_inside_a_spring_forward_gap_is_the_first_instant_after_it() -> None:
    odd = QuietHours(time(23, 0), time(2, 30), "America/Chicago")
    end = odd.end_after(local(2026, 3, 7, 23, 30))
    assert end.astimezone(CHICAGO).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 30)
    assert not odd.contains(end)


@given(
    start=st.times(),
    end=st.times(),
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_release_is_never_before_due_and_never_inside_quiet_hours(start: time, end: time, at: datetime) -> None:
    quiet = QuietHours(start.replace(microsecond=0), end.replace(microsecond=0), "America/New_York")
    released = release_at(quiet, Priority.NORMAL, Channel.PUSH, at)
    assert released >= at
    assert released - at <= timedelta(hours=25)
    if released != at:
        assert not quiet.contains(released)
