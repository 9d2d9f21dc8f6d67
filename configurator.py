"""Defaults and overrides for every entry point, declared once as a dataclass.

    python train.py config/train_shakespeare_char.py --batch_size=8 --compile=False

Config files are plain Python assignments executed in order; each sees the values so far, so a
config may build on another (`n_layer = n_layer * 2`) or `include('config/base.py')` it. Then
each `--key=value` is parsed with ast.literal_eval and coerced to the type of the default
(a bare `--flag` sets a bool key to True).
Values from files and from the command line go through the same check against the field's
annotation (`compile: bool | None` takes True, False or None, nothing else), then against the
bounds declared beside the field:

    batch_size: int = option(12, gt=0)  # micro-batch size per rank
    beta1: float = option(0.9, ge=0, lt=1)
    dtype: str = option("auto", choices=("auto", "float32", "bfloat16", "float16"))

Unknown keys, bad types, values out of bounds and missing files are errors that name the key
and suggest the closest valid one. `--help` lists every key by section (the comment lines in the
dataclass) with its type, default, bounds and the comment after it.
"""

import ast
import contextlib
import dataclasses
import difflib
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A bad key, value or config file: one line for the user (errors.cli prints it) and exit code 2."""

    exit_code = 2


def option(default: Any, *, ge: float | None = None, gt: float | None = None, lt: float | None = None, le: float | None = None, choices: tuple = ()) -> Any:
    """A dataclass field with bounds (None is always allowed where the annotation allows it)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("lt", lt), ("le", le)) if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds, "choices": tuple(choices)})


def describe_bounds(f: dataclasses.Field) -> str:
    """The bounds of a field in words: 'positive', 'not negative', 'in [0, 1)', 'one of a, b'."""
    bounds, choices = f.metadata.get("bounds", {}), f.metadata.get("choices", ())
    if choices:
        return "one of " + ", ".join(map(str, choices))
    if bounds == {"gt": 0}:
        return "positive"
    if bounds == {"ge": 0}:
        return "not negative"
    if len(bounds) == 2:
        (lo_k, lo), (hi_k, hi) = sorted(bounds.items(), key=lambda kv: kv[0][0] == "l")
        return f"in {'[' if lo_k == 'ge' else '('}{lo:g}, {hi:g}{']' if hi_k == 'le' else ')'}"
    words = {"ge": "at least", "gt": "greater than", "lt": "less than", "le": "at most"}
    return " and ".join(f"{words[k]} {v:g}" for k, v in bounds.items())


def check_bounds(cfg: Any) -> None:
    """Refuse any field of cfg whose value is outside the bounds declared with option()."""
    for f in dataclasses.fields(cfg):
        value, bounds, choices = getattr(cfg, f.name), f.metadata.get("bounds", {}), f.metadata.get("choices", ())
        if value is None or not (bounds or choices):
            continue
        ok = value in choices if choices else all({"ge": value >= b, "gt": value > b, "lt": value < b, "le": value <= b}[k] for k, b in bounds.items())
        if not ok:
            words = describe_bounds(f)
            raise ConfigError(f"{f.name} must {'not be ' + words[4:] if words.startswith('not ') else 'be ' + words}, got {value!r}")


