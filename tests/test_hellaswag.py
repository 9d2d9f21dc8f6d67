"""HellaSwag scoring (gptsuite/hellaswag.py, eval.py --task=hellaswag): against losses worked out by
hand with a stand-in model, against a row-by-row float64 reference with a real GPT, bad inputs,
the download into the cache (from a local file:// URL: no network), eval.py end to end."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import ROOT, ranks
from eval import main as eval_main
from gptsuite import hellaswag
from gptsuite.checkpoint import save_checkpoint
from gptsuite.errors import UserError
from gptsuite.hellaswag import Item, evaluate_hellaswag, item_losses, load_items
from gptsuite.runtime import Runtime, setup_runtime
from gptsuite.tokenizer import GPT2_EOT, GPT2_META, GPT2_VOCAB_SIZE, GPT2Tokenizer
from model import GPT, GPTConfig

LN2 = math.log(2)
X, Y, Z, W = 2124, 331, 1976, 266  # GPT-2 BPE ids of " x", " y", " z", " w"
# next-token probabilities after a token; the rest of the mass is spread evenly over the other ids
BIGRAM = {
    None: {X: 1 / 4, Y: 1 / 8, Z: 1 / 4, W: 1 / 8},  # after any token not below (a context's last token, <|endoftext|>)
    X: {X: 1 / 2},
    Z: {Z: 1 / 16},
    W: {W: 1 / 2},
}
ENDINGS = ["x x x x", "y", "z z", "w w w"]
# ending: summed loss (nats); per token
#   " x x x x"  -ln 1/4 - 3 ln 1/2  = 5 ln2 ; 5/4 ln2   <- lowest per token: acc_norm's pick
#   " y"        -ln 1/8             = 3 ln2 ; 3   ln2   <- lowest sum: acc's pick
#   " z z"      -ln 1/4 - ln 1/16   = 6 ln2 ; 3   ln2
#   " w w w"    -ln 1/8 - 2 ln 1/2  = 5 ln2 ; 5/3 ln2
SUM_LOSS = [5 * LN2, 3 * LN2, 6 * LN2, 5 * LN2]
AVG_LOSS = [5 / 4 * LN2, 3 * LN2, 3 * LN2, 5 / 3 * LN2]
# labels 0, 1, 0, 3: acc right on the second item only (1/4), acc_norm on the first and third (2/4)
HAND_ITEMS = [
    Item("Pick one:", tuple(ENDINGS), 0),
    Item("Then the letters were", tuple(ENDINGS), 1),
    Item("A man says", tuple(ENDINGS), 0),
    Item("", tuple(ENDINGS), 3),  # an empty context: the endings follow <|endoftext|>
]

ITEMS = [  # plausible items for the real models
    {"ctx": "The man opens the door and", "endings": ["walks outside.", "eats the door.", "sings a door to sleep slowly.", "is."], "label": 0},
    {"ctx": "She pours the water into the", "endings": ["sky above.", "glass on the table.", "idea.", "running."], "label": 1},
    {"ctx": "To bake bread, first you", "endings": ["fly.", "sleep.", "mix flour and water.", "paint it."], "label": 2},
    {"ctx": "The dog barks at the", "endings": ["moonlight calculus.", "theorem.", "seven.", "mail carrier."], "label": 3},
    {"ctx": "He ties his shoes before", "endings": ["going for a run.", "the ocean boils.", "blue.", "seven cats."], "label": 0},
]


class BigramStandIn(nn.Module):
    """A model whose logits at each position are log BIGRAM[previous token]: GPT's call signature
    (model(x, all_logits=True) -> (logits, None)) and config.block_size, GPT-2's 50257 ids."""

    def __init__(self, block_size: int = 64):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, vocab_size=GPT2_VOCAB_SIZE)
        self.rows = {}

    def row(self, prev: int) -> torch.Tensor:
        probs = BIGRAM.get(prev, BIGRAM[None])
        if prev not in self.rows:
            r = torch.full((GPT2_VOCAB_SIZE,), math.log((1 - sum(probs.values())) / (GPT2_VOCAB_SIZE - len(probs))))
            for i, p in probs.items():
                r[i] = math.log(p)
            self.rows[prev] = r
        return self.rows[prev]

    def forward(self, idx: torch.Tensor, targets=None, all_logits: bool = False):
        assert targets is None and all_logits
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of length {idx.size(1)} is longer than block_size {self.config.block_size}")
        return torch.stack([self.row(int(t)) for t in idx.flatten()]).view(*idx.shape, -1), None


