"""Historical events imported into the event log: validated line by line, idempotent, read like live ones."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.errors import InvalidInput
from core.settings import get_settings
from online_learning.analysis import searches
from online_learning.consumers.log_sink import read_log
from online_learning.event_import import import_events
from online_learning.event_log import EventLog
from tests.helpers import run_cli

WHEN = datetime(2026, 3, 1, 12, tzinfo=UTC)


def history() -> list[dict]:
    """Two searches with a click and a purchase, in the event schema as a storefront would export them."""
    events: list[dict] = []
    for i in range(2):
        at = WHEN + timedelta(days=i)
        events.append({"type": "ranking", "event_id": f"r{i}", "request_id": f"r{i}", "timestamp": at.isoformat(),
                       "user_id": f"u{i}", "query": "cordless drill", "pipeline": "legacy-engine",
                       "items": [{"product_id": f"P{j}", "position": j + 1} for j in range(3)]})
        events.append({"type": "click", "event_id": f"c{i}", "request_id": f"r{i}", "product_id": "P1",
                       "position": 2, "user_id": f"u{i}", "timestamp": (at + timedelta(seconds=20)).isoformat()})
    events.append({"type": "purchase", "event_id": "b0", "request_id": "r0", "product_id": "P1", "user_id": "u0",
                   "revenue": 99.0, "timestamp": "2026-03-01T12:05:00"})  # no offset: UTC
    return events


def write_jsonl(path: Path, rows: list, bad: bool = True) -> Path:
    lines = [json.dumps(r) for r in rows]
    if bad:
        lines.insert(1, '{"type": "click", "event_id": "x1"')  # cut short
        lines.insert(3, json.dumps({"type": "click", "event_id": "x2", "product_id": "P1"}))  # no request_id
        lines.insert(5, json.dumps({"type": "like", "event_id": "x3", "request_id": "r0", "product_id": "P1"}))
        lines.insert(6, "")  # blank lines are skipped
    path.write_text("\n".join(lines) + "\n")
    return path


def test_valid_events_go_to_the_log_and_bad_lines_are_named(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "history.jsonl", history())
    report = import_events(source, tmp_path / "log", progress=False)
    assert (report.lines, report.valid, report.invalid) == (8, 5, 3)
    assert (report.rankings, report.interactions, report.written, report.duplicates) == (2, 3, 5, 0)
    assert report.errors[0].startswith("line 2: ") and "line 4: request_id: Field required" in report.errors[1]
    assert report.errors[2].startswith("line 6: ") and "'like'" in report.errors[2]
    assert (report.first, report.last) == (WHEN.isoformat(), (WHEN + timedelta(days=1, seconds=20)).isoformat())
    table = searches(tmp_path / "log").set_index("request_id")  # read like live traffic
    assert table.loc["r0", ["clicked", "bought", "revenue"]].tolist() == [1, 1, 99.0]
    assert read_log(tmp_path / "log", "interactions").set_index("event_id").loc["b0", "timestamp"] == (
        WHEN + timedelta(minutes=5))
    again = import_events(source, tmp_path / "log", progress=False)  # the same file twice adds nothing
    assert (again.written, again.duplicates) == (0, 5) and len(read_log(tmp_path / "log", "rankings")) == 6


def test_events_without_a_timestamp_are_counted_and_warned_of(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """An event without a timestamp gets the time of the import, as a live one gets the API's: before, silently,
    as if every such past event had happened now."""
    rows = history()
    del rows[1]["timestamp"], rows[2]["timestamp"]
    source = write_jsonl(tmp_path / "history.jsonl", rows, bad=False)
    assert import_events(source, tmp_path / "log", progress=False, dry_run=True).undated == 2
    with caplog.at_level("WARNING", "online_learning.event_import"):
        report = import_events(source, tmp_path / "log", progress=False)
    assert (report.undated, report.written) == (2, 5) and "2 events gave no timestamp" in caplog.text
    assert import_events(write_jsonl(tmp_path / "dated.jsonl", history()), tmp_path / "log2",
                         progress=False).undated == 0


def test_strict_and_dry_runs_write_nothing_and_arrays_and_gzip_read(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "history.jsonl", history())
    strict = import_events(source, tmp_path / "log", strict=True, progress=False)
    assert (strict.invalid, strict.written) == (3, 0) and read_log(tmp_path / "log", "rankings").empty
    clean = write_jsonl(tmp_path / "clean.jsonl", history(), bad=False)
    dry = import_events(clean, tmp_path / "log", dry_run=True, progress=False)
    assert (dry.valid, dry.written) == (5, 0) and read_log(tmp_path / "log", "rankings").empty
    array = tmp_path / "history.json.gz"
    with gzip.open(array, "wt") as handle:
        json.dump(history(), handle)
    report = import_events(array, tmp_path / "log", strict=True, progress=False)
    assert (report.valid, report.invalid, report.written) == (5, 0, 5)
    spool = EventLog(tmp_path / "spool", None)  # --publish appends to the spool that ships to Kafka
    try:
        published = import_events(clean, tmp_path / "unused", publish=spool, progress=False)
    finally:
        spool.close()
    assert published.written == 5 and not (tmp_path / "unused").exists()
    spooled = [json.loads(line) for p in (tmp_path / "spool").glob("segment-*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(r["event_id"] for r in spooled) == ["b0", "c0", "c1", "r0", "r1"]


def test_the_command_reports_and_exits_1_on_invalid_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(capsys, "events", "import", str(write_jsonl(tmp_path / "h.jsonl", history())))
        assert code == 1, err
        assert json.loads(out)["written"] == 5 and json.loads(out)["invalid"] == 3
        code, out, err = run_cli(capsys, "events", "import", str(write_jsonl(tmp_path / "c.jsonl", history(), False)))
        assert code == 0 and json.loads(out)["duplicates"] == 5, err
        (tmp_path / "h.csv").write_text("type,event_id\n")
        code, _, err = run_cli(capsys, "events", "import", str(tmp_path / "h.csv"))
        assert code == 2 and ".csv" in err and ".jsonl" in err
        code, _, err = run_cli(capsys, "events", "import", str(tmp_path / "h.jsonl"), "--publish")
        assert code == 2 and "SHOPRANK_EVENTS__KAFKA_BOOTSTRAP" in err
    finally:
        get_settings.cache_clear()


def test_positions_as_deep_as_a_listing_pages() -> None:
    from pydantic import ValidationError

    from online_learning.events import InteractionEvent, ShownItem

    assert ShownItem(product_id="P1", position=100_100).position == 100_100  # /v1/browse: offset 100,000, k 100
    assert InteractionEvent(type="click", event_id="e", request_id="r", product_id="P1", position=1501).position
    with pytest.raises(ValidationError, match="position"):
        ShownItem(product_id="P1", position=100_101)


def test_a_blank_shopper_id_is_no_id() -> None:
    from online_learning.events import parse

    # an export's "" user: anonymous (before: one shopper of every blank id, dropped from reports as a bot)
    event = parse('{"type": "click", "event_id": "e", "request_id": "r", "product_id": "P1", "user_id": "", '
                  '"session_id": "  "}')
    assert event.user_id is None and event.session_id is None



def test_damaged_files_and_lines_that_are_not_utf8_are_named(tmp_path: Path) -> None:
    good = json.dumps(history()[0]).encode()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + b'{"type": "click", "query": "caf\xe9"}\n' + good + b"\n")
    report = import_events(mixed, tmp_path / "log", progress=False, dry_run=True)
    assert (report.lines, report.valid, report.invalid) == (3, 2, 1)  # a BOM is no part of the first line
    assert report.errors == ["line 2: not UTF-8 text (byte 31); save the file as UTF-8"]
    (tmp_path / "fake.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(InvalidInput, match="fake.jsonl.gz could not be read after line 0"):
        import_events(tmp_path / "fake.jsonl.gz", tmp_path / "log", progress=False, dry_run=True)
    whole = gzip.compress(b"\n".join([good] * 200))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidInput, match="cut.jsonl.gz could not be read after line"):
        import_events(tmp_path / "cut.jsonl.gz", tmp_path / "log", progress=False, dry_run=True)
    (tmp_path / "latin.json").write_bytes(b'[{"query": "caf\xe9"}]')
    with pytest.raises(InvalidInput, match="latin.json is not one JSON array of UTF-8 text"):
        import_events(tmp_path / "latin.json", tmp_path / "log", progress=False, dry_run=True)


def test_the_spool_of_a_server_without_kafka_is_imported_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from online_learning.event_log import claim_spool
    from online_learning.events import parse

    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        code, _, err = run_cli(capsys, "events", "import", "--spool")
        assert code == 2 and "no event spool" in err
        folder, lock = claim_spool(get_settings().paths.event_spool)  # a server that took events, no Kafka
        log = EventLog(folder)
        log.append([parse(json.dumps(row)) for row in history()])
        (folder / "segment-00000001.jsonl").open("ab").write(b'{"topic": "x", "val')  # a write in progress
        code, out, err = run_cli(capsys, "events", "import", "--spool")
        assert code == 0 and json.loads(out)["written"] == 5 and json.loads(out)["invalid"] == 0, (out, err)
        assert len(read_log(get_settings().paths.event_log, "rankings").drop_duplicates("event_id")) == 2
        code, out, err = run_cli(capsys, "events", "import", "--spool")  # nightly again: nothing twice
        assert code == 0 and (json.loads(out)["written"], json.loads(out)["duplicates"]) == (0, 5), err
        code, _, err = run_cli(capsys, "events", "import", "--spool", "x.jsonl")
        assert code == 2 and "not both" in err
        code, _, err = run_cli(capsys, "events", "import", "--spool", "--publish")  # would read its own sends back
        assert code == 2 and "--spool cannot be used with --publish" in err
        for given in (folder, folder / "segment-00000001.jsonl", folder / ".." / folder.name):  # the spool as FILE
            code, _, err = run_cli(capsys, "events", "import", str(given), "--publish")
            assert code == 2 and "is this store's event spool" in err, err
        log.close()
        lock.close()
    finally:
        get_settings.cache_clear()


def test_an_accepted_event_is_read_back_on_a_machine_whose_clock_is_behind(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The timestamp's limit (24 hours ahead of the clock) is checked where an event comes in: a consumer, or
    ``events import --spool``, on a machine a few minutes behind the server read an event the server accepted
    23h58 ahead as invalid, and dead-lettered it."""
    import online_learning.events as events

    ahead = events.InteractionEvent(type="click", event_id="e1", request_id="r1", product_id="p1",
                                    timestamp=datetime.now(UTC) + timedelta(hours=23, minutes=58))  # accepted
    spool = tmp_path / "event_spool"
    log = EventLog(spool)
    log.append([ahead])
    log.close()
    (tmp_path / "events.jsonl").write_text(ahead.model_dump_json() + "\n")

    class Behind(datetime):  # this machine's clock, 5 minutes behind the server's
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) - timedelta(minutes=5)

    monkeypatch.setattr(events, "datetime", Behind)
    assert events.parse(ahead.model_dump_json(), stored=True) == ahead
    with pytest.raises(ValueError, match="24 hours ahead"):
        events.parse(ahead.model_dump_json())  # taken in here: checked against this clock
    assert import_events(spool, tmp_path / "log", progress=False, stored=True).written == 1
    assert import_events(tmp_path / "events.jsonl", tmp_path / "log2", progress=False).invalid == 1
    # one no ShopRank took in (another producer's record on the topic), past twice the allowance: refused, so a
    # dead letter (before: taken, its year-3000 partition stopped every reader of the log and the streaming
    # features' clock)
    for far in (timedelta(hours=49), timedelta(days=365 * 900)):
        late = ahead.model_copy(update={"timestamp": datetime.now(UTC) + far}).model_dump_json()
        with pytest.raises(ValueError, match="48 hours ahead of the reading machine's clock"):
            events.parse(late, stored=True)


