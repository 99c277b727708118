"""Read a space (a preset or a YAML file) and fix the fields that `--set` pins.

A space file is a flat mapping of SMPLConfig field names to specs:

    lr:               {type: float, low: 1.0e-4, high: 0.3, log: true}
    uda_warmup_steps: {type: int, low: 1, high: steps, log: true}   # steps: the config's
    feedback_sign:    {type: categorical, choices: [paper, code]}

plus an optional `extends: <preset>` whose params come first (a param named again
replaces the preset's). The presets are the files in `presets/`; they are the only copy
of the preset ranges.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from search_spaces.constraints import UNSEARCHABLE, check_clamp_order, check_space
from search_spaces.spec import KEYS, ParamSpec
from smpl_core.config import SMPLConfig, unknown_key_message
from smpl_core.errors import ConfigError

PRESET_DIR = Path(__file__).with_name("presets")
STEPS = "steps"  # a bound written `steps` is the base config's step budget


def presets() -> list[str]:
    """Preset names: `smpl`, `smpl-extended` (the stems of presets/*.yaml)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_space(preset_or_path: str, base: dict[str, Any]) -> dict[str, ParamSpec]:
    """The validated space of a preset name or YAML file, its `steps` bounds resolved
    against `base` (a flat SMPLConfig dict; missing fields take their defaults)."""
    full = SMPLConfig.from_dict({**SMPLConfig().to_dict(), **base}).to_dict()
    path, src = _locate(preset_or_path)
    seen = (preset_or_path,) if preset_or_path in presets() else ()
    space = _read_space(path, src, full["steps"], seen)
    check_space(space, full, src)
    return space


def fix(space: dict[str, ParamSpec], fixed: dict[str, Any]) -> tuple[dict[str, ParamSpec],
                                                                     list[str]]:
    """Drop the searched fields that `fixed` pins (a `--set` wins over the space) and return
    (the rest, the dropped names in space order). A pinned clamp must lie on its side of
    its searched partner's whole range (the clamp rule of `constraints`)."""
    removed = [name for name in space if name in fixed]
    kept = {name: spec for name, spec in space.items() if name not in fixed}
    check_clamp_order(kept, fixed, "--set", "the fixed")
    return kept, removed


# --- finding and reading files --------------------------------------------------------
def _locate(arg: str) -> tuple[Path, str]:
    names = presets()
    if arg in names:
        return PRESET_DIR / f"{arg}.yaml", f"presets/{arg}.yaml"
    path = Path(arg).expanduser()
    if path.is_file():
        return path, arg
    listed = ", ".join(names)
    if path.suffix in (".yaml", ".yml") or "/" in arg or path.exists():
        why = "a directory" if path.exists() else "no such file"
        raise ConfigError(f"`--space` must be a preset ({listed}) or an existing YAML file, "
                          f"but got --space={arg!r} ({why}).")
    close = difflib.get_close_matches(arg, names, n=1, cutoff=0.5)
    hint = f"; did you mean `{close[0]}`?" if close else "."
    raise ConfigError(f"`--space` must be a preset ({listed}) or a YAML file, but got "
                      f"--space={arg!r}{hint}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice (PyYAML keeps the last one silently, which
    would search a range the user thinks they replaced)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # unhashable keys: PyYAML's own check below names them
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"`{key}` is given twice (first on line {seen[key]})",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, src: str) -> dict[Any, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{src}:{mark.line + 1}" if mark is not None else src
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"malformed YAML in {where}: {problem}") from None
    except OSError as e:
        raise ConfigError(f"`--space` must be a readable file, but got --space={src!r} "
                          f"({e.strerror}).") from None
    if not isinstance(data, dict) or not data:
        got = "nothing" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{src} must hold a non-empty mapping of config fields to search "
                          f"specs, but holds {got}.")
    return data


def _read_space(path: Path, src: str, steps: int, seen: tuple[str, ...]) -> dict[str, ParamSpec]:
    data = _read_yaml(path, src)
    space: dict[str, ParamSpec] = {}
    parent = data.pop("extends", None)
    if parent is not None:
        if parent not in presets():
            raise ConfigError(f"{src}: `extends` must be a preset ({', '.join(presets())}), "
                              f"but got extends={parent!r}.")
        if parent in seen:  # a preset extending itself, directly or not
            raise ConfigError(f"{src}: `extends` must not loop back to {parent}, but got "
                              f"extends={parent!r} (chain: {' -> '.join(seen)}).")
        space.update(_read_space(PRESET_DIR / f"{parent}.yaml", f"presets/{parent}.yaml",
                                 steps, seen + (parent,)))
    for name, raw in data.items():
        space[name] = _parse_param(src, name, raw, steps)
    return space


def _parse_param(src: str, name: Any, raw: Any, steps: int) -> ParamSpec:
    fields = SMPLConfig.field_names()
    if name not in fields:
        raise ConfigError(f"{src}: {unknown_key_message(str(name), fields, 'config')}")
    if name in UNSEARCHABLE:
        raise ConfigError(f"{src}: `{name}` cannot be searched ({UNSEARCHABLE[name]}); set it "
                          f"with --set {name}=...")
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: `{name}` must be a mapping of {', '.join(KEYS)}, but got "
                          f"{name}={raw!r}.")
    for key in raw:
        if key not in KEYS:
            message = unknown_key_message(str(key), list(KEYS), "param")
            raise ConfigError(f"{src}: `{name}`: {message}")
    kw = dict(raw)
    symbolic = [k for k in ("low", "high") if kw.get(k) == STEPS]
    for k in symbolic:
        kw[k] = steps
    kw.setdefault("type", None)
    try:
        return ParamSpec(**kw)
    except ValueError as e:
        message = str(e).removesuffix(".")
        if symbolic:  # say where a number the user never wrote came from
            message += f" (`{symbolic[0]}: steps` is the config's steps={steps})"
        raise ConfigError(f"{src}: `{name}`: {message}.") from None
