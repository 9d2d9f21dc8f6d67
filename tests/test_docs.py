"""Every command the documentation shows runs as written: the script exists and takes every key.

Commands are found in README.md and docs/*.md (fenced code blocks, and inline code such as table
cells), in the module docstrings of the entry points, the library and the dataset plugins (their
indented usage lines and inline code), and in the header comments of config/*.py. A command is a
`python ...` or `torchrun ... train.py ...` line, or one part of a `&&` chain. For each:

  - the script exists: X.py at the top or under tests/, tools/X.py for `python -m tools.X`, and
    for prepare.py a dataset plugin data/<name>/prepare.py named by its first argument;
  - every `--key=value` or bare `--key` is a field of the script's config dataclass (a bare key
    must be a bool), every config file (*.py) exists, and the whole command line then goes
    through the configurator, as the script would take it (types, bounds, the config files);
  - torchrun's own options are options of torch.distributed.run.

Placeholders are handled where they stand, never by skipping a line: `<dataset>` checks the keys
every dataset takes, `<...>` and `...` stand for arguments, `[...]` for optional ones, an
upper-case value (N, DIR, FILE) for any value, and `--key=value` for any key.
"""

import ast
import dataclasses
import difflib
import functools
import importlib
import importlib.util
import re
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from configurator import ConfigError, config_keys, parse_config
from gptsuite.datafiles import PrepareConfig
from gptsuite.errors import UserError
from gptsuite.sources import available_datasets, load_dataset_module

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCSTRING_FILES = sorted(
    [
        *ROOT.glob("*.py"),
        *(ROOT / "tools").glob("*.py"),
        *(ROOT / "gptsuite").glob("*.py"),
        *(ROOT / "data").glob("*/prepare.py"),
        ROOT / "tests" / "stress_kill.py",
        ROOT / "tests" / "stress_arena.py",
    ]
)
CONFIG_FILES = sorted((ROOT / "config").glob("*.py"))

ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
COMMAND_START = re.compile(r"(?:^|&&|;)\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:python3?|torchrun)\s")
INLINE_CODE = re.compile(r"`([^`]+)`")
SEPARATORS = {"&&", "||", ";", "|"}
PLACEHOLDER_VALUE = re.compile(r"[A-Z][A-Z0-9_]*")  # --stride=N, --init_from=DIR: any value
PLACEHOLDER_KEYS = {"key"}  # `--key=value` in a usage line: any key
EXTERNAL_MODULES = {"pytest", "ruff", "venv", "pip"}  # python -m of tools that are not ours


@dataclass
class Command:
    where: str  # file:line
    text: str  # the command as written

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass
class Script:
    """What one entry point takes on its command line."""

    config: typing.Callable[[], typing.Any] | None  # the config dataclass; None: no --key=value
    extra: frozenset = frozenset()  # keys the script reads itself (eval.py's --compare)
    positionals: int = 0  # arguments that are not keys or config files (export.py's destination)
    help: bool = True  # takes --help
    tolerate: dict = dataclasses.field(default_factory=dict)  # another script's keys its config files may set (bench.py: train.py's)


