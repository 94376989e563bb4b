"""The daily operations report against a real PostgreSQL: sample data ingested, then anomalies injected by SQL
(a crossed and a locked quote, a zero-volume bar, a price jump, a stale run, an inconsistent bar, a bar outside
the session, a second publisher disagreeing), each asserted as a finding with the status and exit code."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from fake_databento import FakeDatabento, Fault
from helpers import hdi_shell, run_cli

import hdi_lab
from hdi_lab.core import report as reporter
from hdi_lab.core.session import HdiSession

pytestmark = pytest.mark.integration

DAY = "2024-01-03"
ES, AAPL = 400001, 500001  # the sample provider's instrument ids
GLBX, XNAS = 1, 2  # and publishers


@pytest.fixture
def day(session: HdiSession) -> HdiSession:
    """ES (CME) and AAPL (Nasdaq) minute bars of 2024-01-02..03 and AAPL TBBO of 01-03; ES subscribed."""
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since=DAY, name="es", session=session)
    for symbol in ("ESH4", "AAPL"):
        hdi_lab.ingest(
            provider="sample", schema="ohlcv-1m", symbols=symbol, start="2024-01-02", end="2024-01-04", session=session
        )
    hdi_lab.ingest(provider="sample", schema="tbbo", symbols="AAPL", start=DAY, end="2024-01-04", session=session)
    return session


def _exec(session: HdiSession, sql: str, *params: object) -> None:
    with session.connection() as conn, conn.cursor() as cur:
        cur.execute(sql.replace("{s}", session.schema), params)


def _inject(session: HdiSession) -> None:
    px = 1_000_000_000
    # a crossed quote and a locked one
    _exec(
        session,
        "UPDATE {s}.tbbo SET bid_px_00 = ask_px_00 + %s WHERE ts_event_ns = (SELECT min(ts_event_ns) FROM {s}.tbbo)",
        px,
    )
    _exec(
        session, "UPDATE {s}.tbbo SET bid_px_00 = ask_px_00 WHERE ts_event_ns = (SELECT max(ts_event_ns) FROM {s}.tbbo)"
    )
    # a zero-volume bar and a price jump (ES, 10% up for one bar)
    _exec(
        session,
        "UPDATE {s}.ohlcv_1m SET volume = 0 WHERE instrument_id = %s AND ts_event = %s",
        ES,
        pd.Timestamp(f"{DAY} 15:00", tz="UTC"),
    )
    for at in ("00:05", "16:00"):  # 00:05: judged against the evening before (01-02) too
        _exec(
            session,
            "UPDATE {s}.ohlcv_1m SET close = close * 11 / 10, high = close * 11 / 10 "
            "WHERE instrument_id = %s AND ts_event = %s",
            ES,
            pd.Timestamp(f"{DAY} {at}", tz="UTC"),
        )
    # AAPL: 40 bars with one price, then an inconsistent bar (high below low)
    _exec(
        session,
        "UPDATE {s}.ohlcv_1m SET open = 190::bigint * %s, high = 190::bigint * %s, low = 190::bigint * %s, "
        "close = 190::bigint * %s "
        "WHERE instrument_id = %s AND ts_event >= %s AND ts_event < %s",
        px,
        px,
        px,
        px,
        AAPL,
        pd.Timestamp(f"{DAY} 18:00", tz="UTC"),
        pd.Timestamp(f"{DAY} 18:40", tz="UTC"),
    )
    _exec(
        session,
        "UPDATE {s}.ohlcv_1m SET high = low - %s WHERE instrument_id = %s AND ts_event = %s",
        px,
        AAPL,
        pd.Timestamp(f"{DAY} 20:00", tz="UTC"),
    )
    # an AAPL bar at 03:00 UTC: Nasdaq is closed
    _exec(
        session,
        "INSERT INTO {s}.ohlcv_1m SELECT instrument_id, publisher_id, ts_event - interval '12 hours', "
        "open, high, low, close, volume FROM {s}.ohlcv_1m WHERE instrument_id = %s AND ts_event = %s",
        AAPL,
        pd.Timestamp(f"{DAY} 15:00", tz="UTC"),
    )
    # a second publisher of ES, 1% above for 5 minutes
    _exec(session, "INSERT INTO {s}.publishers VALUES (9001, 'GLBX.MDP3', 'TEST')")
    _exec(
        session,
        "INSERT INTO {s}.ohlcv_1m SELECT instrument_id, 9001, ts_event, open, "
        "greatest(high, close * 101 / 100), low, close * 101 / 100, volume FROM {s}.ohlcv_1m "
        "WHERE instrument_id = %s AND ts_event >= %s AND ts_event < %s",
        ES,
        pd.Timestamp(f"{DAY} 12:00", tz="UTC"),
        pd.Timestamp(f"{DAY} 12:05", tz="UTC"),
    )


def test_clean_day_is_green(day: HdiSession, hdi_env: dict[str, str]) -> None:
    found = hdi_lab.report(DAY, session=day)
    assert found.status == "green" and found.reasons == () and found.exit_code == 0
    assert found.findings.empty
    assert found.coverage[["subscription", "symbol", "reason", "expected", "present"]].values.tolist() == [
        ["es", "ESH4", None, 1380, 1380]
    ]
    assert "nothing was ingested in this window" in found.notes  # the ingests ran today, not on DAY
    today = hdi_lab.report(session=day)
    assert set(today.ingests["schema"]) == {"ohlcv-1m", "tbbo"}
    assert today.ingests["chunks"].sum() == 5 and today.ingests["inserted"].sum() > 30_000
    code, out, err = run_cli(["report", "--date", DAY])
    assert code == 0, err
    assert out.startswith(f"hdi operations report {DAY} (UTC): GREEN")


def test_injected_anomalies_are_found(day: HdiSession, hdi_env: dict[str, str], tmp_path: Path) -> None:
    _inject(day)
    found = hdi_lab.report(DAY, session=day)
    f = found.findings
    by = dict(tuple(f.groupby("check")))

    def one(check: str) -> pd.Series:
        assert len(by[check]) == 1, by[check]
        return by[check].iloc[0]

    crossed, locked = one("crossed_quote"), one("locked_quote")
    assert (crossed["severity"], crossed["instrument_id"], crossed["count"]) == ("red", AAPL, 1)
    assert (locked["severity"], locked["instrument_id"], locked["count"]) == ("amber", AAPL, 1)
    zero = one("zero_volume")
    assert (zero["instrument_id"], zero["ts_event"]) == (ES, pd.Timestamp(f"{DAY} 15:00", tz="UTC"))
    jumps = by["price_jump"]  # ES up, then back down (AAPL's stale run may end in one too)
    assert set(jumps[jumps["instrument_id"] == ES]["ts_event"]) == {
        pd.Timestamp(f"{DAY} {at}", tz="UTC") for at in ("00:05", "00:06", "16:00", "16:01")
    }
    stale = one("stale_price")
    assert (stale["instrument_id"], stale["count"]) == (AAPL, 40)
    assert stale["ts_event"] == pd.Timestamp(f"{DAY} 18:00", tz="UTC")
    ohlc = one("ohlc")
    assert (ohlc["severity"], ohlc["instrument_id"]) == ("red", AAPL)
    assert ohlc["ts_event"] == pd.Timestamp(f"{DAY} 20:00", tz="UTC")
    outside = one("outside_session")
    assert (outside["instrument_id"], outside["ts_event"]) == (AAPL, pd.Timestamp(f"{DAY} 03:00", tz="UTC"))
    dis = one("publisher_disagreement")
    assert (dis["instrument_id"], dis["count"]) == (ES, 5)
    assert dis["ts_event"] == pd.Timestamp(f"{DAY} 12:00", tz="UTC")
    assert found.status == "red" and found.exit_code == 2
    assert found.reasons[:2] == ("red: crossed_quote x1", "red: ohlc x1")
    assert "amber: zero_volume x1" in found.reasons

    code, out, err = run_cli(["report", "--date", DAY])
    assert code == 2, err
    assert "RED" in out.splitlines()[0] and "crossed_quote" in out

    # the JSON schema is stable
    code, out, err = run_cli(["report", "--date", DAY, "--format", "json"])
    assert code == 2, err
    data = json.loads(out)
    assert list(data) == [
        "schema_version", "start", "end", "status", "exit_code", "reasons", "notes", "thresholds", "ingests", "gaps",
        "quarantine", "conditions", "findings", "subscriptions",
    ]  # fmt: skip
    assert data["schema_version"] == 1 and data["status"] == "red" and data["exit_code"] == 2
    assert data["start"] == f"{DAY}T00:00:00+00:00" and data["end"] == "2024-01-04T00:00:00+00:00"
    assert list(data["findings"]["counts"]) == list(reporter.CHECKS)
    assert data["findings"]["counts"]["stale_price"] == 40
    assert list(data["findings"]["rows"][0]) == list(reporter.FINDING_COLUMNS)
    assert data["thresholds"] == {
        "jump_sigmas": 6.0, "jump_window": 60, "jump_min_returns": 20, "jump_max_gap": 30, "stale_bars": 30,
        "missing_share": 0.2, "disagreement": 0.001,
    }  # fmt: skip

    # the HTML page: written, parseable, plotly inline (no external script) and three plots
    page = tmp_path / "report.html"
    code, out, err = run_cli(["report", "--date", DAY, "--format", "html", "--output", str(page)])
    assert code == 2 and f"report written to {page}" in out
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert parsed.external == [] and any("Plotly" in s for s in parsed.scripts)
    assert {"hdi-plot-0", "hdi-plot-1", "hdi-plot-2"} <= parsed.ids
    assert "RED" in parsed.text and "crossed_quote" in parsed.text


def test_amber_day_and_thresholds(day: HdiSession, hdi_env: dict[str, str]) -> None:
    _exec(
        day,
        "UPDATE {s}.ohlcv_1m SET volume = 0 WHERE instrument_id = %s AND ts_event = %s",
        ES,
        pd.Timestamp(f"{DAY} 15:00", tz="UTC"),
    )
    found = hdi_lab.report(DAY, session=day)
    assert (found.status, found.reasons, found.exit_code) == ("amber", ("amber: zero_volume x1",), 1)
    assert run_cli(["report", "--date", DAY])[0] == 1
    code, out, err = run_cli(["report", "--date", DAY, "--threshold", "stale_bars=2", "--format", "json"])
    assert code == 1 and json.loads(out)["thresholds"]["stale_bars"] == 2, err
    code, out, err = run_cli(["report", "--date", DAY, "--threshold", "bogus=2"])
    assert code == 1 and "bogus=2" in err and out == ""
    code, out, err = run_cli(["report", "--date", DAY, "--output", "/nonexistent/dir/r.txt"])
    assert code == 1 and "cannot be written" in err
    # a sample session has no 30-bar stale run, but a 2-bar one somewhere: the threshold is a parameter
    strict = hdi_lab.report(DAY, thresholds={"stale_bars": 2}, session=day)
    assert "stale_price" in set(strict.findings["check"])


def test_gaps_quarantine_and_range(day: HdiSession, hdi_env: dict[str, str]) -> None:
    # the subscription's next session, 01-04, was never ingested
    found = hdi_lab.report(start=DAY, end="2024-01-05", session=day)
    assert found.gaps[["subscription", "dataset", "symbol", "reason"]].values.tolist() == [
        ["es", "GLBX.MDP3", "ESH4", "not_ingested"]
    ]
    assert found.findings[["check", "dataset"]].values.tolist() == [["gap", "GLBX.MDP3"]]
    assert found.status == "amber" and "amber: gap x1" in found.reasons
    _exec(
        day,
        "INSERT INTO {s}.quarantine (chunk_key, dataset, schema, rule, reason, record, req_start, req_end, "
        "fingerprint) VALUES ('k', 'GLBX.MDP3', 'ohlcv-1m', 'price_positive', 'r', '{}', now(), now(), 'fp')",
    )
    found = hdi_lab.report(DAY, session=day)
    assert found.quarantine.values.tolist() == [["price_positive", 1, 0, 0]]
    assert found.reasons == ("amber: quarantine x1",)
    # the vendor said the day was degraded when it was ingested
    _exec(
        day,
        "INSERT INTO {s}.ingest_conditions (ingest_id, day, condition) SELECT max(id), %s, 'degraded' "
        "FROM {s}.ingest_log WHERE schema = 'tbbo'",
        DAY,
    )
    found = hdi_lab.report(DAY, session=day)
    assert found.conditions[["dataset", "schema", "condition"]].values.tolist() == [["XNAS.ITCH", "tbbo", "degraded"]]
    assert found.reasons == ("amber: quarantine x1", "amber: vendor_condition x1")


def test_hdi_report_magic(day: HdiSession, hdi_env: dict[str, str], tmp_path: Path) -> None:
    with hdi_shell() as shell:
        shell.run_cell(f"%hdi_report --date {DAY} -o r")
        assert shell.user_ns["r"].status == "green"
        out = tmp_path / "r.json"
        shell.run_cell(f"%hdi_report --date {DAY} --format json --output {out}")
        assert json.loads(out.read_text())["status"] == "green"
        result = shell.run_cell(f"%hdi_report --date {DAY} --format html --threshold stale_bars=2")
        assert result.success and result.result.status == "amber"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.external: list[str] = []
        self.ids: set[str] = set()
        self.text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
            if found.get("src"):
                self.external.append(str(found["src"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text += data


# --- what the ingests cost ------------------------------------------------------------------------------------


def test_the_estimated_cost_of_what_was_ingested(
    dbs: HdiSession, fake: FakeDatabento, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Databento chunk logs its cost (its records at the dataset's unit price: the dry run's get_cost of the
    same chunks); the sample provider gives none."""
    monkeypatch.chdir(tmp_path)
    hdi_lab.watch(
        "databento", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", name="es_db",
        session=dbs,
    )  # fmt: skip
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="NQH4", since="2024-03-12", name="nq_sample", session=dbs)
    dry = hdi_lab.update(until="2024-03-15", dry_run=True, session=dbs)
    expected = dry.plans[0].report.cost_usd  # type: ignore[union-attr]  # the dry run's estimate of the same chunks
    assert expected is not None and expected > 0
    costs_asked = fake.count("metadata.get_cost")
    done = hdi_lab.update(until="2024-03-15", session=dbs)
    assert done.plans[0].report.cost_usd == pytest.approx(expected)  # type: ignore[union-attr]
    # priced from the dataset's unit prices, asked once: no request per chunk (only the limit check's one per
    # schema: the bars and the definitions fetched along)
    assert fake.count("metadata.get_cost") - costs_asked == 2
    assert fake.count("metadata.list_unit_prices") == 1
    chunks = len(done.plans[0].chunks)
    logged = hdi_lab.sql("SELECT provider, cost_usd FROM ingest_log ORDER BY id", session=dbs)
    assert logged[logged["provider"] == "databento"]["cost_usd"].notna().all()
    assert logged[logged["provider"] == "sample"]["cost_usd"].isna().all()

    found = hdi_lab.report(session=dbs)  # today: the ingests just made
    assert found.cost_usd == pytest.approx(expected)
    per_provider = found.ingests.groupby("provider")["cost_usd"].sum(min_count=1)
    assert per_provider["databento"] == pytest.approx(expected) and pd.isna(per_provider["sample"])
    subs = found.subscriptions.set_index("subscription")
    assert subs.loc["es_db", "cost_usd"] == pytest.approx(expected) and pd.isna(subs.loc["nq_sample", "cost_usd"])
    assert subs.loc["es_db", "chunks"] == chunks and subs.loc["nq_sample", "chunks"] == 3

    code, out, err = run_cli(["report"])
    assert code in (0, 1), err
    assert f"estimated cost ${expected:,.2f}" in out and "Ingested per subscription" in out
    nq_line = next(line for line in out.splitlines() if line.strip().startswith("nq_sample"))
    assert nq_line.rstrip().endswith("n/a")
    code, out, err = run_cli(["report", "--format", "json"])
    data = json.loads(out)
    assert data["ingests"]["totals"]["cost_usd"] == pytest.approx(expected)
    by_name = {r["subscription"]: r for r in data["subscriptions"]}
    assert by_name["es_db"]["cost_usd"] == pytest.approx(expected) and by_name["nq_sample"]["cost_usd"] is None
    page = tmp_path / "r.html"
    assert run_cli(["report", "--format", "html", "--output", str(page)])[0] in (0, 1)
    assert f"Ingested (estimated cost ${expected:,.2f})" in page.read_text()

    empty = hdi_lab.report("2024-01-03", session=dbs)  # nothing ingested that day: no cost to show
    assert empty.cost_usd is None and empty.to_dict()["ingests"]["totals"]["cost_usd"] is None


def test_a_cost_the_vendor_does_not_give_is_unknown_and_the_chunk_stored(
    dbs: HdiSession, fake: FakeDatabento, caplog: pytest.LogCaptureFixture
) -> None:
    # no unit prices for the dataset: 500 outlasts the 2 retries, so no chunk of this run gets an estimate
    fake.faults += [Fault("metadata.list_unit_prices", status=500) for _ in range(3)]
    report = hdi_lab.ingest(
        provider="databento", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols="ESH4", start="2024-03-13",
        end="2024-03-14", allow_cost=True, session=dbs,
    )  # fmt: skip
    assert report.inserted > 0
    logged = hdi_lab.sql("SELECT schema, inserted, cost_usd FROM ingest_log ORDER BY id", session=dbs)
    assert logged["schema"].tolist() == ["definition", "ohlcv-1m"] and (logged["inserted"] > 0).all()
    assert logged["cost_usd"].isna().all()
    assert "no unit prices for GLBX.MDP3" in caplog.text
    assert fake.count("metadata.list_unit_prices") == 3  # asked once (with its retries), not once per chunk
    assert hdi_lab.report(session=dbs).cost_usd is None
