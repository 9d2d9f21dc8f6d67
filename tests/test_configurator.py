from dataclasses import dataclass
from pathlib import Path

import pytest

from configurator import ConfigError, config_keys, flatten, parse_config
from gptsuite.settings import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Cfg:
    n_layer: int = 12
    learning_rate: float = 6e-4
    device: str = "cpu"
    compile: bool | None = None
    top_k: int | None = 200
    anything: object = None


def test_defaults_then_files_in_order_then_flags(tmp_path: Path):
    a = tmp_path / "a.py"
    a.write_text("n_layer = 4\nlearning_rate = 1e-3\n")
    b = tmp_path / "b.py"
    b.write_text("n_layer = n_layer * 2  # builds on what came before\n")
    cfg = parse_config(Cfg(), [str(a), str(b), "--learning_rate=2e-3"])
    assert cfg.n_layer == 8 and cfg.learning_rate == 2e-3
    cfg = parse_config(Cfg(), ["--learning_rate=2e-3", str(a)])  # order of the arguments is the order applied
    assert cfg.learning_rate == 1e-3


def test_include(tmp_path: Path):
    (tmp_path / "base.py").write_text("n_layer = 3\ndevice = 'mps'\n")
    (tmp_path / "child.py").write_text(f"include({str(tmp_path / 'base.py')!r})\nn_layer = n_layer + 1\n")
    cfg = parse_config(Cfg(), [str(tmp_path / "child.py")])
    assert (cfg.n_layer, cfg.device) == (4, "mps")


def test_coercion():
    cfg = parse_config(Cfg(), ["--learning_rate=1", "--compile=False", "--device=cuda:1", "--top_k=None", "--anything=[1, 2]"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.compile is False and cfg.device == "cuda:1" and cfg.top_k is None and cfg.anything == [1, 2]
    assert parse_config(Cfg(), ["--device=123"]).device == "123"  # a string key takes the text as given


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--n_layr=3"], ["n_layr", "n_layer"]),
        (["--n_layer=2.5"], ["n_layer", "int"]),
        (["--learning_rate=True"], ["learning_rate", "float"]),
        (["--compile=1"], ["compile"]),
        (["--n_layer"], ["--n_layer=VALUE"]),
        (["--nothing"], ["--nothing=VALUE"]),
        (["no/such/file.py"], ["no/such/file.py", "not found"]),
    ],
)
def test_errors_name_the_key(argv, words):
    with pytest.raises(ConfigError) as e:
        parse_config(Cfg(), argv)
    for w in words:
        assert w in str(e.value)


def test_bare_flag_switches_a_bool_on():
    assert parse_config(Cfg(), ["--compile"]).compile is True
    assert parse_config(Cfg(), ["--compile", "--compile=False"]).compile is False


def test_every_include_of_a_config_file_counts(tmp_path: Path):
    """A file that includes two others, then sets more: the keys of all three, later ones winning."""
    (tmp_path / "a.py").write_text("n_layer = 4\nlearning_rate = 1e-3\n")
    (tmp_path / "b.py").write_text("device = 'cpu'\nlearning_rate = 2e-3\n")
    (tmp_path / "top.py").write_text(f"include({str(tmp_path / 'a.py')!r})\ninclude({str(tmp_path / 'b.py')!r})\nn_layer = n_layer * 2\n")
    cfg = parse_config(Cfg(), [str(tmp_path / "top.py")])
    assert (cfg.n_layer, cfg.learning_rate, cfg.device) == (8, 2e-3, "cpu")


def test_config_file_with_unknown_name_suggests(tmp_path: Path):
    f = tmp_path / "bad.py"
    f.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ConfigError, match="learning_rat.*learning_rate"):
        parse_config(Cfg(), [str(f)])