@functools.cache
def scripts() -> dict[str, Script]:
    """Entry points by how a command names them. Importing them does no work (test_repo.py)."""

    def config(module: str, name: str):
        return getattr(importlib.import_module(module), name)

    return {
        "train.py": Script(config("gptsuite.settings", "TrainConfig")),
        "sample.py": Script(config("sample", "SampleConfig")),
        "eval.py": Script(config("eval", "EvalConfig"), extra=frozenset({"compare"})),
        "export.py": Script(config("export", "ExportConfig"), positionals=1),
        "bench.py": Script(config("bench", "BenchConfig"), tolerate=config("bench", "TRAIN_ONLY")),
        "serve.py": Script(config("serve", "ServeConfig"), positionals=4),  # the models, as eval.py's --compare names them
        "prepare.py": Script(None),  # its first argument names the dataset, whose Config it takes
        "tests/stress_kill.py": Script(None, extra=frozenset({"trials", "seed"}), help=False),  # reads these two itself
        "tests/stress_arena.py": Script(None, extra=frozenset({"trials", "seed"}), help=False),
        "-m tools.novelty": Script(config("tools.novelty", "NoveltyConfig")),
        "-m tools.bench_generate": Script(config("tools.bench_generate", "BenchGenerateConfig")),
        "-m tools.bench_eval": Script(config("tools.bench_eval", "BenchEvalConfig")),
        "-m tools.bench_prepare": Script(config("tools.bench_prepare", "BenchConfig")),
        "-m tools.bench_tokenizer": Script(config("tools.bench_tokenizer", "BenchTokenizerConfig")),
        "-m tools.plot": Script(None, positionals=1, help=False),
        "-m tools.bench_lora": Script(config("tools.bench_lora", "BenchLoraConfig")),
        "-m tools.bench_fsdp": Script(config("tools.bench_fsdp", "BenchFsdpConfig")),
        "-m tools.bench_serve": Script(config("tools.bench_serve", "BenchServeConfig")),
        "-m tools.bench_deploy": Script(config("tools.bench_deploy", "BenchDeployConfig")),
        "-m tools.consolidate": Script(config("tools.consolidate", "ConsolidateConfig")),
        "-m tools.memory": Script(config("tools.memory", "MemoryConfig")),
        "-m tools.chat_tasks": Script(config("tools.chat_tasks", "ChatTasksConfig")),
        "-m tools.arena": Script(config("tools.arena", "ArenaConfig"), positionals=1),
        "-m tools.arena_voter": Script(config("tools.arena_voter", "VoterConfig")),
        "-m tools.arena_loop": Script(config("tools.arena_loop", "LoopConfig")),
        "-m tools.bench_memory": Script(config("tools.bench_memory", "BenchMemoryConfig")),
        "experiments/modern_vs_gpt2.py": Script(None, extra=argparse_keys("experiments/modern_vs_gpt2.py")),
        "experiments/tokenizer_bpb.py": Script(None, extra=argparse_keys("experiments/tokenizer_bpb.py")),
    }


def argparse_keys(path: str) -> frozenset:
    """The --keys of a script that reads its command line with argparse, from its parser()."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(s[2:] for action in module.parser()._actions for s in action.option_strings if s.startswith("--"))


@functools.cache
def torchrun_options() -> set[str]:
    from torch.distributed.run import get_args_parser

    return {s for action in get_args_parser()._actions for s in action.option_strings}


# --- finding commands --------------------------------------------------------------------------


def commands_in_markdown(text: str, name: str) -> list[Command]:
    found, prose, fenced, pending = [], [], False, ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            prose.append((n, ""))  # a code block ends a paragraph
            continue
        if not fenced:
            prose.append((n, line))
            continue
        line = pending + line
        if line.endswith("\\"):  # a command continued on the next line
            pending = line[:-1] + " "
            continue
        pending = ""
        found += whole_commands(line.strip(), f"{name}:{n}")
    return sorted(found + inline_commands(prose, name), key=lambda c: int(c.where.rsplit(":", 1)[1]))


def inline_commands(lines: list[tuple[int, str]], name: str) -> list[Command]:
    """Commands in inline code, which may wrap onto the next line of its paragraph."""
    found, paragraph = [], []
    for n, line in [*lines, (0, "")]:
        if line.strip():
            paragraph.append((n, line))
            continue
        text = "\n".join(t for _, t in paragraph)
        for m in INLINE_CODE.finditer(text):
            found += whole_commands(" ".join(m.group(1).split()), f"{name}:{paragraph[0][0] + text.count(chr(10), 0, m.start())}")
        paragraph = []
    return found


def whole_commands(text: str, where: str) -> list[Command]:
    """A line or inline code that starts a command, or chains one after `&&`: the whole of it, so
    that quoted `;` and `#` stay quoted; split_commands cuts it after tokenizing."""
    return [Command(where, text)] if COMMAND_START.search(text) else []


def commands_in_docstring(path: Path, name: str = "") -> list[Command]:
    """Indented usage lines and inline code of a module docstring (prose lines may start with a
    word such as torchrun without being a command)."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    node = tree.body[0] if tree.body else None
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
        return []
    lines = list(enumerate(source.splitlines()[node.lineno - 1 : node.end_lineno], node.lineno))
    name = name or path.relative_to(ROOT).as_posix()
    usage = [c for n, line in lines if line[:1].isspace() for c in whole_commands(line.strip().removesuffix('"""'), f"{name}:{n}")]
    return sorted(usage + inline_commands(lines, name), key=lambda c: int(c.where.rsplit(":", 1)[1]))


