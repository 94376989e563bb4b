"""One declaration of every option (``hdi_lab.frontend.options``): the ``hdi`` CLI and the magics build their
parsers from it, so what they share is equal by construction, and the differences are the declared ones."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ROOT

from hdi_lab.frontend import cli, options
from hdi_lab.frontend.magics import HdiMagics
from hdi_lab.schemas import ALIGNS, INTERVALS, Schema, SType
from hdi_lab.storage.db import ServerInfo

pytestmark = pytest.mark.unit

#: what add_argument keeps of an option, compared between the parsers
FIELDS = ("option_strings", "dest", "help", "choices", "default", "metavar", "type", "nargs", "required", "const")


def subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def cli_parser(*path: str) -> argparse.ArgumentParser:
    return subparser(cli.build_parser(), *path)


def magic_parser(name: str) -> argparse.ArgumentParser:
    return getattr(HdiMagics, name).parser  # type: ignore[no-any-return]


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by dest (argparse's own -h and the subcommands left out)."""
    return {a.dest: a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)}


def described(action: argparse.Action) -> dict[str, Any]:
    out = {f: getattr(action, f) for f in FIELDS}
    out["choices"] = None if action.choices is None else tuple(action.choices)
    return out


def declared(opt: options.Option) -> dict[str, Any]:
    """What ``opt`` looks like once added to a parser."""
    return described(actions(options.add(argparse.ArgumentParser(add_help=False), opt))[opt.name])


def every_declaration() -> list[options.Option]:
    lists = [
        options.GLOBAL,
        options.INGEST,
        options.QUERY_CLI,
        options.QUERY_MAGIC,
        options.FEATURES_COMPUTE,
        options.PUBLISH,
        options.COMPARE,
        options.MAGIC,
        (options.PUBLISH_SET_MAGIC,),
        options.WATCH,
        options.WATCH_MAGIC,
        options.GAPS_CLI,
        options.GAPS_MAGIC,
    ]
    return [*options.OPTIONS.values(), *(options.option(ref) for refs in lists for ref in refs)]


CLI_COMMANDS = [
    ("ingest",),
    ("query",),
    ("quarantine", "list"),
    ("quarantine", "show"),
    ("quarantine", "retry"),
    ("db",),
    ("config",),
    ("features", "compute"),
    ("features", "publish"),
    ("compare",),
    ("demo",),
    ("watch", "add"),
    ("watch", "list"),
    ("watch", "remove"),
    ("gaps",),
]
MAGICS = ["hdi_ingest", "hdi_query", "hdi_status", "hdi_config", "hdi_symbols", "hdi_publish", "hdi_watch", "hdi_gaps"]


@pytest.mark.parametrize(
    "parser",
    [
        pytest.param(cli_parser, id="hdi"),
        *(pytest.param(lambda p=p: cli_parser(*p), id=" ".join(p)) for p in CLI_COMMANDS),
        *(pytest.param(lambda m=m: magic_parser(m), id=m) for m in MAGICS),
    ],
)
def test_every_option_of_the_cli_and_the_magics_is_declared_in_options(
    parser: Callable[[], argparse.ArgumentParser],
) -> None:
    known = [declared(opt) for opt in every_declaration()]
    for dest, action in actions(parser()).items():
        assert described(action) in known, f"{dest}: not built from hdi_lab.frontend.options"


@pytest.mark.parametrize(
    ("command", "magic", "shared"),
    [
        (("ingest",), "hdi_ingest", options.INGEST),
        (("query",), "hdi_query", options.QUERY),
        (("features", "publish"), "hdi_publish", options.PUBLISH),
        (("gaps",), "hdi_gaps", options.GAPS),
    ],
)
def test_shared_options_are_equal_in_the_cli_and_the_magic(
    command: tuple[str, ...], magic: str, shared: tuple[options.OptionRef, ...]
) -> None:
    in_cli, in_magic = actions(cli_parser(*command)), actions(magic_parser(magic))
    names = [options.option(ref).name for ref in shared]
    assert names and set(names) <= set(in_cli) & set(in_magic)
    for name in names:
        assert described(in_cli[name]) == described(in_magic[name]), name
    # the rest of each parser is what is declared as theirs alone
    magic_only = {options.option(ref).name for ref in options.MAGIC}
    assert set(in_magic) - set(in_cli) <= magic_only | {"indicators"}


def test_watch_add_options_are_equal_in_the_cli_and_the_magic() -> None:
    """``%hdi_watch`` is one parser for every action: add's options, the action and the remove target."""
    in_cli, in_magic = actions(cli_parser("watch", "add")), actions(magic_parser("hdi_watch"))
    names = [options.option(ref).name for ref in options.WATCH]
    assert set(in_cli) == set(names) and set(names) <= set(in_magic)
    for name in names:
        assert described(in_cli[name]) == described(in_magic[name]), name
    assert in_cli["provider"].default is None and in_cli["provider"].choices == options.PROVIDERS
    magic_only = {options.option(ref).name for ref in options.MAGIC}
    assert set(in_magic) - set(in_cli) == magic_only | {"action", "target"}
    assert described(in_magic["action"])["choices"] == options.WATCH_ACTIONS == ("add", "list", "remove")
    remove_cli, target = actions(cli_parser("watch", "remove"))["target"], in_magic["target"]
    assert remove_cli.nargs is None and target.nargs == "?"  # the magic's list and add take no target
    assert (remove_cli.metavar, remove_cli.help) == (target.metavar, target.help) == ("ID|NAME", remove_cli.help)