def assignments(path: Path) -> dict:
    """The `key = literal` lines of a config file and of the files it include()s, in order, read
    with ast rather than executed."""
    import ast

    out = {}
    for node in ast.parse(path.read_text()).body:
        call = node.value if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) else None
        if call is not None and isinstance(call.func, ast.Name) and call.func.id == "include":
            out |= assignments(ROOT / ast.literal_eval(call.args[0]))
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                out.pop(node.targets[0].id, None)  # an expression of earlier values
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.py")), ids=lambda p: p.name)
def test_every_config_file_loads(path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs include each other by repo-relative path
    cfg = parse_config(TrainConfig(), [str(path.relative_to(ROOT))])
    values = assignments(path)
    assert values, f"{path.name} sets nothing"
    flat = flatten(cfg)
    for key, value in values.items():
        assert flat[key] == value, key


@pytest.mark.parametrize(
    "line, words",
    [
        ("compile = 'yes'", ["compile", "'yes'"]),  # a file value is checked against the annotation bool | None
        ("top_k = 'many'", ["top_k", "'many'"]),
        ("n_layer = 2.5", ["n_layer", "int"]),
        ("learning_rate = 0", ["learning_rate must be positive"]),
    ],
)
def test_config_files_and_flags_are_checked_alike(tmp_path: Path, line: str, words: list[str]):
    key, _, value = line.partition(" = ")
    f = tmp_path / "c.py"
    f.write_text(line + "\n")
    defaults = Cfg() if key in ("compile", "top_k") else TrainConfig()
    for argv in ([str(f)], [f"--{key}={value}"]):
        with pytest.raises(ConfigError) as e:
            parse_config(defaults, argv)
        for w in words:
            assert w in str(e.value), (argv, str(e.value))


def test_none_where_the_annotation_allows_it_from_a_file_and_a_flag(tmp_path: Path):
    f = tmp_path / "c.py"
    f.write_text("top_k = None\ncompile = None\n")
    for argv in ([str(f)], ["--top_k=None", "--compile=None"]):
        cfg = parse_config(Cfg(compile=True), argv)
        assert cfg.top_k is None and cfg.compile is None
    with pytest.raises(ConfigError, match="n_layer=None"):
        parse_config(Cfg(), ["--n_layer=None"])


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--batch_size=0", "batch_size must be positive, got 0"),
        ("--keep_last=-1", "keep_last must not be negative, got -1"),
        ("--beta2=1.0", "beta2 must be in [0, 1), got 1.0"),
        ("--dropout=-0.1", "dropout must be in [0, 1), got -0.1"),
        ("--dtype=float8", "dtype must be one of auto, float32, bfloat16, float16, got 'float8'"),
    ],
)
def test_bounds_declared_beside_the_fields(arg: str, message: str):
    with pytest.raises(ConfigError) as e:
        parse_config(TrainConfig(), [arg])
    assert str(e.value) == message
    parse_config(TrainConfig(), ["--beta2=0.999", "--dropout=0.0", "--keep_last=0", "--batch_size=1"])  # the edges that are allowed


def test_help_lists_every_key_by_section_with_type_bounds_and_comment(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig(), ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    keys = config_keys(TrainConfig())
    assert len(keys) > 50 and "vocab_size" not in keys  # the model's vocabulary is the dataset's
    for key in keys:
        assert sum(line.lstrip().startswith(f"--{key}=") for line in lines) == 1, key
    assert not any(line.lstrip().startswith(f"--{part}=") for part in ("model", "optim", "lora") for line in lines)  # parts are not keys
    batch = next(line for line in lines if line.lstrip().startswith("--batch_size="))
    assert "--batch_size=12" in batch and "int, positive" in batch and "micro-batch size per process" in batch
    rank = next(line for line in lines if line.lstrip().startswith("--lora_rank="))
    assert "int, not negative" in rank and "the adapters' rank" in rank
    compile_line = next(line for line in lines if line.lstrip().startswith("--compile="))
    assert "bool | None" in compile_line and "torch.compile" in compile_line
    keys_from = next(i for i, line in enumerate(lines) if line.endswith("Keys:")) + 1
    sections = [line for line in lines[keys_from:] if line and not line.startswith(" ") and line.endswith(":")]
    assert sections[:3] == ["run:", "model (GPT-2's weights and checkpoints bring their own shape: these keys are ignored with them):", "data and batches:"]
    assert lines.index("data and batches:") < lines.index(batch) < lines.index("optimizer:")


@pytest.mark.parametrize("entry", ["train", "sample", "eval", "export", "bench", "tools.novelty", "tools.bench_generate", "tools.bench_prepare"])
def test_every_entry_point_helps(entry: str, monkeypatch, capsys):
    """--help exits 0 with the usage line as the command is typed, what the command does (its
    docstring's first paragraph) and every key with its comment."""
    import importlib
    import sys

    module = importlib.import_module(entry)
    monkeypatch.setitem(sys.modules, "__main__", module)
    monkeypatch.setattr(sys, "argv", [module.__file__, "--help"])
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    typed = f"python -m {entry}" if entry.startswith("tools.") else f"python {entry}.py"
    assert out.startswith(f"usage: {typed} ")
    assert module.__doc__.strip().split("\n\n")[0] in out
    assert "--" in out.split("Keys:")[1]
