from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from myspinbot.settings.env import env_bool, env_float, env_int, env_list, env_str, env_url


def test_env_str_returns_value_default_or_fails_when_required() -> None:
    assert env_str("A", environ={"A": "  x  "}) == "x"
    assert env_str("A", "d", environ={}) == "d"
    assert env_str("A", "d", environ={"A": "   "}) == "d"
    with pytest.raises(ImproperlyConfigured, match="^A must be set$"):
        env_str("A", environ={})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_env_bool_accepts_the_usual_spellings(raw: str, expected: bool) -> None:
    assert env_bool("B", environ={"B": raw}) is expected


@pytest.mark.parametrize("raw", ["2", "yep", "truee", "t"])
def test_env_bool_rejects_anything_else(raw: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"^B={raw!r} is not a boolean"):
        env_bool("B", False, environ={"B": raw})


def test_env_int_parses_and_checks_bounds() -> None:
    assert env_int("N", environ={"N": "42"}) == 42
    assert env_int("N", 7, environ={}) == 7
    with pytest.raises(ImproperlyConfigured, match="^N='4.5' is not an integer$"):
        env_int("N", 1, environ={"N": "4.5"})
    with pytest.raises(ImproperlyConfigured, match="^N='ten' is not an integer$"):
        env_int("N", 1, environ={"N": "ten"})
    with pytest.raises(ImproperlyConfigured, match="^N=0 is below the minimum 1$"):
        env_int("N", 1, min_value=1, environ={"N": "0"})
    with pytest.raises(ImproperlyConfigured, match="^N=11 is above the maximum 10$"):
        env_int("N", 1, max_value=10, environ={"N": "11"})


def test_env_float_rejects_text_and_non_finite_values() -> None:
    assert env_float("F", environ={"F": "0.25"}) == 0.25
    with pytest.raises(ImproperlyConfigured, match="^F='fast' is not a number$"):
        env_float("F", 1.0, environ={"F": "fast"})
    with pytest.raises(ImproperlyConfigured, match="^F='nan' is not a finite number$"):
        env_float("F", 1.0, environ={"F": "nan"})
    with pytest.raises(ImproperlyConfigured, match="^F=-1.0 is below the minimum 0$"):
        env_float("F", 1.0, min_value=0, environ={"F": "-1"})


def test_env_list_splits_and_rejects_empty_items() -> None:
    assert env_list("L", environ={"L": "a, b,c"}) == ["a", "b", "c"]
    assert env_list("L", ["x"], environ={}) == ["x"]
    with pytest.raises(ImproperlyConfigured, match="^L='a,,b' has an empty item$"):
        env_list("L", environ={"L": "a,,b"})


def test_env_url_checks_scheme_host_and_port_and_hides_passwords() -> None:
    assert env_url("U", schemes=("redis",), environ={"U": "redis://h:6379/0"}) == "redis://h:6379/0"
    assert env_url("U", None, schemes=("redis",), environ={}) is None
    with pytest.raises(ImproperlyConfigured, match="must use one of the schemes redis"):
        env_url("U", schemes=("redis",), environ={"U": "http://h"})
    with pytest.raises(ImproperlyConfigured, match="names no host"):
        env_url("U", schemes=("redis",), environ={"U": "redis://"})
    with pytest.raises(ImproperlyConfigured, match="has an invalid port") as error:
        env_url("U", schemes=("postgres",), environ={"U": "postgres://u:hunter2@h:99999/db"})
    assert "hunter2" not in str(error.value)
