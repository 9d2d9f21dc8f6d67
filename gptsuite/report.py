"""The dataset report, printed at the end of every prepare and saved beside the data.

    data/<dataset>/report.json     documents, characters, words, tokens, the compute of one epoch
    data/<dataset>/doc_tokens.png  histogram of document length in tokens

Per document: characters (Unicode code points), words (runs of characters other than ASCII
whitespace) and tokens (without the end-of-document token), each as sum, mean, median, p95 and
max. A text prepared whole (shakespeare_char, data/text with one file) counts as one document.

One epoch is one pass over train.bin. Its training compute per token is 6N + 12·L·H·Q·T (forward
and backward: 6 FLOPs per parameter, plus attention over a context of T = 1024; PaLM, appendix B,
as flops.flops_per_token counts it), for the four GPT-2 sizes, and hours at 40% MFU on an A100 and
an H100 (bf16 dense peak).

A dataset with a trained BPE (prepare.py --tokenizer=bpe) also gets what its tokenizer buys, on
the val split (text the tokenizer did not learn from; its first COMPARE_TOKENS tokens), against
GPT-2's BPE on the same text: UTF-8 bytes per token, and the share of the tokens that the 1,000
most frequent token ids make up. Special tokens (the end of each document) are left out of both.
"""

from collections import Counter
from pathlib import Path

import numpy as np

from gptsuite.atomic import atomic_path
from gptsuite.datafiles import DTYPES, SPLITS, load_meta, token_dtype, write_json
from gptsuite.flops import GPT2_CONTEXT, GPT2_SIZES, flops_per_token, gpt2_params, peak_tflops
from gptsuite.tokenizer import GPT2_VOCAB_SIZE, GPT2Tokenizer, from_meta

MFU = 0.4
COMPARE_TOKENS = 1 << 22  # of val.bin, for the tokenizers' comparison
TOP = 1000  # the most frequent token ids whose share of the text the comparison gives
PEAK_GPUS = ("A100", "H100")  # bf16 dense peak from flops.GPU_PEAK_TFLOPS


class DocStats:
    """Characters, words and tokens of every document, 13 bytes a document; no text is kept."""

    MERGE = 256  # the parts of this many chunks are merged into one: a part's arrays cost ~1 KB, whatever its documents

    def __init__(self):
        self._parts: list[dict[str, np.ndarray]] = []  # merged blocks, then up to MERGE chunks' parts
        self._merged = 0  # how many of _parts are merged blocks
        self.skipped = 0  # missing, empty or whitespace-only documents
        self.bad: Counter = Counter()  # records that did not fit the dataset's format, skipped (--skip_bad), by reason

    def add(self, split: np.ndarray, chars: np.ndarray, words: np.ndarray, tokens: np.ndarray) -> None:
        self._parts.append(
            {"split": split.astype(np.uint8), "chars": chars.astype(np.uint32), "words": words.astype(np.uint32), "tokens": tokens.astype(np.uint32)}
        )
        if len(self._parts) - self._merged >= self.MERGE:  # memory grows by 13 bytes a document, not by ~1 KB a chunk
            recent = self._parts[self._merged :]
            self._parts[self._merged :] = [{k: np.concatenate([p[k] for p in recent]) for k in recent[0]}]
            self._merged += 1

    def column(self, name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in self._parts]) if self._parts else np.zeros(0, dtype=np.uint32)

    def __len__(self) -> int:
        return sum(len(p["split"]) for p in self._parts)


def epoch_compute(tokens: int) -> dict:
    peaks = {gpu: peak_tflops(gpu, half_precision=True) for gpu in PEAK_GPUS}
    models = {}
    for size, (n_layer, n_head, n_embd) in GPT2_SIZES.items():
        params = gpt2_params(n_layer, n_embd, GPT2_VOCAB_SIZE)
        flops = flops_per_token(params, n_layer, n_head, n_embd, GPT2_CONTEXT) * tokens
        hours = {gpu: flops / (peak * 1e12 * MFU) / 3600 for gpu, peak in peaks.items()}
        models[f"gpt2-{size}"] = {"params": params, "flops": flops, "hours": hours}
    return {"tokens": tokens, "block_size": GPT2_CONTEXT, "mfu": MFU, "peak_tflops": peaks, "models": models}


