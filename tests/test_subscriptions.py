"""Subscriptions (``hdi watch``, ``hdi_lab.watch`` / ``watches`` / ``unwatch``, ``%hdi_watch``) stored in the
test PostgreSQL: add, list, remove, duplicates, bad input, and the list seen from another session."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_databento import KEY, FakeDatabento
from helpers import TestingShell, make_session, run_cli
from IPython.core.error import UsageError

import hdi_lab
from hdi_lab.core import ingestion
from hdi_lab.core.session import HdiSession
from hdi_lab.core.subscriptions import COLUMNS, Subscription
from hdi_lab.errors import ConfigError, ValidationError
from hdi_lab.schemas import Schema, SType

pytestmark = pytest.mark.integration

ES = dict(provider="sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02")


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


def watch(session: HdiSession, **kw: Any) -> Subscription:
    return hdi_lab.watch(session=session, **{**ES, **kw})


# --- the Python API ----------------------------------------------------------------------------------


def test_watch_stores_a_subscription_every_session_sees(session: HdiSession, pg_url: str) -> None:
    before = pd.Timestamp.now(tz="UTC")
    sub = watch(session, symbols="NQH4, ESH4", name="index_futures", options={"after": ["features"]})
    assert (sub.name, sub.provider, sub.dataset, sub.schema, sub.stype_in) == (
        "index_futures",
        "sample",
        "GLBX.MDP3",  # the dataset the provider planned with, though none was given
        Schema.OHLCV_1M,
        SType.RAW_SYMBOL,
    )
    assert sub.symbols == ("ESH4", "NQH4")  # sorted: one subscription whatever the order given
    assert sub.since == dt.date(2024, 1, 2) and sub.options == {"after": ["features"]}
    assert str(sub.created_at.tz) == "UTC" and before - pd.Timedelta(seconds=5) <= sub.created_at
    assert sub.created_at <= pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=5)
    assert (
        str(sub) == "subscription 1 (index_futures): sample GLBX.MDP3 ohlcv-1m ESH4,NQH4 (raw_symbol) since 2024-01-02"
    )

    other = make_session(pg_url, session.schema)  # another user, or the scheduler
    try:
        listed = hdi_lab.watches(session=other)
        assert list(listed.columns) == list(COLUMNS)
        assert listed.to_dict("records") == [
            {
                "id": sub.id,
                "name": "index_futures",
                "provider": "sample",
                "dataset": "GLBX.MDP3",
                "schema": "ohlcv-1m",
                "stype_in": "raw_symbol",
                "symbols": "ESH4,NQH4",
                "since": dt.date(2024, 1, 2),
                "created_at": sub.created_at,
                "options": {"after": ["features"]},
            }
        ]
        assert hdi_lab.unwatch("index_futures", session=other) == sub
    finally:
        other.close()
    assert hdi_lab.watches(session=session).empty


def test_the_request_of_a_subscription_is_an_ingest_from_since(session: HdiSession) -> None:
    sub = watch(session)
    req = sub.request("2024-01-05", dry_run=True)
    assert (req.provider, req.dataset, req.schema, req.symbols, req.stype_in) == (
        "sample",
        "GLBX.MDP3",
        Schema.OHLCV_1M,
        ("ESH4",),
        SType.RAW_SYMBOL,
    )
    assert (req.start, req.end) == (pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-05", tz="UTC"))
    report = ingestion.run(req, session)
    assert report.dry_run and len(report.chunks) == 3  # one per day of [since, end)


def test_adding_the_same_subscription_again_changes_nothing(session: HdiSession) -> None:
    first = watch(session, name="es")
    again = watch(session, name="es", symbols=["ESH4"], since=dt.date(2024, 1, 2))
    assert again == first
    assert len(hdi_lab.watches(session=session)) == 1
    second = watch(session, symbols="NQH4")
    assert second.id == first.id + 1  # adding the existing one again drew no id


def test_concurrent_adds_of_one_subscription_store_one(session: HdiSession, pg_url: str) -> None:
    sessions = [make_session(pg_url, session.schema) for _ in range(4)]
    watch(session, symbols="NQH4")  # migrated once, before the race
    try:
        with ThreadPoolExecutor(len(sessions)) as pool:
            added = list(pool.map(lambda s: watch(s, name="es"), sessions))
    finally:
        for s in sessions:
            s.close()
    assert len({a.id for a in added}) == 1
    assert hdi_lab.watches(session=session)["name"].tolist() == [None, "es"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"since": "2024-01-03"}, r"already subscribed as subscription \d+ \(es\).*other settings.*hdi watch remove"),
        ({"name": None}, r"already subscribed as subscription \d+ \(es\)"),
        ({"options": {"x": 1}}, r"already subscribed as subscription \d+ \(es\)"),
        ({"symbols": "NQH4"}, r"name='es' is taken by subscription \d+ \(es\).*choose another name"),
    ],
)
def test_the_same_request_or_name_with_other_settings_is_an_error(
    session: HdiSession, change: dict[str, Any], message: str
) -> None:
    watch(session, name="es")
    with pytest.raises(ValidationError, match=message):
        watch(session, **{"name": "es", **change})
    assert len(hdi_lab.watches(session=session)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provider": "nope"}, "provider='nope' is not known: use one of file, sample, databento, ib"),
        ({"provider": "file"}, "provider='file' reads local files.*one of sample, databento, ib"),
        ({"schema": "ohlcv-2m"}, "schema='ohlcv-2m' is not valid: use one of ohlcv-1s"),
        ({"schema": None}, "schema is required: use one of ohlcv-1s"),
        ({"stype_in": "isin"}, "stype_in='isin' is not valid: use one of raw_symbol, parent"),
        ({"symbols": " , "}, "symbols is required: give one or more symbols"),
        ({"symbols": "ZZZ9"}, "unknown symbol 'ZZZ9'"),
        ({"dataset": "XNAS.ITCH"}, "dataset='XNAS.ITCH' does not match symbols ESH4"),
        ({"since": None}, "since is required: give a date like 2024-01-02"),
        ({"since": "soon"}, "since='soon' is not a date or timestamp"),
        ({"name": "42"}, "name='42' is all digits, which reads as an id"),
        ({"options": ["after"]}, "options must be a mapping"),
        ({"options": {"when": dt.date(2024, 1, 2)}}, "options cannot be stored as JSON"),
    ],
)
def test_bad_subscriptions_are_one_line_errors_and_store_nothing(
    session: HdiSession, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        watch(session, **change)
    assert "\n" not in str(info.value)
    assert hdi_lab.watches(session=session).empty


def test_ib_subscriptions_are_validated_by_the_contract_parser(session: HdiSession) -> None:
    sub = watch(session, provider="ib", symbols="ES:FUT:CME:USD:202403")
    assert (sub.dataset, sub.symbols) == ("IB", ("ES:FUT:CME:USD:202403",))
    with pytest.raises(ValidationError, match="ib provider"):
        watch(session, provider="ib", schema="trades", symbols="ES:FUT:CME:USD:202403")


def test_databento_subscription_through_the_gateway(session: HdiSession, tmp_path: Path, monkeypatch: Any) -> None:
    """The issue's example against the fake Databento gateway: planned (dataset and range checked), not fetched."""
    gw = FakeDatabento(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(gw.ca_path))
    s = HdiSession(session.settings.replace(databento_api_key=KEY, databento_gateway=gw.url))
    try:
        es = dict(provider="databento", dataset="glbx.mdp3", schema="ohlcv-1m", symbols="ES.c.0", stype_in="continuous")
        sub = hdi_lab.watch(session=s, since="2020-01-01", **es)  # type: ignore[arg-type]
        assert (sub.dataset, sub.stype_in, sub.symbols) == ("GLBX.MDP3", SType.CONTINUOUS, ("ES.c.0",))
        with pytest.raises(ValidationError, match="outside the range Databento offers"):
            hdi_lab.watch(session=s, since="2010-01-01", **es)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="dataset='GLBX' is not a Databento dataset"):
            hdi_lab.watch(session=s, since="2020-01-01", **{**es, "dataset": "GLBX"})  # type: ignore[arg-type]
    finally:
        s.close()
        gw.close()
    with pytest.raises(ConfigError):  # no key: the request cannot be checked
        hdi_lab.watch(session=session, since="2020-01-01", **{**es, "dataset": "XNAS.ITCH"})  # type: ignore[arg-type]
    assert len(hdi_lab.watches(session=session)) == 1


