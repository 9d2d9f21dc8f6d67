"""Defaults and overrides for every entry point, declared once as a dataclass.

    python train.py config/a.py config/b.py --batch_size=8 --compile=False

Config files are plain Python assignments executed in order; each sees the values so far, so a
config may build on another (`n_layer = n_layer * 2`) or `include('config/base.py')` it. Then
each `--key=value` is parsed with ast.literal_eval and coerced to the type of the default
(a bare `--flag` sets a bool key to True).
Unknown keys, bad types and missing files are errors that name the key and suggest the closest
valid one.
"""

import ast
import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    exit_code = 2


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(sorted(valid))})"


def coerce(key: str, value: Any, default: Any, hint: Any = None) -> Any:
    """Check `value` against the type of `default`: int->float is allowed; a None default takes
    any literal, unless its annotation (e.g. `bool | None`) says which."""
    if value is None:
        if default is None or type(None) in typing.get_args(hint):
            return value
        raise ConfigError(f"{key}=None is not allowed; {key} takes {type(default).__name__} (default {default!r})")
    if default is None:
        for t in typing.get_args(hint):
            if t is not type(None):
                with contextlib.suppress(ConfigError):
                    return coerce(key, value, t(), None)
        if typing.get_args(hint):
            raise ConfigError(f"{key}={value!r} has type {type(value).__name__}, but {key} takes {hint}")
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(f"{key}={value!r} has type {type(value).__name__}, but {key} takes {type(default).__name__} (default {default!r})")


def parse_value(raw: str) -> Any:
    """Parse a command line value: a Python literal, or else the bare string."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _exec_config_file(path: str, namespace: dict[str, Any], seen: tuple[str, ...] = ()) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing file such as config/train_shakespeare_char.py")
    if str(p.resolve()) in seen:
        raise ConfigError(f"config file {path} includes itself")
    seen = (*seen, str(p.resolve()))
    namespace["include"] = lambda other: _exec_config_file(other, namespace, seen)
    try:
        exec(compile(p.read_text(encoding="utf-8"), str(p), "exec"), namespace)
    except UserError:
        raise
    except Exception as e:
        raise ConfigError(f"config file {path} failed: {type(e).__name__}: {e}") from None


def _apply_config_file(path: str, values: dict[str, Any], defaults: dict[str, Any], hints: dict[str, Any]) -> None:
    namespace: dict[str, Any] = dict(values)
    _exec_config_file(path, namespace)
    for name, value in namespace.items():
        if name.startswith("_") or name == "include" or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        if name not in defaults:
            raise ConfigError(f"config file {path} sets unknown key '{name}'{_suggest(name, list(defaults))}")
        values[name] = coerce(name, value, defaults[name])


def parse_config(defaults: T, argv: list[str]) -> T:
    """Apply config files then --key=value overrides from argv to the dataclass `defaults`."""
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    valid = list(fields)
    hints = typing.get_type_hints(type(defaults))
    values = dict(fields)
    for arg in argv:
        if arg in ("-h", "--help"):
            print("usage: [config files ...] [--key=value ...]\nkeys and defaults:")
            print("\n".join(f"  --{k}={v!r}" for k, v in fields.items()))
            raise SystemExit(0)
        if not arg.startswith("--"):
            _apply_config_file(arg, values, fields, hints)
            continue
        key, eq, raw = arg[2:].partition("=")
        if not eq and key in fields and (isinstance(fields[key], bool) or bool in typing.get_args(hints.get(key))):
            values[key] = True  # a bare --flag switches a bool key on
            continue
        if not eq:
            raise ConfigError(f"argument {arg} needs a value: write --{key}=VALUE")
        if key not in fields:
            raise ConfigError(f"unknown key '{key}'{_suggest(key, valid)}")
        value = parse_value(raw)
        if isinstance(fields[key], str) and not isinstance(value, str):
            value = raw  # --start=123 is the text "123" where a string is expected
        values[key] = coerce(key, value, fields[key], hints.get(key))
    return dataclasses.replace(defaults, **values)


def print_config(cfg: Any) -> None:
    changed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default}
    if changed:
        print("config:", ", ".join(f"{k}={v!r}" for k, v in changed.items()))