def summary(values: np.ndarray) -> dict:
    v = values.astype(np.int64)
    if not v.size:
        return {"sum": 0, "mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    return {"sum": int(v.sum()), "mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": int(v.max())}


def token_stats(ids: np.ndarray, n_bytes: int) -> dict:
    counts = np.sort(np.bincount(ids))[::-1]
    return {"tokens": len(ids), "bytes_per_token": n_bytes / max(len(ids), 1), f"top{TOP}_share": float(counts[:TOP].sum() / max(len(ids), 1))}


def compare_tokenizers(data_dir: Path) -> dict:
    """A trained BPE against GPT-2's on the same text, the val split's (see the module's docstring)."""
    meta = load_meta(data_dir)
    tok = from_meta(meta["tokenizer"])
    ids = np.fromfile(data_dir / "val.bin", dtype=DTYPES[token_dtype(meta)], count=COMPARE_TOKENS).astype(np.int64)
    special = np.isin(ids, list(tok.specials.values()))
    cuts = np.flatnonzero(special)
    texts = [tok.decode(part[1:] if i else part) for i, part in enumerate(np.split(ids, cuts))]  # the texts between special tokens
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    gpt2 = GPT2Tokenizer()
    theirs = np.concatenate([gpt2.encode_array(t).astype(np.int64) for t in texts if t] or [np.zeros(0, dtype=np.int64)])
    return {"split": "val", "bytes": n_bytes, "bpe": token_stats(ids[~special], n_bytes), "gpt2": token_stats(theirs, n_bytes)}


def build_report(name: str, meta: dict, stats: DocStats, data_dir: Path | None = None) -> dict:
    """The report of a prepared dataset; with data_dir, a trained BPE's comparison with GPT-2's."""
    split = stats.column("split")
    return (
        {
            "dataset": name,
            "tokenizer": meta["tokenizer"]["kind"],
            "documents": {
                "total": len(split),
                **{s: int((split == i).sum()) for i, s in enumerate(SPLITS)},
                "skipped_empty": stats.skipped,
                "skipped_bad": dict(stats.bad),
            },
            "per_document": {"characters": summary(stats.column("chars")), "words": summary(stats.column("words")), "tokens": summary(stats.column("tokens"))},
            "tokens_per_split": {s: meta[f"{s}_tokens"] for s in SPLITS},
            "histogram": "doc_tokens.png",
            "epoch": epoch_compute(meta["train_tokens"]),
        }
        | ({"loss_mask": loss_mask_report(meta, stats)} if meta.get("loss_mask") else {})
        | ({"tokenizers": compare_tokenizers(data_dir)} if data_dir is not None and meta["tokenizer"]["kind"] == "bpe" else {})
    )


def loss_mask_report(meta: dict, stats: DocStats) -> dict:
    """What a masked dataset trains on: the share of tokens that count, the longest prompt, and what
    one document to a row would cost in padding (rows are packed from documents' starts instead)."""
    block = int(meta.get("block_size") or GPT2_CONTEXT)
    end = 0 if meta.get("document_end") is None else 1
    counted = meta["loss_mask"]["counted_tokens"]
    tokens = stats.column("tokens").astype(np.int64) + end
    out = {
        "counted_share": {s: counted[s] / max(meta[f"{s}_tokens"], 1) for s in SPLITS},
        "longest_prompt": meta["loss_mask"]["longest_prompt"],
        "block_size": block,
        "one_per_row_padding": padding_if_one_per_row(tokens, block),
    }
    if meta.get("objective") == "dpo":  # preference pairs: two documents each, one to a row of DPO's batches
        out |= {"pairs": {s: meta["documents"][s] // 2 for s in SPLITS}, "longest_document": int(tokens.max(initial=0))}
    return out


def padding_if_one_per_row(tokens: np.ndarray, block_size: int) -> float:
    """The share of a batch that would be padding with one document to a row of block_size + 1
    tokens (documents' token counts with their end tokens; longer ones cut)."""
    used = np.minimum(tokens, block_size + 1)
    return float(1 - used.sum() / ((block_size + 1) * max(len(used), 1)))


def save_histogram(tokens: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    lo, hi = max(int(tokens.min()), 1), max(int(tokens.max()), 2)
    if hi / lo > 100:  # lengths spanning orders of magnitude read better on a log axis
        ax.hist(tokens, bins=np.geomspace(lo, hi, 60))
        ax.set_xscale("log")
    else:
        ax.hist(tokens, bins=min(60, max(len(tokens), 1)))
    ax.set_xlabel("document length (tokens)")
    ax.set_ylabel("documents")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(report: dict, stats: DocStats, out_dir: Path) -> None:
    tokens = stats.column("tokens")
    title = f"{report['dataset']}: {len(tokens):,} documents, {int(tokens.sum()):,} tokens"
    save_histogram(tokens, out_dir / report["histogram"], title)
    write_json(out_dir / "report.json", report)


def describe_bad(bad: dict) -> str:
    """Records skipped, by reason: "3 no assistant message, 1 longer than block_size"."""
    return ", ".join(f"{n:,} {reason}" for reason, n in sorted(bad.items(), key=lambda kv: -kv[1]))


def format_report(report: dict, out_dir: Path) -> str:
    docs, per = report["documents"], report["per_document"]
    lines = [
        f"dataset report ({out_dir / 'report.json'}, histogram {out_dir / report['histogram']})",
        (
            "documents: 1 text, split by position (its first part is train, the rest val)"
            if docs["total"] == 1
            else f"documents: {docs['total']:,} (train {docs['train']:,}, val {docs['val']:,})"
        )
        + (f", {docs['skipped_empty']:,} empty ones skipped" if docs["skipped_empty"] else "")
        + (f", {sum(docs['skipped_bad'].values()):,} bad records skipped ({describe_bad(docs['skipped_bad'])})" if docs.get("skipped_bad") else ""),
        f"{'per document':<14}{'sum':>16}{'mean':>12}{'median':>10}{'p95':>10}{'max':>12}",
    ]
    for name, s in per.items():
        lines.append(f"{name:<14}{s['sum']:>16,}{s['mean']:>12,.1f}{s['median']:>10,.0f}{s['p95']:>10,.0f}{s['max']:>12,}")
    lines.append("tokens per split: " + ", ".join(f"{s} {n:,}" for s, n in report["tokens_per_split"].items()))
    if "loss_mask" in report:
        m = report["loss_mask"]
        lines.append(
            f"loss on responses: {m['counted_share']['train']:.0%} of train tokens count (the rest is prompt, context); longest prompt {m['longest_prompt']:,} tokens"
        )
        if "pairs" in m:
            lines.append(
                f"preference pairs: train {m['pairs']['train']:,}, val {m['pairs']['val']:,} (a prompt with its chosen answer, then with its rejected one); "
                f"the longest is {m['longest_document']:,} tokens: train with --block_size={m['longest_document']:,} or more"
            )
        else:
            lines.append(
                f"rows start at documents and are packed: one document to a row of {m['block_size']:,} would be {m['one_per_row_padding']:.0%} padding"
            )
    if "tokenizers" in report:
        c = report["tokenizers"]
        lines.append(
            f"tokenizers on the {c['split']} split ({c['bytes']:,} bytes of text the BPE was not trained on): bytes per token, share of the tokens in the {TOP:,} most frequent ids"
        )
        for kind, name in (("bpe", "trained BPE"), ("gpt2", "GPT-2 BPE")):
            lines.append(f"  {name:<12}{c[kind]['bytes_per_token']:>8.2f}{c[kind][f'top{TOP}_share']:>9.1%}")
    epoch = report["epoch"]
    lines.append(f"one epoch ({epoch['tokens']:,} train tokens) at block size {epoch['block_size']}, {epoch['mfu']:.0%} MFU:")
    for model, m in epoch["models"].items():
        hours = ", ".join(f"{gpu} {h:,.3g} h" for gpu, h in m["hours"].items())
        lines.append(f"  {model:<10} {m['flops']:.2e} FLOPs  {hours}")
    return "\n".join(lines)
