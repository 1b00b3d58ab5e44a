"""The one parser behind every time option: ISO 8601 (UTC unless an offset is given) or a
duration before now; bad input is a sentence and exit code 2, never a traceback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import typer
from typer.testing import CliRunner

from wooflow.timespec import format_duration, parse_duration, parse_time, time_option

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, ago", [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2)),
    ("30d", timedelta(days=30)), ("1w", timedelta(days=7)), ("1h30m", timedelta(minutes=90)),
    (" 6H ", timedelta(hours=6)), ("0s", timedelta(0)),
])
def test_durations_mean_that_long_before_now(text: str, ago: timedelta) -> None:
    spec = parse_time(text, NOW)
    assert spec.at == NOW - ago and spec.ago == ago and spec.relative and spec.text == text


@pytest.mark.parametrize("text, expected", [
    ("2026-01-31", datetime(2026, 1, 31, tzinfo=timezone.utc)),
    ("2026-01-31T08:00", datetime(2026, 1, 31, 8, tzinfo=timezone.utc)),
    ("2026-01-31 08:00:05", datetime(2026, 1, 31, 8, 0, 5, tzinfo=timezone.utc)),
    ("2026-01-31T08:00:00Z", datetime(2026, 1, 31, 8, tzinfo=timezone.utc)),
    ("2026-01-31T09:00:00+01:00", datetime(2026, 1, 31, 8, tzinfo=timezone.utc)),
    ("2026-01-31T03:00:00-05:00", datetime(2026, 1, 31, 8, tzinfo=timezone.utc)),
])
def test_iso_times_without_offset_are_utc_and_all_come_back_in_utc(text: str, expected: datetime) -> None:
    spec = parse_time(text, NOW)
    assert spec.at == expected and spec.at.utcoffset() == timedelta(0) and not spec.relative


def test_now_is_the_parse_time() -> None:
    assert parse_time("now", NOW).at == NOW and parse_time("NOW", NOW).ago == timedelta(0)
    before = datetime.now(timezone.utc)
    assert before <= parse_time("now").at <= datetime.now(timezone.utc)


def test_the_key_names_the_request_not_the_instant() -> None:
    # the same relative request an hour later, spelled differently: one key
    assert parse_time("6h", NOW).key == parse_time("360m", NOW + timedelta(hours=1)).key == "6h ago"
    assert parse_time("6h", NOW).key != parse_time("7h", NOW).key
    # equal instants however they are written: one key; different instants: different keys
    assert parse_time("2026-01-31", NOW).key == parse_time("2026-01-31T01:00:00+01:00", NOW).key
    assert parse_time("2026-01-31", NOW).key != parse_time("2026-01-31T00:00:01Z", NOW).key
    # a relative request never shares a key with an absolute one
    assert parse_time("2h", NOW).key != parse_time((NOW - timedelta(hours=2)).isoformat(), NOW).key
    assert [format_duration(parse_duration(t)) for t in ("1w", "90m", "3600s", "0s", "1d1s")] == \
        ["7d", "1h30m", "1h", "0s", "1d1s"]


@pytest.mark.parametrize("text, message", [
    ("yesterday", "not a time: 'yesterday'"),
    ("5x", "not a time: '5x'"),
    ("2h ago", "not a time: '2h ago'"),
    ("-2h", "not a time: '-2h'"),
    ("2026-13-01", "not a time: '2026-13-01'"),
    ("2h30", "not a time: '2h30'"),
    ("9999-12-31T23:00:00-05:00", "not a time: '9999-12-31T23:00:00-05:00'"),
    ("2026-01-31T08:00:00 UTC", "not a time"),
    ("h", "not a time: 'h'"),
    ("", "empty time"),
    ("1m2x3h", "not a duration: '1m2x3h'"),
    ("99999999d", "too far back"),
])
def test_bad_input_is_a_sentence_naming_the_formats(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_time(text, NOW)
    assert message in str(err.value)
    assert "2026-01-31T08:00:00Z" in str(err.value) or "too far back" in str(err.value)


def test_the_option_parser_turns_bad_input_into_bad_parameter() -> None:
    assert time_option("2h").ago == timedelta(hours=2)
    spec = parse_time("1d", NOW)
    assert time_option(spec) is spec  # defaults that are already parsed pass through
    with pytest.raises(typer.BadParameter, match="not a time: 'soon'"):
        time_option("soon")


@pytest.mark.parametrize("argv, option", [
    (["dlq", "list", "--since", "yesterday"], "--since"),
    (["dlq", "list", "--until", "2h ago"], "--until"),
    (["dlq", "redrive", "--since", "5x", "--yes"], "--since"),
    (["replay", "--from", "last week", "--dry-run"], "--from"),
    (["replay", "--from", "1h", "--to", "13:00", "--dry-run"], "--to"),
    (["offsets", "reset", "--group", "g", "--to-datetime", "2026-02-30"], "--to-datetime"),
    (["backfill", "--store", "s", "--since", "six hours"], "--since"),
])
def test_every_time_option_rejects_bad_input_with_exit_code_2(argv: list[str], option: str) -> None:
    """Parsed before any connection is made: no broker, database or store is needed."""
    from wooflow.cli import app

    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "not a time" in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_help_says_no_offset_means_utc() -> None:
    from wooflow.cli import app

    for argv in (["dlq", "list"], ["replay"], ["offsets", "reset"], ["backfill"]):
        out = " ".join(CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "400"}).output.split())
        assert "UTC when no offset is given" in out and "2h, 30d" in out, (argv, out)