def commands_in_config(path: Path) -> list[Command]:
    name = path.relative_to(ROOT).as_posix()
    found = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            found += whole_commands(line.lstrip("#").strip(), f"{name}:{n}")
    return found


# --- checking one command ----------------------------------------------------------------------


def split_commands(text: str) -> list[list[str]]:
    """Tokenize a line (shell quoting, # comments) and cut it at &&, ;, || and |."""
    tokens = shlex.split(text, comments=True)
    parts, part = [], []
    for token in tokens:
        if token in SEPARATORS:
            parts.append(part)
            part = []
        else:
            part.append(token)
    return [p for p in [*parts, part] if p]


def drop_placeholders(args: list[str]) -> list[str]:
    """Leave out `...` and optional `[...]` groups, which stand for arguments a reader fills in."""
    out, depth = [], 0
    for arg in args:
        if arg.startswith("["):
            depth += 1
        if depth == 0 and arg != "...":
            out.append(arg)
        if arg.endswith("]"):
            depth = max(depth - 1, 0)
    return out


@functools.cache
def dataset_config(name: str) -> type:
    return load_dataset_module(name).Config


def suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean --{close[0]}?)" if close else ""


def check_command(text: str) -> list[str]:
    """Problems with one documented command line, each naming the script and the key; [] if none."""
    try:
        parts = split_commands(text)
    except ValueError as e:
        return [f"cannot be read as a shell command ({e})"]
    problems = []
    for tokens in parts:
        while tokens and ENV_ASSIGNMENT.fullmatch(tokens[0]):
            tokens = tokens[1:]
        if not tokens or tokens[0] not in ("python", "python3", "torchrun"):
            continue  # pip, bash, ...: not ours to check
        problems += check_invocation(tokens)
    return problems


def check_invocation(tokens: list[str]) -> list[str]:
    program, rest = tokens[0], drop_placeholders(tokens[1:])
    if program == "torchrun":
        known = torchrun_options()
        i = 0
        while i < len(rest) and rest[i].startswith("-"):
            if rest[i].split("=", 1)[0] not in known:
                return [f"torchrun has no option {rest[i].split('=', 1)[0]}"]
            i += 1
        if i == len(rest):
            return ["torchrun runs no script"]
        options = dict(o.split("=", 1) for o in rest[:i] if "=" in o)
        processes = int(options.get("--nproc_per_node", 1)) * int(options.get("--nnodes", 1))
        return check_script(rest[i], rest[i + 1 :], processes)
    if not rest:
        return ["python without a script"]
    if rest[0] == "-c":
        return []
    if rest[0] == "-m":
        module = rest[1] if len(rest) > 1 else ""
        if module in EXTERNAL_MODULES:
            return []
        if not module.startswith("tools.") or not (ROOT / "tools" / f"{module.removeprefix('tools.')}.py").is_file():
            return [f"no module {module!r}: the project's modules run as python -m tools.NAME, with tools/NAME.py"]
        return check_script(f"-m {module}", rest[2:])
    return check_script(rest[0], rest[1:])