TOL = 1e-3  # the endings' losses differ by tenths of a nat; float32 rounding here: ~2e-5 a token with AVX-512, 2.1e-4 for 4 tokens with AVX2


@pytest.fixture(scope="module")
def rt() -> Runtime:
    return setup_runtime("cpu", "float32")


def write_items(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"activity_label": "x", "split": "val", **i}) + "\n" for i in items), encoding="utf-8")
    return path


def tiny_gpt(block_size: int = 64, seed: int = 0) -> GPT:
    """A 1-layer GPT of GPT-2's padded vocabulary, its tied embedding scaled up so that the
    losses of different tokens differ by whole nats, not hundredths."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=50304, n_layer=1, n_head=2, n_embd=16))
    nn.init.normal_(model.transformer.wte.weight, std=0.5)
    return model


def test_sum_and_per_token_loss_pick_different_endings(rt: Runtime):
    tok = GPT2Tokenizer()
    assert [tok.encode(" " + e) for e in ENDINGS] == [[X] * 4, [Y], [Z] * 2, [W] * 3]
    assert all(tok.encode(item.ctx)[-1:] != [t] for item in HAND_ITEMS for t in BIGRAM if t)  # contexts end in none of them
    model = BigramStandIn()
    sum_loss, avg_loss = item_losses(model, HAND_ITEMS, rt)
    for i in range(len(HAND_ITEMS)):  # to TOL: a float32 log-softmax sums 50,257 terms, in an order set by the CPU's vectors
        assert sum_loss[i].tolist() == pytest.approx(SUM_LOSS, abs=TOL)
        assert avg_loss[i].tolist() == pytest.approx(AVG_LOSS, abs=TOL)
    assert sum_loss.argmin(1).tolist() == [1, 1, 1, 1] and avg_loss.argmin(1).tolist() == [0, 0, 0, 0]

    for batch_items in (1, 3, 4):
        r = evaluate_hellaswag(model, HAND_ITEMS, rt, batch_items=batch_items)
        assert (r.correct, r.correct_norm, r.items, r.acc, r.acc_norm) == (1, 2, 4, 0.25, 0.5)
    # limit: the first items (labels 0 / 0, 1 / 0, 1, 0)
    assert [dataclass_counts(evaluate_hellaswag(model, HAND_ITEMS, rt, limit=k)) for k in (1, 2, 3)] == [(0, 1, 1), (1, 1, 2), (1, 2, 3)]


def test_a_long_row_keeps_its_ending(rt: Runtime):
    # the longest row: "Pick one:" (3 tokens) + 4 x's; 6 input tokens, cut to the last 4 (":" x x x):
    # every ending token is still scored after the token before it, so the losses are unchanged
    item = [HAND_ITEMS[0]]
    sum4, avg4 = item_losses(BigramStandIn(block_size=4), item, rt)
    assert sum4[0].tolist() == pytest.approx(SUM_LOSS, abs=TOL) and avg4[0].tolist() == pytest.approx(AVG_LOSS, abs=TOL)
    # block 3: the 4-token ending loses its first token (x after ":", 2 ln2): 3 x's after x, ln2 each
    sum3, avg3 = item_losses(BigramStandIn(block_size=3), item, rt)
    assert sum3[0].tolist() == pytest.approx([3 * LN2, *SUM_LOSS[1:]], abs=TOL)
    assert avg3[0].tolist() == pytest.approx([LN2, *AVG_LOSS[1:]], abs=TOL)


def reference_losses(model: GPT, item: Item) -> tuple[list[float], list[float]]:
    """Each ending's summed and mean loss, one unpadded row at a time, in float64: the logits at
    the positions before each ending token, over GPT-2's 50257 real ids (the padded ones left out)."""
    tok = GPT2Tokenizer()
    ctx = tok.encode(item.ctx)
    sums, avgs = [], []
    with torch.no_grad():
        for ending in item.endings:
            end = tok.encode(" " + ending)
            logits, _ = model(torch.tensor([ctx + end]), all_logits=True)
            nats = F.cross_entropy(logits[0, len(ctx) - 1 : -1, :GPT2_VOCAB_SIZE].double(), torch.tensor(end), reduction="none")
            sums.append(nats.sum().item())
            avgs.append(nats.mean().item())
    return sums, avgs


