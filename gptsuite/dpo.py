"""DPO: tune a model on preference pairs (prepare.py preferences), against a frozen reference.

For a prompt x with a chosen answer y_w and a rejected one y_l, the policy's log-ratios to the
reference, r = log pi(y|x) - log ref(y|x) (log-probabilities summed over the answer's tokens),
give the loss

    sigmoid  -log sigmoid(beta * (r_w - r_l))                      (DPO, Rafailov et al. 2023)
    ipo      ((r_w / |y_w| - r_l / |y_l|) - 1 / (2 * beta))^2      (IPO, Azar et al. 2023, per-token means as TRL)

plus, with --dpo_sft_weight=w, w times the chosen answers' next-token loss (TRL's "sft" term; RPO,
Pang et al. 2024): DPO alone may lower the chosen answers' likelihood too, only less than the
rejected ones' (most of all where the two share tokens, such as an end marker), and a model that
starts from a good chat run can lose what it had; the term keeps the chosen answers likely.

and the metrics TRL's DPOTrainer logs: rewards/chosen and rewards/rejected (beta * r), their
margins and accuracies (the share of pairs whose chosen answer has the higher reward), and the
policy's logps/chosen and logps/rejected. The reference is the run's starting point, frozen
(objectives.Reference: under LoRA the base with the adapters off, no second copy); with
--dpo_precompute_ref its log-probabilities of every pair are computed once at the start, and a
full fine-tune's copy of the starting weights is then let go.

A dataset of pairs holds each as two documents, the prompt with the chosen answer, then with the
rejected one, and a loss mask on the answers (masks.py). A batch is batch_size pairs: 2 x
batch_size rows, the chosen first, each one document from its start (targets past its end -1).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from configurator import option
from gptsuite.batches import SPLITS, Batches, to_device
from gptsuite.datafiles import DTYPES
from gptsuite.errors import UserError
from gptsuite.objectives import Objective, Reference, register

DPO_LOSSES = ("sigmoid", "ipo")


@dataclass
class DpoConfig:
    """A DPO run's settings (its --dpo_* keys)."""

    KEY_PREFIX: ClassVar[str] = "dpo_"
    # preference tuning (objective=dpo, on pairs from prepare.py preferences)
    beta: float = option(0.1, gt=0)  # how far the tuned model may move from the reference: larger keeps it closer (TRL's beta)
    loss: str = option("sigmoid", choices=DPO_LOSSES)  # DPO's sigmoid loss, or IPO's squared one on per-token log-ratios
    precompute_ref: bool = False  # the reference's log-probabilities of every pair once, at the start; a full fine-tune then frees its copy
    sft_weight: float = option(0.0, ge=0)  # plus this times the chosen answers' next-token loss (TRL's "sft" term, RPO): keeps them likely


@dataclass
class PairBatch:
    x: torch.Tensor  # (2B, T): the chosen answers' rows, then the rejected ones'
    y: torch.Tensor  # (2B, T): targets, -1 where they do not count (the prompt, past the document)
    split: str
    pairs: torch.Tensor  # (B,): which pairs of the split