def check_script(script: str, args: list[str], processes: int = 1) -> list[str]:
    known = scripts()
    if script not in known:
        exists = (ROOT / script).is_file()
        return [f"{script} {'has no known settings: add it to scripts() in tests/test_docs.py' if exists else 'does not exist'}"]
    spec, name, config = known[script], script, known[script].config
    if script == "prepare.py":
        if not args or args[0].startswith("-"):
            return ["prepare.py needs a dataset as its first argument"]
        dataset, args = args[0], args[1:]
        if re.fullmatch(r"<\w+>", dataset):
            config = PrepareConfig  # any dataset: the options they all take
        elif not (ROOT / "data" / dataset / "prepare.py").is_file():
            return [f"prepare.py: no dataset {dataset!r} (data/{dataset}/prepare.py); there are {', '.join(available_datasets())}"]
        else:
            config = dataset_config(dataset)
        name = f"prepare.py {dataset}"
    fields = config_keys(config()) if config else {}
    hints = {k: key.hint for k, key in fields.items()}
    problems, argv, positionals = [], [], []
    compare = False
    for arg in args:
        if arg in ("--help", "-h"):
            if not spec.help:
                problems.append(f"{name} takes no {arg}")
            compare = False
            continue
        if arg.startswith("--"):
            compare = False
            key, eq, value = arg[2:].partition("=")
            if key in PLACEHOLDER_KEYS:
                continue
            if key in spec.extra:
                compare = key == "compare"
                continue
            if key not in fields and key not in spec.tolerate:
                what = config.__name__ if config else f"it takes {', '.join('--' + k for k in sorted(spec.extra))}" if spec.extra else "no --key=value settings"
                problems.append(f"{name}: unknown key --{key} ({what}){suggest(key, [*fields, *spec.extra])}")
                continue
            if not eq:
                hint = hints.get(key)
                if not (hint is bool or bool in typing.get_args(hint)):
                    problems.append(f"{name}: --{key} is not a bool; write --{key}=VALUE")
                    continue
            if eq and (PLACEHOLDER_VALUE.fullmatch(value) or "<" in value):
                continue  # --stride=N, --docs_dir=PATH: a value for the reader to choose
            argv.append(arg)
        elif compare or re.fullmatch(r"<[\w-]+>", arg):
            continue  # the models after --compare; a placeholder for a file or folder
        elif arg.endswith(".py") and config is not None:
            if not (ROOT / arg).is_file():
                problems.append(f"{name}: config file {arg} does not exist")
            else:
                argv.append(arg)
        else:
            positionals.append(arg)
    if len(positionals) > spec.positionals:
        extra = positionals[spec.positionals :]
        problems.append(f"{name}: unexpected argument{'s' if len(extra) > 1 else ''} {' '.join(extra)}")
    if config is not None and not problems:
        try:  # as the script takes it: the config files run, every value checked against its field
            cfg = parse_config(config(), argv, tolerate=spec.tolerate)
        except ConfigError as e:
            problems.append(f"{name}: {e}")
        else:  # and as its processes take it: the micro-batches of a step divide among them
            data = getattr(cfg, "data", None)
            if processes > 1 and data is not None:
                try:
                    data.accum_steps(processes)
                except UserError as e:
                    problems.append(f"{name} on {processes} processes: {e}")
    return problems


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # config files include() others by paths relative to the project root