def test_losses_match_a_row_by_row_reference(tmp_path: Path, rt: Runtime):
    model = tiny_gpt().eval()
    items = load_items(str(write_items(tmp_path / "hs.jsonl", ITEMS)))
    sum_loss, avg_loss = item_losses(model, items, rt)
    labels, preds, preds_norm = [], [], []
    for i, item in enumerate(items):
        sums, avgs = reference_losses(model, item)
        assert sum_loss[i].tolist() == pytest.approx(sums, rel=1e-5) and avg_loss[i].tolist() == pytest.approx(avgs, rel=1e-5)
        labels.append(item.label)
        preds.append(min(range(4), key=sums.__getitem__))
        preds_norm.append(min(range(4), key=avgs.__getitem__))
    assert len(set(sum_loss.flatten().tolist())) == 20 and max(avg_loss.flatten()) - min(avg_loss.flatten()) > 1  # the losses tell endings apart
    r = evaluate_hellaswag(model, items, rt, batch_items=2)
    right = sum(p == y for p, y in zip(preds, labels, strict=True))
    right_norm = sum(p == y for p, y in zip(preds_norm, labels, strict=True))
    assert (r.correct, r.correct_norm, r.items) == (right, right_norm, 5)


def test_limit_takes_the_first_items_and_ranks_share_them(tmp_path: Path, rt: Runtime):
    model = tiny_gpt()
    model.train()
    items = load_items(str(write_items(tmp_path / "hs.jsonl", ITEMS)))
    whole = evaluate_hellaswag(model, items, rt)
    assert model.training  # the mode is restored
    assert whole.items == 5
    first3 = evaluate_hellaswag(model.eval(), items, rt, limit=3)
    assert not model.training
    assert dataclass_counts(first3) == dataclass_counts(evaluate_hellaswag(model, items[:3], rt))
    assert first3.items == 3
    # ranks 0 and 1 of 2 (no process group: each sees its own share) add up to the whole
    halves = [evaluate_hellaswag(model, items, Runtime("cpu", "cpu", "float32", rank=r, world_size=2)) for r in (0, 1)]
    assert [h.items for h in halves] == [3, 2]
    assert tuple(map(sum, zip(*map(dataclass_counts, halves), strict=True))) == dataclass_counts(whole)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_the_limit_takes_the_same_items_whatever_the_number_of_ranks(monkeypatch, world_size: int):
    """--hellaswag_items=N scores the first N items, split across the ranks after the cut: the
    score does not depend on how many GPUs a run has."""
    items = [Item(f"context {i}", tuple(ENDINGS), i % 4) for i in range(7)]
    scored = []

    def losses(model, batch, rt, tok):  # records what each rank scores; the losses do not matter here
        scored.extend(batch)
        return torch.zeros(len(batch), 4), torch.zeros(len(batch), 4)

    monkeypatch.setattr(hellaswag, "item_losses", losses)
    monkeypatch.setattr(hellaswag, "GPT2Tokenizer", lambda: None)
    ranks = [Runtime("cpu", "cpu", "float32", rank=r, world_size=world_size) for r in range(world_size)]
    counts = [evaluate_hellaswag(BigramStandIn(), items, rt, limit=5).items for rt in ranks]
    assert sorted(scored, key=items.index) == items[:5] and sum(counts) == 5