def test_the_words_say_a_server_whose_clock_ran_fast_has_its_events_refused_when_read_back(tmp_path: Path) -> None:
    """An event read back is refused past 48 hours ahead of the reading machine's clock, whoever stamped it: a
    server whose clock ran that fast took it in (checked against its own clock), and it is a dead letter all the
    same. The docstrings said a stored timestamp was "not checked against this machine's clock", and the
    operations guide that only a record no ShopRank took in was refused."""
    import inspect

    import online_learning.consumers.base as base
    import online_learning.event_import as event_import
    import online_learning.events as events

    stamped = events.InteractionEvent(type="click", event_id="e1", request_id="r1", product_id="p1").model_copy(
        update={"timestamp": datetime.now(UTC) + timedelta(hours=49)})  # "now" by a server clock 49 h fast
    spool = tmp_path / "event_spool"
    log = EventLog(spool)
    log.append([stamped])  # as that server's spool holds it
    log.close()
    report = import_events(spool, tmp_path / "log", progress=False, stored=True)
    assert (report.written, report.invalid) == (0, 1)
    for words in (events.parse.__doc__, event_import.import_events.__doc__, inspect.getsource(base)):
        assert "not checked against this" not in " ".join(str(words).split())
    assert "48 hours" in str(events.parse.__doc__) and "48 hours" in str(event_import.import_events.__doc__)
    guide = " ".join((Path(__file__).parents[2] / "docs" / "operations.md").read_text().split())
    assert "the events a ShopRank server took in while its clock ran more than 48 hours ahead" in guide


