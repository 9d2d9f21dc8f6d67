"""notebooks/finetune_pubmed.ipynb runs top to bottom on a CPU with no network: it prepares tiny
local PubMed data, trains a tiny model, plots, samples, evaluates and exports it; run again on the
same out_dir with more iterations, it resumes the run instead of starting over.

The notebook's settings are overridden the way papermill does it: a cell of assignments is put
right after the cell tagged "parameters". A cell that raises fails the test (nbclient's
CellExecutionError). Without nbclient and ipykernel installed it is skipped."""

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT

# what runs a notebook: nbclient (with nbformat) and a python3 kernel (ipykernel)
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = ROOT / "notebooks" / "finetune_pubmed.ipynb"
PAPERS = [
    {"abstract": f"We study protein {i} in mice.\nIt binds.", "article": f"Introduction {i}.\nProtein {i} is known.\n\nMethods: we did things " * (i + 1)}
    for i in range(12)
]
PROMPT = "ABSTRACT:\nWe study protein 42 in rats.\n\nARTICLE:\n"
TIMEOUT = 180  # seconds per cell


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def with_settings(nb: nbformat.NotebookNode, **settings) -> nbformat.NotebookNode:
    """A copy of nb with a cell assigning `settings` right after its parameters cell."""
    nb = nbformat.from_dict(nb)
    at = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(at) == 1, "the notebook has exactly one cell tagged 'parameters'"
    source = "# injected by tests/test_notebook.py\n" + "".join(f"{key} = {value!r}\n" for key, value in settings.items())
    injected = nbformat.v4.new_code_cell(source, id="injected-parameters")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at[0] + 1, injected)
    return nb


def execute(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """Run nb in a python3 kernel started in the notebook's folder, as Jupyter does; its cells by id."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return {cell.id: cell for cell in nb.cells}


def text(cell: nbformat.NotebookNode) -> str:
    """What a code cell printed."""
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@pytest.mark.slow
def test_notebook_trains_plots_samples_evaluates_exports_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")  # the kernel and the commands it runs inherit these: nothing is downloaded
    out, hf = tmp_path / "out", tmp_path / "hf"
    settings = dict(
        OUT_DIR=str(out),
        DATA_DIR=str(tmp_path / "data"),
        INIT_FROM="scratch",
        DATA_FILES=str(write_jsonl(tmp_path / "train.jsonl", PAPERS[:9])),
        VAL_FILES=str(write_jsonl(tmp_path / "val.jsonl", PAPERS[9:])),
        MAX_DOCS=0,
        MAX_ITERS=10,
        BATCH_SIZE=2,
        GRADIENT_ACCUMULATION_STEPS=1,
        BLOCK_SIZE=32,  # room for the 18-token prompt (a prompt must leave the model room to write)
        EVAL_INTERVAL=5,
        EVAL_ITERS=2,
        DEVICE="cpu",
        EXTRA_TRAIN_ARGS=["--n_layer=1", "--n_head=2", "--n_embd=32"],
        MAX_NEW_TOKENS=20,
        ABSTRACT="We study protein 42 in rats.",
        EVAL_MAX_TOKENS=0,
        HF_DIR=str(hf),
        MOUNT_DRIVE=False,
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = execute(with_settings(nb, **settings))

    assert (tmp_path / "data" / "train.bin").is_file() and (tmp_path / "data" / "val.bin").is_file()
    trained = text(cells["train"])
    assert "step 0: train loss" in trained and "iter 10: loss" in trained and "resum" not in trained, trained
    assert (out / "ckpt.pt").is_file()
    assert any("image/png" in o.get("data", {}) for o in cells["plot"].outputs), cells["plot"].outputs
    sampled = text(cells["sample"])
    assert PROMPT in sampled, sampled  # the abstract in the template
    assert sampled.split(PROMPT, 1)[1].split("\n---------------", 1)[0].strip(), sampled  # and an article after it
    assert re.search(r": val loss \d+\.\d+, perplexity \d", text(cells["eval"])), text(cells["eval"])
    assert (hf / "config.json").is_file() and (hf / "model.safetensors").is_file()
    assert PROMPT in text(cells["load"]), text(cells["load"])  # transformers loaded the export and generated

    # the same notebook up to its training cell again, on the same OUT_DIR with more iterations:
    # what a Colab user does after a disconnect. The run goes on from iter 10 instead of starting over.
    upto = [c.id for c in nb.cells].index("train") + 1
    again = nbformat.from_dict(nb)
    again.cells = again.cells[:upto]
    resumed = text(execute(with_settings(again, **{**settings, "MAX_ITERS": 20}))["train"])
    assert "resuming from" in resumed and "at iter 10" in resumed and "iter 11: loss" in resumed and "iter 20: loss" in resumed, resumed
    assert "step 0:" not in resumed and "iter 1: loss" not in resumed, resumed
    logged = [r["iter"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert logged == list(range(1, 21)), logged  # every step logged once: the run continued, it did not restart