def dataclass_counts(r: hellaswag.HellaSwagResult) -> tuple[int, int, int]:
    return r.correct, r.correct_norm, r.items


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"ctx": "a", "endings": ["b", "c", "d"', "is not JSON"),
        ('{"ctx": "a", "endings": ["b", "c", "d"], "label": 0}', "has no endings of 4 texts"),
        ('{"ctx": "a", "endings": ["b", "c", "d", "e"], "label": 4}', "has no label 0-3"),
        ('{"ctx": "a", "endings": ["b", "c", "d", "e"], "label": "1"}', "has no label 0-3"),
        ('{"endings": ["b", "c", "d", "e"], "label": 1}', "has no text ctx"),
        ('["a", "b"]', "is not a JSON object"),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: str, problem: str):
    path = write_items(tmp_path / "hs.jsonl", ITEMS[:2])
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(UserError) as e:
        load_items(str(path))
    assert f"{path} line 3 {problem}" in str(e.value) and "\n" not in str(e.value)


def test_missing_and_empty_files(tmp_path: Path):
    with pytest.raises(UserError, match=r"nothing\.jsonl does not exist; pass --hellaswag_file=PATH") as e:
        load_items(str(tmp_path / "nothing.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="holds no HellaSwag items"):
        load_items(str(tmp_path / "empty.jsonl"))
    assert "\n" not in str(e.value)


def test_download_into_the_cache_once(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("GPTSUITE_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "hellaswag" / "hellaswag_val.jsonl"
    assert hellaswag.cache_path() == cached

    monkeypatch.setattr(hellaswag, "URL", "http://127.0.0.1:9/hellaswag_val.jsonl")  # nothing listens there
    with pytest.raises(UserError, match=r"could not download HellaSwag.*pass --hellaswag_file=PATH") as e:
        load_items()
    assert "\n" not in str(e.value) and not cached.exists()

    source = write_items(tmp_path / "served.jsonl", ITEMS)
    monkeypatch.setattr(hellaswag, "URL", source.as_uri())
    with pytest.raises(UserError, match="holds 5 items, not 10,042"):  # not the whole validation set: nothing cached
        load_items()
    assert not cached.exists()

    monkeypatch.setattr(hellaswag, "VAL_ITEMS", len(ITEMS))
    assert [i.label for i in load_items()] == [0, 1, 2, 3, 0]
    assert "downloading HellaSwag" in capsys.readouterr().out
    assert cached.read_bytes() == source.read_bytes() and list(cached.parent.iterdir()) == [cached]  # no temp file left
    source.unlink()
    assert len(load_items()) == 5 and capsys.readouterr().out == ""  # from the cache


def test_a_character_level_model_is_refused(tiny_checkpoint: Path, tmp_path: Path, rt: Runtime):
    path = write_items(tmp_path / "hs.jsonl", ITEMS)
    with pytest.raises(UserError, match="HellaSwag needs a GPT-2 BPE model") as e:
        eval_main([f"--out_dir={tiny_checkpoint}", "--device=cpu", "--task=hellaswag", f"--hellaswag_file={path}"])
    assert "\n" not in str(e.value) and "char-level" in str(e.value)
    char_model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(UserError, match="HellaSwag needs a GPT-2 BPE model"):
        evaluate_hellaswag(char_model, load_items(str(path)), rt)


def gpt2_checkpoint(out: Path, seed: int) -> GPT:
    model = tiny_gpt(block_size=32, seed=seed)
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": dict(GPT2_META), "config": {}}, out / "ckpt.pt")
    return model


def test_eval_task_hellaswag(tmp_path: Path, rt: Runtime, capsys):
    models = [gpt2_checkpoint(tmp_path / f"out{k}", seed=k) for k in (0, 1)]
    path = write_items(tmp_path / "hs.jsonl", ITEMS)
    items = load_items(str(path))
    expected = [evaluate_hellaswag(m, items, rt) for m in models]
    capsys.readouterr()

    eval_main([f"--out_dir={tmp_path / 'out0'}", "--device=cpu", "--task=hellaswag", f"--hellaswag_file={path}"])
    line = capsys.readouterr().out.strip()
    m = re.fullmatch(r"(\S+): hellaswag acc (\d\.\d{4}), acc_norm (\d\.\d{4}) \(5 items, [\d.]+ s, [\d.]+ items/s\)", line)
    assert m, line
    assert m[1] == str(tmp_path / "out0") and (float(m[2]), float(m[3])) == (round(expected[0].acc, 4), round(expected[0].acc_norm, 4))

    compare = ["--compare", str(tmp_path / "out0"), str(tmp_path / "out1")]
    eval_main([*compare, "--device=cpu", "--task=hellaswag", f"--hellaswag_file={path}", "--hellaswag_items=3"])
    out = capsys.readouterr().out
    assert "its first 3 of 5 items" in out
    table = [row for row in out.splitlines() if row.startswith("| ")]
    assert table[0] == "| model | items | acc | acc_norm |" and len(table) == 4
    for row, model in zip(table[2:], models, strict=True):
        r = evaluate_hellaswag(model, items, rt, limit=3)
        assert row.split(" | ")[1:] == ["3", f"{r.acc:.4f}", f"{r.acc_norm:.4f} |"]

    with pytest.raises(UserError, match="drop --in_context_docs"):
        eval_main(["--compare", f"{tmp_path / 'out0'}@2", "--device=cpu", "--task=hellaswag", f"--hellaswag_file={path}"])


DDP_SCRIPT = """
import json, sys
import torch
from torch.nn.parallel import DistributedDataParallel
from gptsuite.hellaswag import evaluate_hellaswag, load_items
from gptsuite.errors import leave
from gptsuite.runtime import setup_runtime, teardown_runtime
from test_hellaswag import tiny_gpt

rt = setup_runtime("cpu", "float32")
model = DistributedDataParallel(tiny_gpt())
r = evaluate_hellaswag(model, load_items(sys.argv[1]), rt)
json.dump([r.correct, r.correct_norm, r.items], open(f"{sys.argv[2]}.{rt.rank}", "w"))
del model  # DDP's reducer goes before the process group it uses (else gloo may abort the exit)
teardown_runtime(rt, finished=True)
leave(0)  # as the entry points end a torchrun worker: no interpreter finalization for gloo's threads to abort
"""


@pytest.mark.slow
def test_two_ranks_share_the_items_and_agree(tmp_path: Path, rt: Runtime):
    path = write_items(tmp_path / "hs.jsonl", ITEMS)
    (tmp_path / "ddp_hellaswag.py").write_text(DDP_SCRIPT)
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    ranks(2, str(tmp_path / "ddp_hellaswag.py"), str(path), str(tmp_path / "r"), env=env)  # as torchrun starts them
    one = evaluate_hellaswag(tiny_gpt(), load_items(str(path)), rt)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"r.{rank}").read_text()) == [one.correct, one.correct_norm, 5]


def test_empty_context_follows_endoftext():
    x, y = hellaswag.render([HAND_ITEMS[3]], GPT2Tokenizer(), 64)
    assert x[0].tolist() == [GPT2_EOT, X, X, X] and y[0].tolist() == [X, X, X, X]
    assert x[1].tolist() == [GPT2_EOT, 0, 0, 0] and y[1].tolist() == [Y, -1, -1, -1]  # right-padded, the padding not scored
