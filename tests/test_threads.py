"""CPU threads fitted to the cores other processes leave free (runtime.CpuThreads)."""

from pathlib import Path

import pytest
import torch

from gptsuite import runtime
from gptsuite.runtime import CpuThreads

TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


class Machine:
    """A fake /proc/stat and clock: `run(seconds, busy_cores, ours_cores)` advances them."""

    def __init__(self, path: Path, monkeypatch):
        self.path, self.now, self.busy, self.ours = path, 1000.0, 0.0, 0.0
        monkeypatch.setattr(runtime.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(runtime.time, "process_time", lambda: self.ours)
        monkeypatch.setattr(runtime.os, "sysconf", lambda name: TICKS)
        self.write()

    def write(self):
        busy = round(self.busy * TICKS)
        # user nice system idle iowait irq softirq steal
        self.path.write_text(f"cpu  {busy} 0 0 {10**7 - busy} 0 0 0 0 0 0\ncpu0 0 0 0 0\n")

    def run(self, seconds: float, others: float, ours: float):
        self.now += seconds
        self.busy += seconds * (others + ours)
        self.ours += seconds * ours
        self.write()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_follow_the_free_cores(tmp_path: Path, monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    m = Machine(tmp_path / "stat", monkeypatch)
    t = CpuThreads(stat=str(m.path), cores=4, interval=2.0)
    assert t.adaptive
    m.run(1.0, others=3.0, ours=1.0)
    assert t.adjust() == t.threads  # not yet: less than `interval` since the last look
    m.run(1.5, others=3.0, ours=1.0)
    assert t.adjust() == 1 and torch.get_num_threads() == 1  # 3 of 4 cores taken by others
    m.run(2.0, others=1.2, ours=1.0)
    assert t.adjust() == 3  # about one core taken
    m.run(2.0, others=0.1, ours=3.0)  # our own busy threads do not count against us
    assert t.adjust() == 4 and torch.get_num_threads() == 4
    m.run(2.0, others=9.0, ours=0.5)  # more busy processes than cores: still one thread
    assert t.adjust() == 1


def test_a_fixed_count_or_omp_num_threads_is_kept(tmp_path: Path, monkeypatch, restore_threads):
    m = Machine(tmp_path / "stat", monkeypatch)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    t = CpuThreads(fixed=2, stat=str(m.path), cores=4)
    m.run(3.0, others=3.0, ours=1.0)
    assert not t.adaptive and t.adjust() == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert not CpuThreads(stat=str(m.path), cores=4).adaptive
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert not CpuThreads(stat=str(tmp_path / "no-proc-stat"), cores=4).adaptive  # e.g. macOS
    assert not CpuThreads(adaptive=False, stat=str(m.path), cores=4).adaptive  # a GPU run


def test_a_benchmark_fits_its_threads_to_the_free_cores_once(tmp_path: Path, monkeypatch, restore_threads, capsys):
    """bench.py times with the threads train.py would use under the same load, not torch's default."""
    import bench
    from configurator import parse_config
    from conftest import TINY_MODEL_ARGS
    from gptsuite.runtime import setup_runtime

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    m = Machine(tmp_path / "stat", monkeypatch)
    monkeypatch.setattr(runtime.time, "sleep", lambda seconds: m.run(seconds, others=3.0, ours=0.1))  # 3 of 4 cores busy elsewhere
    t = CpuThreads(stat=str(m.path), cores=4)
    assert t.fit_now(1.0) == 1 and torch.get_num_threads() == 1
    m.run(5.0, others=0.0, ours=0.1)  # the others stop: a benchmark keeps its count while it times
    assert t.threads == 1

    torch.set_num_threads(4)
    monkeypatch.setattr(bench, "CpuThreads", lambda fixed, adaptive: CpuThreads(fixed, adaptive, stat=str(m.path), cores=4))
    cfg = parse_config(bench.BenchConfig(), [*TINY_MODEL_ARGS, "--vocab_size=64", "--warmup_steps=1", "--timed_steps=1"])
    assert bench.bench(cfg, setup_runtime("cpu", "float32"))["threads"] == 1
    assert ", 1 CPU threads" in capsys.readouterr().out