def test_the_declared_differences_of_query_and_publish() -> None:
    query_cli, query_magic = actions(cli_parser("query")), actions(magic_parser("hdi_query"))
    for name, metavar in (("schema", "SCHEMA"), ("symbols", "SYMBOLS"), ("start", "START"), ("end", "END")):
        assert not query_magic[name].option_strings and query_magic[name].nargs == "?"  # cell form: none given
        assert query_magic[name].metavar == metavar and query_magic[name].help == query_cli[name].help
        assert query_magic[name].choices == query_cli[name].choices
    assert not query_cli["schema"].option_strings and query_cli["schema"].required
    assert all(query_cli[n].option_strings == [f"--{n}"] and query_cli[n].required for n in ("symbols", "start", "end"))
    publish_cli, publish_magic = actions(cli_parser("features", "publish")), actions(magic_parser("hdi_publish"))
    assert publish_cli["feature_set"].option_strings == ["--set"] and publish_cli["feature_set"].required
    assert not publish_magic["feature_set"].option_strings
    assert publish_magic["feature_set"].help == publish_cli["feature_set"].help


def test_choice_lists_come_from_the_enums() -> None:
    assert tuple(s.value for s in Schema) == options.SCHEMAS
    assert options.BAR_SCHEMAS == ("ohlcv-1s", "ohlcv-5s", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d")
    assert tuple(s.value for s in SType) == options.STYPES
    ingest = actions(cli_parser("ingest"))
    assert described(ingest["schema"])["choices"] == options.SCHEMAS
    assert ingest["schema"].help == f"one of {', '.join(options.SCHEMAS)}"
    assert ingest["stype_in"].help == f"one of {', '.join(options.STYPES)} (default raw_symbol)"
    assert described(actions(cli_parser("compare"))["schema"])["choices"] == options.BAR_SCHEMAS
    align = actions(cli_parser("query"))["align"]
    assert described(align)["choices"] == options.ALIGNS == ALIGNS == ("utc", "session")
    assert align.default == "utc"


def test_interval_help_lists_the_intervals() -> None:
    text = "bar interval: 1s, 5s, 1m, 5m, 15m, 1h or 1d (default 1d)"
    assert options.interval_help("1d") == text
    assert all(name in text for name in INTERVALS)
    for parser in (cli_parser("features", "compute"), cli_parser("features", "publish"), magic_parser("hdi_publish")):
        interval = actions(parser)["interval"]
        assert interval.help == text and interval.default == "1d" and interval.default in INTERVALS
    assert text in " ".join((HdiMagics.hdi_publish.__doc__ or "").split())  # %hdi_publish? shows it (wrapped)
    rollup = actions(cli_parser("query"))["interval"].help
    assert rollup == "roll bars up into buckets: 5m, 15m, 1h, 1d... (bars only)"


def test_magic_help_is_generated_from_the_declarations() -> None:
    doc = HdiMagics.hdi_ingest.__doc__ or ""
    assert doc.startswith("::\n\n  %hdi_ingest [--provider PROVIDER]")
    assert "Fetch, validate and load market data" in doc  # the docstring stays the description
    for opt in map(options.option, options.INGEST):
        assert opt.help is not None and opt.help[:30] in doc.replace("\n" + " " * 24, " ")


def test_an_unknown_option_name_fails_when_declared() -> None:
    with pytest.raises(KeyError):
        options.magic_arguments("no_such_option")
    with pytest.raises(KeyError):
        options.add(argparse.ArgumentParser(), "symbols", "no_such_option")


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("7", 7), (" 12 ", 12)])
def test_count_takes_whole_numbers(text: str, expected: int) -> None:
    assert options.count(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "-1 is negative: give 0 or more"),
        ("many", "'many' is not a whole number: give 0 or more"),
        ("1.5", "'1.5' is not a whole number: give 0 or more"),
    ],
)
def test_count_refuses_the_rest_in_one_line(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        options.count(text)


def test_count_options_refuse_negatives_in_both_front_ends() -> None:
    limits = [
        actions(cli_parser("query"))["limit"],
        actions(cli_parser("quarantine", "list"))["limit"],
        actions(cli_parser("compare"))["limit"],
        actions(magic_parser("hdi_symbols"))["limit"],
        actions(magic_parser("hdi_status"))["recent"],
    ]
    assert all(a.type is options.count for a in limits)


def test_server_label() -> None:
    assert ServerInfo("16.4", "2.17.2", True).label == "TimescaleDB 2.17.2"
    assert ServerInfo("16.4", None, True).label == "plain PostgreSQL"
    assert ServerInfo("16.4", None, False).label == "plain PostgreSQL"


def test_widgets_offer_the_declared_choices() -> None:
    from hdi_lab.frontend.widgets import BAR_SCHEMAS, IngestForm

    assert BAR_SCHEMAS == (
        ("1 second", "ohlcv-1s"),
        ("5 seconds", "ohlcv-5s"),
        ("1 minute", "ohlcv-1m"),
        ("1 hour", "ohlcv-1h"),
        ("1 day", "ohlcv-1d"),
    )
    form = IngestForm(None)  # type: ignore[arg-type]  # the form reads its session only when run
    assert form.provider.options == options.PROVIDERS
    assert form.schema.options[1:] == tuple((s, s) for s in options.SCHEMAS)
    assert form.stype_in.options == options.STYPES and form.stype_in.value == options.OPTIONS["stype_in"].default


def test_options_import_nothing_heavy() -> None:
    code = "import json, sys; import hdi_lab.frontend.options; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(proc.stdout))
    assert not loaded & {"IPython", "pandas", "numpy", "psycopg2", "ipywidgets"}
