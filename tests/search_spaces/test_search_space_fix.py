"""fix(): a `--set` of a searched field fixes it, and a fixed clamp narrows its partner."""

import math

import pytest

from search_spaces import ParamSpec, fix, load_space

SPACE = load_space("smpl-extended", {})


def test_fix_removes_the_fixed_fields_only():
    space, removed = fix(SPACE, {"lr": 0.03, "mu": 3, "dataset": "moons", "steps": 600})
    assert removed == ["lr", "mu"]
    assert set(space) == set(SPACE) - {"lr", "mu"}
    assert all(space[n] == SPACE[n] for n in space)
    assert "lr" in SPACE  # the input is left alone


def test_fix_nothing():
    space, removed = fix(SPACE, {})
    assert space == SPACE and removed == []


def test_fix_everything_leaves_an_empty_space():
    space, removed = fix(SPACE, dict.fromkeys(SPACE, 1))
    assert space == {} and removed == list(SPACE)


def test_fixed_clamp_max_narrows_clamp_min():
    space, removed = fix(SPACE, {"clamp_max": 1e-4})
    assert removed == ["clamp_max"]
    assert space["clamp_min"].low == 1e-12
    assert space["clamp_min"].high < 1e-4
    assert space["clamp_min"].high == math.nextafter(1e-4, 0.0)


def test_fixed_clamp_max_above_the_range_changes_nothing():
    space, _ = fix(SPACE, {"clamp_max": 0.95})
    assert space["clamp_min"] == SPACE["clamp_min"]


def test_fixed_clamp_min_narrows_clamp_max():
    space, _ = fix(SPACE, {"clamp_min": 0.95})
    assert 0.95 < space["clamp_max"].low < 0.9500001
    assert space["clamp_max"].high == 1.0


@pytest.mark.parametrize(("fixed", "message"), [
    ({"clamp_max": 1e-13}, "`clamp_min`: `low` must be < the fixed clamp_max=1e-13, but got "
                           "low=1e-12."),
    ({"clamp_min": 1.0}, "`clamp_max`: `high` must be > the fixed clamp_min=1.0, but got "
                         "high=1.0."),
])
def test_fixed_clamp_that_leaves_no_room(fixed, message):
    with pytest.raises(ValueError) as info:
        fix(SPACE, fixed)
    assert str(info.value) == message


def test_fixed_clamp_filters_categorical_partner():
    space = {"clamp_min": ParamSpec("categorical", choices=(1e-8, 1e-3, 0.5))}
    narrowed, _ = fix(space, {"clamp_max": 0.1})
    assert narrowed["clamp_min"].choices == (1e-8, 1e-3)
    with pytest.raises(ValueError, match="must hold a value < the fixed clamp_max=1e-09"):
        fix(space, {"clamp_max": 1e-9})