def commands_of(path: Path) -> list[Command]:
    if path.suffix == ".md":
        return commands_in_markdown(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    if path.parent.name == "config":
        return commands_in_config(path)
    return commands_in_docstring(path)


def report(commands: list[Command]) -> list[str]:
    return [f"{c}\n    {p}" for c in commands for p in check_command(c.text)]


@pytest.mark.parametrize("path", [*MARKDOWN, *DOCSTRING_FILES, *CONFIG_FILES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_commands_run_as_written(path: Path):
    problems = report(commands_of(path))
    assert not problems, "commands that would not run as written:\n" + "\n".join(problems)


def test_the_docs_show_commands_for_every_entry_point():
    """Guards the finder: if it stopped finding commands, the test above would pass on nothing."""
    found = [c for p in MARKDOWN for c in commands_of(p)]
    named = {t for c in found for t in shlex.split(c.text, comments=True)}
    for entry in [
        "prepare.py",
        "train.py",
        "sample.py",
        "eval.py",
        "export.py",
        "bench.py",
        "serve.py",
        "tools.plot",
        "tools.novelty",
        "tools.bench_generate",
        "tools.bench_eval",
        "tools.bench_prepare",
        "tools.bench_tokenizer",
        "tools.bench_lora",
        "tools.bench_fsdp",
        "tools.bench_serve",
        "tools.bench_deploy",
        "tools.consolidate",
        "tools.memory",
        "tools.chat_tasks",
        "tools.bench_memory",
    ]:
        assert entry in named, f"no command in README.md or docs/*.md runs {entry}"
    for path in [
        *(ROOT / name for name in ("prepare.py", "train.py", "sample.py", "eval.py", "export.py", "bench.py", "serve.py")),
        *(ROOT / "tools").glob("[!_]*.py"),
    ]:
        assert commands_of(path), f"{path.relative_to(ROOT)}: its docstring shows no usage line"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them: lower case, punctuation dropped,
    spaces as hyphens."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.lstrip().startswith("```")
        if not fenced and (m := re.match(r"#+\s+(.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_between_the_pages_lead_somewhere(path: Path):
    broken = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for link in LINK.findall(line):
            if re.match(r"[a-z]+:", link):
                continue  # a web address
            file, _, anchor = link.partition("#")
            target = (path.parent / file).resolve() if file else path
            if not target.is_file():
                broken.append(f"{path.name}:{n}: {link}: no file {file}")
            elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
                broken.append(f"{path.name}:{n}: {link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    "line, words",
    [
        ("python train.py --batch_sise=3", ["unknown key --batch_sise", "TrainConfig", "did you mean --batch_size"]),
        ("python trian.py config/train_gpt2.py", ["trian.py does not exist"]),
        ("python model.py", ["model.py has no known settings"]),
        ("python train.py config/train_nothing.py", ["config file config/train_nothing.py does not exist"]),
        ("python train.py --dtype=bf16", ["dtype must be one of"]),
        ("python train.py --compile=yes", ["compile='yes' has type str"]),
        ("python sample.py --max_new_tokens", ["--max_new_tokens is not a bool"]),
        ("python sample.py --out_dir=out-x --temprature=0.7", ["unknown key --temprature", "SampleConfig"]),
        ("python eval.py out-a", ["unexpected argument out-a"]),
        ("python eval.py --compare out-a gpt2 --strides=8", ["unknown key --strides", "EvalConfig"]),
        ("python export.py --out_dir=out-x hf-a hf-b", ["unexpected argument hf-b"]),
        ("python bench.py --timed_step=5", ["unknown key --timed_step", "BenchConfig"]),
        ("python prepare.py shakespear_char", ["no dataset 'shakespear_char'"]),
        ("python prepare.py text --inputs=a.txt", ["prepare.py text: unknown key --inputs", "did you mean --input"]),
        ("python prepare.py pubmed --docs_dir=x", ["prepare.py pubmed: unknown key --docs_dir"]),
        ("python prepare.py <dataset> --input=x", ["unknown key --input", "PrepareConfig"]),
        ("python -m tools.plott out", ["no module 'tools.plott'"]),
        ("python -m tools.plot out --dpi=3", ["unknown key --dpi", "no --key=value settings"]),
        ("python -m tools.plot --help", ["takes no --help"]),
        ("python -m tools.novelty --dataset=x --txt=hi", ["unknown key --txt", "NoveltyConfig"]),
        ("python -m tools.bench_generate --batch_size=2", ["unknown key --batch_size", "BenchGenerateConfig"]),
        ("python -m tools.bench_prepare --megabytes=5", ["unknown key --megabytes", "BenchConfig"]),
        ("python -m mystery", ["no module 'mystery'"]),
        ("python tests/stress_kill.py --trial=3", ["unknown key --trial"]),
        ("torchrun --standalone --nproc_per_node=8 train.py --lr=1", ["unknown key --lr"]),
        ("torchrun --nproc_per_gpu=8 train.py", ["torchrun has no option --nproc_per_gpu"]),
        (
            "torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 train.py config/train_gpt2.py",
            ["train.py on 16 processes", "gradient_accumulation_steps=40 is not divisible by the 16 processes"],
        ),
        ("pip install x && python prepare.py text --field=a --fields=b", ["unknown key --fields"]),
        ('python sample.py --start="a # b" --stop="x" --stram', ["unknown key --stram"]),
    ],
)
def test_the_checker_reports_a_bad_command(line: str, words: list[str]):
    problems = check_command(line)
    assert problems, f"{line!r} was not reported"
    for word in words:
        assert any(word in p for p in problems), f"{line!r}: no problem says {word!r}: {problems}"


@pytest.mark.parametrize(
    "line",
    [
        "python train.py --help",
        "python prepare.py <dataset> --help",
        "python prepare.py shakespeare_char --input=my.txt",
        "python train.py [config files ...] [--key=value ...]",
        "python eval.py --compare out-scratch gpt2 out-ft gpt2@2 --dataset=azure_docs --stride=512",
        "python export.py --out_dir=out-azure --to=hf hf-azure --push_to_hub=me/gpt2-azure",
        "python bench.py config/train_shakespeare_char_cpu.py --real_data=True --peak_tflops=N",
        "python sample.py --out_dir=out-x --check_novelty --stream",
        'python sample.py --out_dir=out-gpt2 --start="The" --top_k=None --top_p=0.95 --stop="\\n\\n"',
        "python -m tools.bench_generate --batch_sizes=(1,) --new_tokens=(512,)",
        "python -m tools.plot out-shakespeare-char",
        "python tests/stress_kill.py --trials=60",
        "NCCL_IB_DISABLE=1 torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 train.py config/train_gpt2.py --gradient_accumulation_steps=48",
        "pip install -q x && python -m ruff check . && python -m pytest -q",
        'python -c "import sys; print(sys.argv)"',
    ],
)
def test_the_checker_accepts_a_good_command(line: str):
    assert check_command(line) == []


def test_a_bad_key_in_a_table_cell_or_docstring_fails_naming_the_file(tmp_path: Path):
    page = (
        "| task | command |\n| --- | --- |\n| train | `python train.py --batch_sise=3` |\n\n"
        "```\npython sample.py --out_dir=x # ok\n```\n\nInline code may wrap: `python eval.py\n--strid=4` fails too.\n"
    )
    problems = report(commands_in_markdown(page, "docs/page.md"))
    assert len(problems) == 2, problems
    assert problems[0].startswith("docs/page.md:3: python train.py --batch_sise=3") and "unknown key --batch_sise" in problems[0]
    assert problems[1].startswith("docs/page.md:9: python eval.py --strid=4") and "unknown key --strid" in problems[1]

    module = tmp_path / "tool.py"
    module.write_text('"""A tool.\n\n    python sample.py --num_sample=2\n\nIt samples; see `python eval.py --strid=4`.\n"""\n', encoding="utf-8")
    found = commands_in_docstring(module, name="tool.py")
    assert [c.where for c in found] == ["tool.py:3", "tool.py:5"]
    assert all(check_command(c.text) for c in found)