def test_unwatch_by_id_or_name_and_errors(session: HdiSession) -> None:
    a, b = watch(session, name="es"), watch(session, symbols="NQH4")
    assert hdi_lab.unwatch(b.id, session=session) == b
    assert hdi_lab.unwatch(str(a.id), session=session) == a
    for which, message in ((a.id, rf"no subscription '{a.id}'"), ("es", "no subscription 'es'"), (" ", "give the id")):
        with pytest.raises(ValidationError, match=message):
            hdi_lab.unwatch(which, session=session)


# --- hdi watch -----------------------------------------------------------------------------------------

CLI_ES = ["watch", "add", "--provider", "sample", "--schema", "ohlcv-1m", "--symbols", "ESH4", "--since", "2024-01-02"]


def test_cli_add_list_remove(hdi_env: dict[str, str], session: HdiSession) -> None:
    code, out, err = run_cli(["watch", "list"])
    assert (code, out.strip(), err) == (0, "(no subscriptions: hdi watch add ...)", "")
    code, out, err = run_cli([*CLI_ES, "--name", "es"])
    assert code == 0, err
    assert out == "added subscription 1 (es): sample GLBX.MDP3 ohlcv-1m ESH4 (raw_symbol) since 2024-01-02\n"
    code, out, _ = run_cli([*CLI_ES, "--name", "es"])
    assert code == 0 and out.startswith("already subscribed: subscription 1 (es)")
    assert run_cli([*CLI_ES[:-3], "NQH4", "--since", "2024-01-02", "--stype-in", "raw_symbol"])[0] == 0
    code, out, _ = run_cli(["watch", "list"])
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == list(COLUMNS) and len(lines) == 3
    assert lines[1].split()[:8] == ["1", "es", "sample", "GLBX.MDP3", "ohlcv-1m", "raw_symbol", "ESH4", "2024-01-02"]
    assert hdi_lab.watches(session=session)["symbols"].tolist() == ["ESH4", "NQH4"]  # what the CLI stored
    code, out, _ = run_cli(["watch", "remove", "es"])
    assert code == 0 and out.startswith("removed subscription 1 (es)")
    code, out, _ = run_cli(["watch", "remove", "2"])
    assert code == 0 and out.startswith("removed subscription 2:")
    assert hdi_lab.watches(session=session).empty


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "remove", "es"], "hdi: error: no subscription 'es': see `hdi watch list`"),
        ([*CLI_ES[:2], *CLI_ES[4:]], "hdi: error: provider is required: use one of sample, databento, ib"),
        ([*CLI_ES[:-2]], "hdi: error: since is required"),
        ([*CLI_ES, "--name", "7"], "hdi: error: name='7' is all digits"),
        ([*CLI_ES[:-4], "--since", "2024-01-02"], "hdi: error: symbols is required"),
    ],
)
def test_cli_errors_are_one_line(hdi_env: dict[str, str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(argv)
    assert (code, out) == (1, "")
    assert err.startswith(message) and err.count("\n") == 1, err


def test_cli_refuses_an_unknown_schema_and_a_remove_without_target(hdi_env: dict[str, str]) -> None:
    for argv in ([*CLI_ES[:5], "ohlcv-2m", *CLI_ES[6:]], ["watch", "remove"]):
        with pytest.raises(SystemExit) as info:
            run_cli(argv)
        assert info.value.code == 2


# --- %hdi_watch ------------------------------------------------------------------------------------------


MAGIC_ES = "--provider sample --schema ohlcv-1m --symbols ESH4 --since 2024-01-02"


def test_magic_add_list_remove(ip: TestingShell, session: HdiSession) -> None:
    sub = ip.run_cell(f"%hdi_watch add {MAGIC_ES} --name es -o es").result
    assert isinstance(sub, Subscription) and ip.user_ns["es"] == sub
    assert ip.run_cell(f"%hdi_watch add {MAGIC_ES} --name es").result == sub
    listed = ip.run_cell("%hdi_watch list").result
    assert listed.equals(hdi_lab.watches(session=session))  # the magic's session and another see one list
    assert listed["name"].tolist() == ["es"]
    assert ip.run_cell("%hdi_watch remove es").result == sub
    assert hdi_lab.watches(session=session).empty


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("list --since 2024-01-02", "--since: only %hdi_watch add takes these"),
        ("remove es --provider sample", "--provider: only %hdi_watch add takes these"),
        ("remove", "%hdi_watch remove: give the subscription's ID or NAME"),
        ("list es", "%hdi_watch list: only remove takes ID|NAME"),
        ("watch", "argument ACTION: invalid choice: 'watch'"),
    ],
)
def test_magic_usage_errors(ip: TestingShell, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ip.run_cell(f"%hdi_watch {line}")


def test_magic_errors_are_one_line(ip: TestingShell) -> None:
    with pytest.raises(UsageError, match=r"^ValidationError: no subscription 'es'") as info:
        ip.run_cell("%hdi_watch remove es")
    assert "(add --verbose for the traceback)" in str(info.value)
    with pytest.raises(ValidationError, match="provider='file' reads local files"):
        ip.run_cell(f"%hdi_watch add {MAGIC_ES.replace('sample', 'file')} --verbose")


# --- the cron schedule, validated when added ---------------------------------------------------------------

BAD_CRONS = [
    ("61 * * * *", r"cron '61 \* \* \* \*' is not valid \(.*59.*\): give five cron fields in UTC"),
    ("0 22 * *", r"cron '0 22 \* \*' has 4 fields: give five cron fields in UTC"),
    ("30 22 * * funday", r"cron '30 22 \* \* funday' is not valid"),
    ("", r"cron '' is not a cron expression"),
]


@pytest.mark.parametrize(("cron", "message"), BAD_CRONS)
def test_a_bad_cron_is_refused_when_added_and_nothing_is_stored(session: HdiSession, cron: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        watch(session, cron=cron)
    assert "e.g. '30 22 * * mon-fri'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValidationError, match=message):
        watch(session, options={"cron": cron})
    assert hdi_lab.watches(session=session).empty


def test_a_valid_cron_is_stored_as_the_scheduler_reads_it(session: HdiSession) -> None:
    from hdi_lab.core.scheduler import schedule_of

    sub = watch(session, cron="  30  22 * *   mon-fri ", name="es")
    assert sub.options == {"cron": "30 22 * * mon-fri"} and schedule_of(sub) == "30 22 * * mon-fri UTC"
    assert watch(session, options={"cron": "30 22 * * mon-fri"}, name="es") == sub  # the same: nothing new
    six = watch(session, symbols="NQH4", cron="*/5 * * * * *")
    assert six.options["cron"] == "*/5 * * * * *"
    with pytest.raises(ValidationError, match="cron is given twice"):
        watch(session, symbols="AAPL", cron="0 1 * * *", options={"cron": "0 2 * * *"})


@pytest.mark.parametrize(("cron", "message"), BAD_CRONS[:3])
def test_cli_refuses_a_bad_cron_in_one_line(hdi_env: dict[str, str], cron: str, message: str) -> None:
    code, out, err = run_cli([*CLI_ES, "--cron", cron])
    assert (code, out) == (1, "") and err.count("\n") == 1, err
    assert err.startswith("hdi: error: cron ") and "e.g. '30 22 * * mon-fri'" in err
    code, out, err = run_cli([*CLI_ES, "--cron", "0 23 * * mon-fri", "--name", "es"])
    assert code == 0, err
    assert hdi_lab.watches(session=None)["options"].tolist() == [{"cron": "0 23 * * mon-fri"}]


def test_magic_refuses_a_bad_cron(ip: TestingShell) -> None:
    with pytest.raises(UsageError, match=r"^ValidationError: cron '61 \* \* \* \*' is not valid"):
        ip.run_cell(f"%hdi_watch add {MAGIC_ES} --cron '61 * * * *'")
    sub = ip.run_cell(f"%hdi_watch add {MAGIC_ES} --cron '30 22 * * mon-fri'").result
    assert sub.options == {"cron": "30 22 * * mon-fri"}
