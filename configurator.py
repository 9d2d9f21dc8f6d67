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


class ConfigError(ValueError):
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


def part(cls: type, *, hide: tuple[str, ...] = (), **defaults: Any) -> Any:
    """A field holding a part of a composed config: the part's keys are the config's keys, flat
    (with the part class's KEY_PREFIX in front, e.g. LoRA's 'lora_'); `hide` leaves some out (a
    model's vocab_size, which a training run takes from its dataset); `defaults` replace the
    part's own."""
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={"part": True, "hide": tuple(hide)})


@dataclasses.dataclass(frozen=True)
class Key:
    """Where a flat key lives in a composed config: the part (attribute path) and field."""

    path: tuple[str, ...]  # attribute names from the config to the part holding the field
    field: dataclasses.Field
    hint: Any  # the field's annotation
    default: Any  # its value in the config the keys were read from


def config_keys(cfg: Any) -> dict[str, Key]:
    """Every flat key of a config dataclass (an instance), its parts' keys included."""
    keys: dict[str, Key] = {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not f.metadata.get("part"):
            keys[f.name] = Key((), f, hints.get(f.name), value)
            continue
        prefix = getattr(type(value), "KEY_PREFIX", "")
        for name, key in config_keys(value).items():
            if key.path or key.field.name not in f.metadata["hide"]:
                if prefix + name in keys:
                    raise TypeError(f"{type(cfg).__name__}: the key {prefix + name} is declared twice")
                keys[prefix + name] = dataclasses.replace(key, path=(f.name, *key.path))
    return keys


def get_key(cfg: Any, key: Key) -> Any:
    for attr in key.path:
        cfg = getattr(cfg, attr)
    return getattr(cfg, key.field.name)


def flatten(cfg: Any) -> dict[str, Any]:
    """The config's settings as one flat dict of keys (what checkpoints and logs record)."""
    return {name: get_key(cfg, key) for name, key in config_keys(cfg).items()}


def with_values(cfg: Any, values: dict[str, Any]) -> Any:
    """A copy of cfg with the flat keys in `values` set (not checked; parse_config checks)."""
    keys = config_keys(cfg)
    changes = {(*keys[k].path, keys[k].field.name): v for k, v in values.items()}

    def replace(obj: Any, changes: dict[tuple, Any]) -> Any:
        direct = {p[0]: v for p, v in changes.items() if len(p) == 1}
        for attr in {p[0] for p in changes if len(p) > 1}:
            direct[attr] = replace(getattr(obj, attr), {p[1:]: v for p, v in changes.items() if len(p) > 1 and p[0] == attr})
        return dataclasses.replace(obj, **direct)

    try:
        return replace(cfg, changes)
    except ValueError as e:  # a part's own check (__post_init__), e.g. n_embd not divisible by n_head
        raise ConfigError(str(e)) from None


def check_bounds(cfg: Any) -> None:
    """Refuse any key of cfg whose value is outside the bounds declared with option()."""
    for name, key in config_keys(cfg).items():
        f = key.field
        value, bounds, choices = get_key(cfg, key), f.metadata.get("bounds", {}), f.metadata.get("choices", ())
        if value is None or not (bounds or choices):
            continue
        ok = value in choices if choices else all({"ge": value >= b, "gt": value > b, "lt": value < b, "le": value <= b}[k] for k, b in bounds.items())
        if not ok:
            words = describe_bounds(f)
            raise ConfigError(f"{name} must {'not be ' + words[4:] if words.startswith('not ') else 'be ' + words}, got {value!r}")


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


def _assigned_names(tree: ast.Module) -> set[str]:
    """The names a config file assigns at its top level (x = ..., x += ..., a, b = ...)."""
    names: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _exec_config_file(path: str, namespace: dict[str, Any], seen: tuple[str, ...] = (), assigned: set[str] | None = None) -> set[str]:
    """Run a config file in namespace; the names it (and every file it includes) assigned."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} not found; check the path (the recipes are in config/, relative to the project folder)")
    if str(p.resolve()) in seen:
        raise ConfigError(f"config file {path} includes itself")
    seen = (*seen, str(p.resolve()))
    assigned = set() if assigned is None else assigned
    outer = namespace.get("include")
    namespace["include"] = lambda other: _exec_config_file(other, namespace, seen, assigned)
    try:
        tree = ast.parse(p.read_text(encoding="utf-8"), str(p))
        exec(compile(tree, str(p), "exec"), namespace)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config file {path} failed: {type(e).__name__}: {e}") from None
    finally:
        namespace["include"] = outer  # the including file's, for its next include()
    assigned |= _assigned_names(tree)
    return assigned


def _apply_config_file(path: str, values: dict[str, Any], keys: dict[str, Key], tolerate: frozenset = frozenset()) -> dict[str, Any]:
    """What the config file sets, coerced; it sees `values`, the settings so far. Keys in
    `tolerate` are another script's, and ignored."""
    namespace: dict[str, Any] = dict(values)
    assigned = _exec_config_file(path, namespace)
    out = {}
    for name in assigned:
        value = namespace.get(name)
        if name.startswith("_") or name == "include" or isinstance(value, (types.ModuleType, types.FunctionType, type)) or name in tolerate:
            continue
        if name not in keys:
            raise ConfigError(f"config file {path} sets unknown key '{name}'{_suggest(name, list(keys))}")
        out[name] = coerce(name, value, keys[name].default, keys[name].hint)
    return out


def read_args(defaults: Any, argv: list[str], prog: str = "", tolerate: dict[str, str] | None = None) -> dict[str, Any]:
    """What argv sets, as {key: value}: config files (each executed once, seeing the settings so
    far) and --key=value flags, in order, each value checked against its key's type. Config files
    may also set the keys in `tolerate` (bench.py reads train.py's configs), which are ignored; as
    a flag, such a key is refused with its message there (or a generic one)."""
    tolerate = tolerate or {}
    keys = config_keys(defaults)
    valid = list(keys)
    values, set_now = flatten(defaults), {}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text(defaults, prog))
            raise SystemExit(0)
        if not arg.startswith("--"):
            key, eq, raw = arg.lstrip("-").partition("=")
            if eq and not arg.endswith(".py"):  # max_iters=10 or -max_iters=10 meant as a setting
                close = key if key in keys else next(iter(difflib.get_close_matches(key, valid, n=1, cutoff=0.5)), None)
                hint = f"write --{close}={raw}" if close else "a setting is written --key=value with a key that --help lists"
                raise ConfigError(f"argument {arg} is neither a config file nor a --key=value setting; {hint}")
            found = _apply_config_file(arg, values, keys, frozenset(tolerate) - set(keys))
            values |= found
            set_now |= found
            continue
        key, eq, raw = arg[2:].partition("=")
        if not eq and key in keys and (isinstance(keys[key].default, bool) or bool in typing.get_args(keys[key].hint)):
            values[key] = set_now[key] = True  # a bare --flag switches a bool key on
            continue
        if not eq:
            raise ConfigError(f"argument {arg} needs a value: write --{key}=VALUE")
        if key not in keys and key in tolerate:
            raise ConfigError(tolerate[key] or f"--{key} is not a setting of this command (it reads train.py's config files and ignores their {key}); drop it")
        if key not in keys:
            raise ConfigError(f"unknown key '{key}'{_suggest(key, valid, raw)}")
        value = parse_value(raw)
        if isinstance(keys[key].default, str) and not isinstance(value, str):
            value = raw  # --start=123 is the text "123" where a string is expected
        values[key] = set_now[key] = coerce(key, value, keys[key].default, keys[key].hint)
    return set_now