def test_a_folder_laid_out_like_a_spool_is_checked_as_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Only this store's own spool holds events a server accepted: an export from another engine in a folder of
    ``segment-*.jsonl`` files skipped the 24-hours-ahead check, and a click dated 2099 went into the log (with
    ``--publish``, into Kafka)."""
    ahead = {"type": "click", "event_id": "e1", "request_id": "r1", "product_id": "p1", "user_id": "u1",
             "timestamp": "2099-01-01T00:00:00Z"}
    export = tmp_path / "from_other_engine"
    export.mkdir()
    (export / "segment-1.jsonl").write_text(json.dumps({"topic": "x", "key": None, "value": ahead}) + "\n")
    report = import_events(export, tmp_path / "log", progress=False)
    assert (report.written, report.invalid) == (0, 1) and "24 hours ahead" in report.errors[0]
    assert not list((tmp_path / "log").rglob("*.parquet"))
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(capsys, "events", "import", str(export))
        assert code == 1 and (json.loads(out)["written"], json.loads(out)["invalid"]) == (0, 1), err
        from online_learning.event_log import claim_spool
        from online_learning.events import InteractionEvent

        folder, lock = claim_spool(get_settings().paths.event_spool)  # this store's: a server accepted it
        log = EventLog(folder)
        log.append([InteractionEvent(type="click", event_id="e2", request_id="r2", product_id="p1",
                                     timestamp=datetime.now(UTC) + timedelta(hours=23, minutes=58))])
        log.close()
        lock.close()
        import online_learning.events as events

        class Behind(datetime):  # this machine's clock, 5 minutes behind the server's
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
                return datetime.now(tz) - timedelta(minutes=5)

        monkeypatch.setattr(events, "datetime", Behind)
        code, out, err = run_cli(capsys, "events", "import", "--spool")
        assert code == 0 and (json.loads(out)["written"], json.loads(out)["invalid"]) == (1, 0), err
        assert list(read_log(get_settings().paths.event_log, "interactions")["event_id"]) == ["e2"]
    finally:
        get_settings.cache_clear()


def test_json_nested_too_deep_is_an_invalid_file_or_line(tmp_path: Path) -> None:
    """Nesting past Python's stack raised RecursionError out of the import (a traceback, not a report)."""
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "events.json").write_text(f"[{deep}]")
    with pytest.raises(InvalidInput, match="not one JSON array"):
        import_events(tmp_path / "events.json", tmp_path / "log", progress=False)
    spool = tmp_path / "event_spool"
    spool.mkdir()
    (spool / "segment-00000000.jsonl").write_text(f'{{"topic": "t", "value": {deep}}}\n')
    report = import_events(spool, tmp_path / "log", progress=False)
    assert report.invalid == 1 and "not a spool record" in report.errors[0]


def test_a_spool_line_after_zeros_a_crash_left_is_imported_as_the_shipper_ships_it(tmp_path: Path) -> None:
    """Zeros where a crash lost an earlier line's bytes run into the next line's start: the shipper reads the
    event after them; before, `events import --spool` refused that line, and the event never reached the log."""
    from online_learning.event_import import spool_lines

    record = {"topic": "shoprank.interactions", "key": "u1", "value": {"type": "click", "event_id": "z1"}}
    (tmp_path / "segment-00000001.jsonl").write_bytes(b"\0" * 7 + json.dumps(record).encode() + b"\n")
    [(n, line)] = list(spool_lines(tmp_path))
    assert n == 1 and json.loads(line) == record["value"], line  # type: ignore[arg-type]
