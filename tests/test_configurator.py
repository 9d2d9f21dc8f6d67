from dataclasses import dataclass
from pathlib import Path

import pytest

from configurator import ConfigError, parse_config
from gptsuite.training import TrainConfig

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


def test_config_file_with_unknown_name_suggests(tmp_path: Path):
    f = tmp_path / "bad.py"
    f.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ConfigError, match="learning_rat.*learning_rate"):
        parse_config(Cfg(), [str(f)])


def test_bad_config_exits_2_without_traceback():
    from conftest import run_entry

    proc = run_entry("train.py", "--batch_sise=3", check=False)
    assert proc.returncode == 2
    assert "batch_size" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.py")), ids=lambda p: p.name)
def test_every_config_file_loads(path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs include each other by repo-relative path
    cfg = parse_config(TrainConfig(), [str(path.relative_to(ROOT))])
    assert isinstance(cfg, TrainConfig)
