"""fix(): a `--set` of a searched field fixes it; a fixed clamp must clear its partner's range."""

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


def test_fixed_clamp_clear_of_its_partner_changes_nothing():
    for fixed in ({"clamp_max": 0.95}, {"clamp_max": 2e-3}, {"clamp_min": 0.5}):
        space, removed = fix(SPACE, fixed)
        assert removed == list(fixed)
        assert space == {n: s for n, s in SPACE.items() if n not in fixed}


@pytest.mark.parametrize(("fixed", "message"), [
    # inside the searched range: rejected, not narrowed (one rule: ranges never overlap)
    ({"clamp_max": 1e-4}, "--set: `clamp_min`: `high` must be < the fixed clamp_max=0.0001 "
                          "(clamp ranges must not overlap: clamp_min < clamp_max for every "
                          "sample), but got high=0.001."),
    ({"clamp_max": 1e-3}, "--set: `clamp_min`: `high` must be < the fixed clamp_max=0.001 "
                          "(clamp ranges must not overlap: clamp_min < clamp_max for every "
                          "sample), but got high=0.001."),
    ({"clamp_min": 0.95}, "--set: `clamp_max`: `low` must be > the fixed clamp_min=0.95 "
                          "(clamp ranges must not overlap: clamp_min < clamp_max for every "
                          "sample), but got low=0.9."),
])
def test_fixed_clamp_inside_its_partners_range(fixed, message):
    with pytest.raises(ValueError) as info:
        fix(SPACE, fixed)
    assert str(info.value) == message


def test_fixed_clamp_against_categorical_partner():
    space = {"clamp_min": ParamSpec("categorical", choices=(1e-8, 1e-3, 0.5))}
    assert fix(space, {"clamp_max": 0.6})[0] == space
    with pytest.raises(ValueError, match=r"`choices` must be < the fixed clamp_max=0.1 .*"
                                         r"but got choices=\[1e-08, 0.001, 0.5\]\.$"):
        fix(space, {"clamp_max": 0.1})