def _suggest(name: str, valid: list[str], value: str | None = None) -> str:
    """' (did you mean ...?)' with the closest valid key (as the argument to write, given the
    value), or the list of valid keys."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if not close:
        return f" (valid keys: {', '.join(sorted(valid))})"
    return f" (did you mean --{close[0]}={value}?)" if value is not None else f" (did you mean '{close[0]}'?)"


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
        raise ConfigError(f"config file {path} not found; check the path (the recipes are in config/, relative to the project folder)")
    if str(p.resolve()) in seen:
        raise ConfigError(f"config file {path} includes itself")
    seen = (*seen, str(p.resolve()))
    namespace["include"] = lambda other: _exec_config_file(other, namespace, seen)
    try:
        exec(compile(p.read_text(encoding="utf-8"), str(p), "exec"), namespace)
    except ConfigError:
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
        values[name] = coerce(name, value, defaults[name], hints.get(name))


def parse_config(defaults: T, argv: list[str], prog: str = "") -> T:
    """Apply config files then --key=value overrides from argv to the dataclass `defaults`."""
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    valid = list(fields)
    hints = typing.get_type_hints(type(defaults))
    values = dict(fields)
    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text(defaults, prog))
            raise SystemExit(0)
        if not arg.startswith("--"):
            key, eq, raw = arg.lstrip("-").partition("=")
            if eq and not arg.endswith(".py"):  # max_iters=10 or -max_iters=10 meant as a setting
                close = key if key in fields else next(iter(difflib.get_close_matches(key, valid, n=1, cutoff=0.5)), None)
                hint = f"write --{close}={raw}" if close else "a setting is written --key=value with a key that --help lists"
                raise ConfigError(f"argument {arg} is neither a config file nor a --key=value setting; {hint}")
            _apply_config_file(arg, values, fields, hints)
            continue
        key, eq, raw = arg[2:].partition("=")
        if not eq and key in fields and (isinstance(fields[key], bool) or bool in typing.get_args(hints.get(key))):
            values[key] = True  # a bare --flag switches a bool key on
            continue
        if not eq:
            raise ConfigError(f"argument {arg} needs a value: write --{key}=VALUE")
        if key not in fields:
            raise ConfigError(f"unknown key '{key}'{_suggest(key, valid, raw)}")
        value = parse_value(raw)
        if isinstance(fields[key], str) and not isinstance(value, str):
            value = raw  # --start=123 is the text "123" where a string is expected
        values[key] = coerce(key, value, fields[key], hints.get(key))
    cfg = dataclasses.replace(defaults, **values)
    check_bounds(cfg)
    return cfg


FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*(.+?)\s*=\s*.*?(?:\s\s#\s*(.*))?$")
SECTION_LINE = re.compile(r"^\s+#\s*(.+)$")


def documented_fields(cls: type) -> dict[str, tuple[str, str, str]]:
    """{field: (section, annotation, comment)} read from the source of cls and the dataclasses it
    extends: a comment line starts a section, the comment after a field explains it."""
    found: dict[str, tuple[str, str, str]] = {}
    for klass in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        section = klass.__name__.removesuffix("Config").lower() or "dataset options"  # a dataset plugin's Config
        for line in lines[1:]:
            if m := SECTION_LINE.match(line):
                section = m.group(1)
            elif m := FIELD_LINE.match(line):
                name, annotation, comment = m.group(1), m.group(2), m.group(3) or ""
                old = found.get(name)
                found[name] = (old[0] if old else section, annotation, comment or (old[2] if old else ""))
    return found


def help_text(defaults: Any, prog: str = "", description: str = "") -> str:
    """Every key of the dataclass `defaults`, grouped by section, with its type, default, bounds
    and comment."""
    script = Path(sys.argv[0] if sys.argv and sys.argv[0] else "script.py")
    prog = prog or (f"-m tools.{script.stem}" if script.parent.name == "tools" else script.name)  # tools run as modules
    docs = documented_fields(type(defaults))
    sections: dict[str, list[str]] = {}
    for f in dataclasses.fields(defaults):
        section, annotation, comment = docs.get(f.name, ("settings", getattr(f.type, "__name__", str(f.type)), ""))
        bounds = describe_bounds(f) if f.metadata.get("bounds") or f.metadata.get("choices") else ""
        kind = annotation + (f", {bounds}" if bounds else "")
        row = f"  --{f.name}={getattr(defaults, f.name)!r}".ljust(34) + f" {kind}".ljust(26) + f" {comment}"
        sections.setdefault(section, []).append(row.rstrip())
    out = [f"usage: python {prog} [config files ...] [--key=value ...]"]
    main = sys.modules.get("__main__")
    if description or (getattr(main, "__doc__", None) and Path(getattr(main, "__file__", "")).stem in (script.stem, "__main__")):
        out += ["", (description or main.__doc__).strip().split("\n\n")[0]]  # what the command does: its docstring's first paragraph
    out += ["", "Config files are Python assignments (config/*.py), applied in order; --key=value overrides them. Keys:"]
    for section, rows in sections.items():
        out += ["", f"{section}:", *rows]
    return "\n".join(out)


def print_config(cfg: Any) -> None:
    changed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default}
    if changed:
        print("config:", ", ".join(f"{k}={v!r}" for k, v in changed.items()))