def apply_values(defaults: T, values: dict[str, Any]) -> T:
    """defaults with the flat key values set, every key checked against its bounds."""
    cfg = with_values(defaults, values)
    check_bounds(cfg)
    return cfg


def parse_config(defaults: T, argv: list[str], prog: str = "", tolerate: dict[str, str] | None = None) -> T:
    """Apply config files then --key=value overrides from argv to the dataclass `defaults`."""
    return apply_values(defaults, read_args(defaults, argv, prog, tolerate))


FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*(.+?)\s*=\s*.*?(?:\s\s#\s*(.*))?$")
SECTION_LINE = re.compile(r"^\s+#\s*(.+)$")


def documented_fields(cls: type) -> dict[str, tuple[str, str, str]]:
    """{key: (section, annotation, comment)} read from the source of cls, the dataclasses it
    extends and its parts: a comment line starts a section, the comment after a field explains it."""
    found: dict[str, tuple[str, str, str]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("part"):
            found |= documented_fields(hints[f.name])  # with the part's KEY_PREFIX
    for klass in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        section = klass.__name__.removesuffix("Config").lower() or "dataset options"  # a dataset plugin's Config
        prefix = getattr(klass, "KEY_PREFIX", "")
        for line in lines[1:]:
            if m := SECTION_LINE.match(line):
                section = m.group(1)
            elif m := FIELD_LINE.match(line):
                name, annotation, comment = prefix + m.group(1), m.group(2), m.group(3) or ""
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
    for name, key in config_keys(defaults).items():
        f = key.field
        section, annotation, comment = docs.get(name, ("settings", getattr(f.type, "__name__", str(f.type)), ""))
        bounds = describe_bounds(f) if f.metadata.get("bounds") or f.metadata.get("choices") else ""
        kind = annotation + (f", {bounds}" if bounds else "")
        row = f"  --{name}={key.default!r}".ljust(34) + f" {kind}".ljust(26) + f" {comment}"
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
    """The settings that differ from the defaults, in one line."""
    defaults = flatten(type(cfg)())
    changed = {k: v for k, v in flatten(cfg).items() if v != defaults.get(k)}
    if changed:
        print("config:", ", ".join(f"{k}={v!r}" for k, v in changed.items()))