def pair_rows(data: np.ndarray, mask: np.ndarray, starts: np.ndarray, pairs: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (x, y) of the pairs' documents, chosen ones first: each document from its start; a target
    that is not an answer's, and everything past the document, is -1 (inputs there are 0)."""
    docs = np.concatenate([2 * pairs, 2 * pairs + 1])
    ends = np.append(starts[1:], len(data))
    x = np.zeros((len(docs), block_size), dtype=np.int64)
    y = np.full((len(docs), block_size), -1, dtype=np.int64)
    for r, d in enumerate(docs.tolist()):
        a, b = int(starts[d]), int(ends[d])
        n = min(b - a - 1, block_size)
        row = data[a : a + n + 1].astype(np.int64)
        x[r, :n] = row[:-1]
        y[r, :n] = np.where(mask[a + 1 : a + 1 + n] == 1, row[1:], -1)
    return torch.from_numpy(x), torch.from_numpy(y)


def completion_logps(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-probability of its counted targets, and how many there are."""
    token = -F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="none").view_as(y)
    return token.sum(-1), (y != -1).sum(-1)


def dpo_loss(
    logps: torch.Tensor, ref_logps: torch.Tensor, counts: torch.Tensor, beta: float, kind: str, sft_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss over the pairs and TRL's metrics, from the policy's and the reference's log-probs
    of the 2B answers (chosen first) and their token counts; sft_weight adds that much of the chosen
    answers' mean next-token loss per token."""
    chosen, rejected = logps.chunk(2)
    ratio_w, ratio_l = (logps - ref_logps).chunk(2)
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * (ratio_w - ratio_l))
    else:
        n_w, n_l = counts.clamp_min(1).chunk(2)
        losses = (ratio_w / n_w - ratio_l / n_l - 1 / (2 * beta)) ** 2
    reward_w, reward_l = beta * ratio_w.detach(), beta * ratio_l.detach()
    metrics = {
        "rewards/chosen": reward_w.mean(),
        "rewards/rejected": reward_l.mean(),
        "rewards/margins": (reward_w - reward_l).mean(),
        "rewards/accuracies": (reward_w > reward_l).float().mean(),
        "logps/chosen": chosen.detach().mean(),
        "logps/rejected": rejected.detach().mean(),
    }
    loss = losses.mean()
    if sft_weight:
        loss = loss - sft_weight * chosen.sum() / counts.chunk(2)[0].sum().clamp_min(1)
    return loss, metrics


@register
class DPO(Objective):
    name = "dpo"
    metrics = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")
    needs_reference = True
    holds = "dpo"  # what meta.json's "objective" says of a dataset this objective trains on
    config_part = "dpo"
    rows_per_example = 2  # a pair: its chosen and its rejected answer

    def __init__(self, batches: Batches, reference: Reference, cfg: DpoConfig):
        super().__init__(batches, reference)
        self.cfg = cfg
        self.data, self.block_size, self.rt = batches.data, batches.block_size, batches.rt
        self.pairs = {s: len(self.data.loss_masks[s].starts) // 2 for s in SPLITS}
        if not self.pairs["train"] or not self.pairs["val"]:
            raise UserError(f"{self.data.dir} has no preference pairs in {'train' if not self.pairs['train'] else 'val'}; prepare it again with more pairs")
        longest = max(int(np.diff(np.append(self.data.loss_masks[s].starts, len(self.tokens(s)))).max()) for s in SPLITS)
        if longest - 1 > self.block_size:
            raise UserError(
                f"the longest prompt and answer in {self.data.dir} is {longest:,} tokens, longer than a row of block_size={self.block_size}: pass --block_size={longest - 1} or more"
            )
        self.cached: dict[str, torch.Tensor] | None = None
        if cfg.precompute_ref:
            self.cached = {s: self.reference_logps_of(s) for s in SPLITS}
            if not reference.lora:
                self.reference = None  # a full fine-tune's copy of the starting weights is no longer needed

    def summary(self) -> str:
        how = "its log-probabilities precomputed" if self.cached is not None else "the base with the adapters off" if self.reference.lora else "a frozen copy"
        return (
            f"DPO ({self.cfg.loss}, beta {self.cfg.beta}) on {self.pairs['train']:,} train and {self.pairs['val']:,} val preference pairs, "
            f"{self.batches.cfg.batch_size} pairs a micro-batch; the reference is the starting weights: {how}"
        )

    def tokens(self, split: str) -> np.ndarray:
        return np.memmap(self.data.split(split), dtype=DTYPES[self.data.dtype], mode="r")

    def batch(self, split: str, pairs: np.ndarray) -> PairBatch:
        m = self.data.loss_masks[split]
        x, y = pair_rows(self.tokens(split), m.mask, m.starts, pairs, self.block_size)
        return PairBatch(to_device(x, self.rt), to_device(y, self.rt), split, torch.from_numpy(pairs))

    def train_batches(self, iter_num: int):
        """Batch j of iteration n: batch_size pairs drawn from (seed, 0, index), as Batches draws rows."""
        cfg, rt = self.batches.cfg, self.rt
        accum_steps = cfg.accum_steps(rt.world_size)
        while True:
            for micro_step in range(accum_steps):
                index = iter_num * cfg.gradient_accumulation_steps + rt.rank * accum_steps + micro_step
                yield self.batch("train", np.random.default_rng((self.batches.seed, 0, index)).integers(0, self.pairs["train"], cfg.batch_size))
            iter_num += 1

    def eval_batch(self, split: str, k: int) -> PairBatch:
        """Batch k of a split: its pairs in order, k * batch_size on (wrapping round), so that
        eval_iters x batch_size >= the split's pairs scores every one of them."""
        b = self.batches.cfg.batch_size
        return self.batch(split, (k * b + np.arange(b)) % self.pairs[split])

    @torch.no_grad()
    def reference_logps_of(self, split: str) -> torch.Tensor:
        """The reference's log-probs of every pair of a split, (pairs, 2): the ranks share the work."""
        n, b = self.pairs[split], self.batches.cfg.batch_size
        out = torch.zeros(n, 2, device=self.rt.device)
        for start in range(self.rt.rank * b, n, b * self.rt.world_size):
            batch = self.batch(split, np.arange(start, min(start + b, n)))
            with self.rt.autocast():
                logps, _ = completion_logps(self.reference.logits(batch.x), batch.y)
            out[start : start + len(batch.pairs)] = torch.stack(logps.chunk(2), dim=1).float()
        if self.rt.distributed:
            torch.distributed.all_reduce(out)
        return out

    def loss(self, model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, _ = model(batch.x, all_logits=True)
        logps, counts = completion_logps(logits, batch.y)
        if self.cached is not None:
            ref = self.cached[batch.split][batch.pairs.to(self.cached[batch.split].device)]
            ref_logps = torch.cat([ref[:, 0], ref[:, 1]])
        else:
            ref_logps, _ = completion_logps(self.reference.logits(batch.x), batch.y)
        return dpo_loss(logps, ref_logps, counts, self.cfg.beta, self.cfg.loss, self.cfg.sft_weight)
