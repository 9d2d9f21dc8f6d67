"""A tokenizer fitted to the corpus: a byte-level BPE trained on the training split, or one
trained before, reused (prepare.py --tokenizer=bpe --vocab_size=N, --tokenizer=FILE_OR_DATASET).

Training runs Hugging Face's `tokenizers` over a stream of texts: it counts the GPT-2 pre-tokens
(words) of each batch in parallel threads and keeps only those counts, so memory grows with the
corpus' distinct words, not its size. Every byte is in the vocabulary from the start (no text is
ever unknown), then the most frequent pairs are merged until vocab_size ids, special tokens
(tokenizer.SPECIAL_TOKENS) included; fewer if the corpus runs out of pairs to merge. The same
texts and vocab_size give the same tokenizer.json, byte for byte. The special tokens' spellings are
cut out of the texts first, so no merge is spent on them.
"""

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from gptsuite.chat import BadRecord, Marked
from gptsuite.datafiles import DATA_ROOT, DocumentCorpus, load_meta
from gptsuite.errors import UserError
from gptsuite.textscan import progress
from gptsuite.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, BPETokenizer, cut_at_bpe_cuts, from_meta, stored_meta

MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte and the special tokens
MAX_VOCAB = 1 << 32  # ids that uint32 holds
DEFAULT_VOCAB = 8192
SPECIALS_RE = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
TRAIN_PIECE = 1 << 14  # characters


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise UserError(
            f"--vocab_size={vocab_size} is {'too small' if vocab_size < MIN_VOCAB else 'too large for uint32 token ids'}: a byte-level BPE needs "
            f"{MIN_VOCAB} ids for its 256 bytes and {len(SPECIAL_TOKENS)} special tokens, and at most {MAX_VOCAB:,}; pass e.g. --vocab_size={DEFAULT_VOCAB}"
        )


def learnable(texts: Iterable[str]) -> Iterator[str]:
    """The texts without the special tokens' spellings, in pieces of about TRAIN_PIECE characters
    cut where GPT-2's pre-tokenizer cuts anyway (the same words): `tokenizers` holds several times
    a text's size while it pre-tokenizes it, so a file of a few MB would cost hundreds of MB."""
    for text in texts:
        for part in SPECIALS_RE.split(text):
            yield from (piece for piece in cut_at_bpe_cuts(part, TRAIN_PIECE) if piece)


def train_bpe(texts: Iterable[str], vocab_size: int, total: int | None = None) -> str:
    """A byte-level BPE of at most vocab_size ids trained on `texts` (a stream, read once), as the
    text of its tokenizer.json. `total`: how many texts there are, for the progress bar."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's regex, then bytes
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bar = progress(total=total, desc="training the tokenizer", unit="text", disable=total is None or total < 1000)

    def counted():  # not `bar.update(1) or t`: update() returns True when it redraws the bar
        for t in texts:
            bar.update(1)
            yield t

    try:
        tok.train_from_iterator(learnable(counted()), trainer)
    finally:
        bar.close()
    return tok.to_str()


def reused_tokenizer(spec: str) -> BPETokenizer:
    """The tokenizer --tokenizer=FILE_OR_DATASET names: a tokenizer.json, or a prepared dataset
    (a folder, or a name under data/) that holds one, checked against its meta.json."""
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            return BPETokenizer(path.read_text(encoding="utf-8"), where=str(path))
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the tokenizer {path} ({e}); pass a readable tokenizer.json") from None
    folder = path if path.is_dir() else DATA_ROOT / spec
    if not folder.is_dir() or not ((folder / "meta.json").is_file() or (folder / TOKENIZER_FILE).is_file()):
        raise UserError(
            f"--tokenizer={spec} is not gpt2, char, bpe, a tokenizer.json file, or a prepared dataset ({folder} has no meta.json); "
            "pass one of those (--tokenizer=bpe trains one on this data)"
        )
    if not (folder / "meta.json").is_file():
        return BPETokenizer((folder / TOKENIZER_FILE).read_text(encoding="utf-8"), where=str(folder / TOKENIZER_FILE))
    tok = load_meta(folder)["tokenizer"]  # checks tokenizer.json against the sha256 meta.json records
    if tok["kind"] != "bpe":
        raise UserError(f"{folder} is tokenized with {tok['kind']}, not a trained BPE; pass --tokenizer={tok['kind']} to use the same")
    return BPETokenizer(tok["json"], where=str(folder / TOKENIZER_FILE))


def bpe_settings(spec: str, vocab_size: int) -> tuple[dict, BPETokenizer | None]:
    """What meta.json's `prepared_from` records of a BPE tokenizer (a trained one's vocab_size, a
    reused one's sha256), and the reused tokenizer (None: one is trained on the data)."""
    if spec == "bpe":
        check_vocab_size(vocab_size)
        return {"tokenizer": "bpe", "vocab_size": vocab_size}, None
    tok = reused_tokenizer(spec)
    return {"tokenizer": "bpe", "tokenizer_sha256": tok.sha256}, tok


def train_texts(corpus: DocumentCorpus) -> Iterator[str]:
    """The texts of the train split's documents, for a tokenizer to learn from (a bad record's are
    left out: the tokenizing pass skips or refuses it)."""
    for split, record in corpus.documents():
        if split != "train":
            continue
        try:
            text = corpus.format(record) if corpus.format else record
        except BadRecord:
            continue
        text = text.text if isinstance(text, Marked) else text
        if text:
            yield text


def bpe_tokenizer(reused, vocab_size: int, train_texts: Callable[[], Iterable[str]], total: int | None = None):
    """The reused tokenizer, or a BPE trained on train_texts() (the training split only)."""
    if reused is not None:
        return reused
    tok = BPETokenizer(train_bpe(train_texts(), vocab_size, total))
    if tok.vocab_size < vocab_size:
        print(f"note: the training text has too few distinct pairs of tokens for {vocab_size:,} ids: the tokenizer has {tok.vocab_size:,}")
    return tok


def tokenizer_settings(spec: str | dict, dtype: str, vocab_size: int) -> tuple[dict, str, BPETokenizer | None]:
    """What `prepared_from` records of the tokenizer --tokenizer names, the dtype of its ids (uint32
    where a BPE's do not fit uint16), and the BPE it reuses, if any."""
    if isinstance(spec, dict):  # a model's own tokenizer (its metadata: a preference dataset's base), reused
        tok = from_meta(spec)
        return {"tokenizer": stored_meta(spec)}, ids_dtype(tok.vocab_size, dtype), tok
    if spec in ("gpt2", "char"):
        return {"tokenizer": spec}, dtype, None
    recorded, reused = bpe_settings(spec, vocab_size)
    return recorded, ids_dtype(reused.vocab_size if reused else vocab_size, dtype), reused


def ids_dtype(vocab_size: int, dtype: str) -> str:
    """uint16 while the vocabulary fits it, else uint32 (asked for or not)."""
    if dtype == "uint16" and vocab_size > 1 << 16:
        print(f"note: {vocab_size:,} token ids do not fit uint16: writing uint32")
        return "uint32"
    return dtype
