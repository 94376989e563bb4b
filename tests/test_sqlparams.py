"""``hdi_lab.frontend.sqlparams.bind``: notebook variables become bound parameters (no database)."""

from __future__ import annotations

import psycopg2.extensions
import pytest

from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.frontend.sqlparams import bind

pytestmark = pytest.mark.unit

EVIL = "x'); drop table trades;--"


def test_colon_and_braces_become_named_placeholders() -> None:
    text, params = bind("SELECT * FROM t WHERE a = :a AND b = {{b}} AND c = {{ a }}", {"a": 1, "b": "x", "z": 0})
    assert text == "SELECT * FROM t WHERE a = %(a)s AND b = %(b)s AND c = %(a)s"
    assert params == {"a": 1, "b": "x"}


def test_casts_and_word_colons_are_left_alone() -> None:
    sql = "SELECT '2024-01-02'::date, x::int, :v::numeric, arr[1:2], arr[lo:hi] FROM t"
    text, params = bind(sql, {"v": 3, "hi": 9})
    assert text == "SELECT '2024-01-02'::date, x::int, %(v)s::numeric, arr[1:2], arr[lo:hi] FROM t"
    assert params == {"v": 3}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ':a {{a}}'",
        "SELECT 'it''s :a'",
        "SELECT E'it\\'s :a'",
        'SELECT ":a {{a}}" FROM t',
        'SELECT "a"":a" FROM t',
        "SELECT $$ :a {{a}} $$",
        "SELECT $fn$ :a $$ :a $fn$",
        "SELECT 1 -- :a {{a}}",
        "SELECT 1 /* :a /* nested :a */ {{a}} */",
    ],
)
def test_literals_identifiers_and_comments_are_not_touched(sql: str) -> None:
    assert bind(sql, {}) == (sql, {})


def test_text_after_literals_and_comments_is_bound() -> None:
    sql = "SELECT 'x' || :a, \"c\" FROM t -- :nope\nWHERE b = {{b}} /* :nope */ AND e = E'\\\\' || :a"
    text, params = bind(sql, {"a": 1, "b": 2})
    assert text == ("SELECT 'x' || %(a)s, \"c\" FROM t -- :nope\nWHERE b = %(b)s /* :nope */ AND e = E'\\\\' || %(a)s")
    assert params == {"a": 1, "b": 2}


def test_percent_is_escaped_everywhere() -> None:
    text, params = bind("SELECT 5 % 2, raw_symbol LIKE 'ES%' -- 100%\nFROM t WHERE x = :x", {"x": 1})
    assert text == "SELECT 5 %% 2, raw_symbol LIKE 'ES%%' -- 100%%\nFROM t WHERE x = %(x)s"
    # what psycopg2 sends: the %% are single % again, the value is a quoted literal
    assert _render(text, params) == "SELECT 5 % 2, raw_symbol LIKE 'ES%' -- 100%\nFROM t WHERE x = 1"


def test_missing_variable_is_named() -> None:
    with pytest.raises(ValidationError, match=r":sym refers to 'sym', which is not defined"):
        bind("SELECT * FROM t WHERE s = :sym", {})
    with pytest.raises(ValidationError, match=r"'lo', which is not defined"):
        bind("SELECT {{lo}}", {"hi": 1})


@pytest.mark.parametrize("expr", ["{{a + 1}}", "{{f()}}", "{{x.y}}", "{{'s'}}", "{{}}"])
def test_braces_take_names_only(expr: str) -> None:
    with pytest.raises(ValidationError, match="takes a name only"):
        bind(f"SELECT {expr}", {"a": 1, "f": print, "x": 1})


@pytest.mark.parametrize("sql", ["SELECT :v AS v", "SELECT {{v}} AS v", "SELECT * FROM t WHERE s = :v"])
def test_injection_attempts_stay_data(sql: str) -> None:
    text, params = bind(sql, {"v": EVIL})
    assert EVIL not in text and params == {"v": EVIL}
    rendered = _render(text, params)
    assert "'x''); drop table trades;--'" in rendered  # one quoted literal, the quote doubled
    assert rendered.count("drop table") == 1


def test_names_that_are_not_variables_cannot_smuggle_sql() -> None:
    # the name itself only ever becomes %(name)s; anything else is not matched as a parameter
    text, params = bind("SELECT :a;drop", {"a": 1, "drop": 2})
    assert text == "SELECT %(a)s;drop" and params == {"a": 1}


def test_unterminated_literal_is_kept_for_the_server_to_reject() -> None:
    assert bind("SELECT ':a", {}) == ("SELECT ':a", {})
    assert bind("SELECT 1 /* :a", {}) == ("SELECT 1 /* :a", {})


def _render(text: str, params: dict[str, object]) -> str:
    """What psycopg2 would send (its client-side formatting, without a connection)."""
    quoted = {k: psycopg2.extensions.adapt(v).getquoted().decode() for k, v in params.items()}
    return text % quoted


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT arr[:n] FROM t",
        'SELECT arr[ :n], (f(x))[:n], "c"[:n] FROM t',
        "SELECT arr[:n][:m], arr[n:], arr[:] FROM t",
        "SELECT m::int[] FROM t",
    ],
)
def test_array_slices_and_array_types_are_sql(sql: str) -> None:
    """``arr[:n]`` slices up to the column ``n``: binding it would make ``arr[%(n)s]``, a subscript."""
    assert bind(sql, {"n": 1, "m": 2}) == (sql, {})


def test_array_constructors_bind_their_elements() -> None:
    text, params = bind("SELECT ARRAY[:a, :b], ARRAY [:a], arr[ARRAY[:a][1]:n]", {"a": 1, "b": 2, "n": 3})
    assert text == "SELECT ARRAY[%(a)s, %(b)s], ARRAY [%(a)s], arr[ARRAY[%(a)s][1]:n]" and params == {"a": 1, "b": 2}


@pytest.mark.integration
def test_slices_and_parameters_together_on_postgresql(session: HdiSession) -> None:
    """Real SQL: slices by a column and by literals, an array constructor and a cast, beside bound values."""
    from hdi_lab.core import retrieval

    sql = """
        WITH t(arr, n) AS (VALUES (ARRAY[10, 20, 30, 40], 2), (ARRAY[5, 6, 7], 1))
        SELECT arr[:n] AS head, arr[2:n + 1] AS mid, arr[n:] AS tail, arr[:]::text AS whole,
               ARRAY[:lo, :hi] AS bounds, :label::text AS label
        FROM t WHERE n >= :lo ORDER BY n
    """
    frame = retrieval.sql(session, *bind(sql, {"n": 99, "lo": 1, "hi": 3, "label": "x'); drop table t;--"}))
    assert [list(v) for v in frame["head"]] == [[5], [10, 20]]
    assert [list(v) for v in frame["mid"]] == [[6], [20, 30]]
    assert [list(v) for v in frame["tail"]] == [[5, 6, 7], [20, 30, 40]]
    assert list(frame["whole"]) == ["{5,6,7}", "{10,20,30,40}"]
    assert [list(v) for v in frame["bounds"]] == [[1, 3], [1, 3]]
    assert set(frame["label"]) == {"x'); drop table t;--"}
