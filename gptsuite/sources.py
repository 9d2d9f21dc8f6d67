"""Where datasets come from: the dataset plugins (data/<name>/prepare.py) and the readers of
user files they share (tables of records, globs of files, a seeded split by document).
"""

import csv
import glob
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gptsuite import datafiles
from gptsuite.chat import BadRecord
from gptsuite.errors import UserError

RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")  # files of records: conversations, preference pairs
PLUGINS = Path(__file__).resolve().parents[1] / "data"  # data/<name>/prepare.py, beside the entry points


def available_datasets() -> list[str]:
    return sorted(p.parent.name for p in PLUGINS.glob("*/prepare.py"))


def load_dataset_module(name: str):
    """The dataset plugin data/<name>/prepare.py (a Config dataclass and corpus(cfg, out_dir))."""
    path = PLUGINS / name / "prepare.py"
    if not path.is_file():
        raise UserError(f"unknown dataset '{name}'; available: {', '.join(available_datasets())}")
    spec = importlib.util.spec_from_file_location(f"dataset_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered, so that its Config's source (the --help text) can be found
    spec.loader.exec_module(module)
    return module


TABLE_SUFFIXES = (".jsonl", ".parquet", ".csv")


def read_document(path: Path) -> str:
    """A document file's text, for a dataset that reads one document per file."""
    # a leading byte-order mark is not text; \r\n line ends become \n
    return datafiles.read_text(path, "file", "pass an existing UTF-8 file, or remove it", encoding="utf-8-sig")


def expand_files(spec: str, option: str) -> list[Path]:
    """Comma-separated paths or glob patterns, each matching at least one file, in sorted order."""
    paths = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise UserError(f"{option}: no file matches {pattern}")
        paths += [Path(m) for m in matches]
    if not paths:
        raise UserError(f"{option} names no files; pass paths like {option}=a.parquet,b.parquet")
    return paths


def _check_fields(path: Path, have: Iterable[str], fields: list[str], fix: str) -> None:
    have = list(have)
    missing = [f for f in fields if f not in have]
    if missing:
        raise UserError(f"{path} has no field {', '.join(repr(m) for m in missing)}; its fields are {', '.join(map(repr, have))} ({fix})")


def table_fields(path: Path) -> list[str]:
    """The column names of a .jsonl (its first object's keys), .parquet or .csv table."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        with open(path, encoding="utf-8", newline="") as f:
            if suffix == ".csv":
                return next(csv.reader(f), [])
            first = next((line for line in f if line.strip()), "{}")
            obj = json.loads(first)
            return list(obj) if isinstance(obj, dict) else []
    except (OSError, ValueError, UnicodeDecodeError):
        return []  # read_records reports what is wrong with the file


def _text_values(path: Path, where: str, row: tuple) -> tuple:
    for v in row:
        if v is not None and not isinstance(v, str):
            raise UserError(f"{path} {where}: a value is {type(v).__name__}, not text; name a text field")
    return row  # a missing value (null) stays None: a document without text, skipped and counted


def read_records(path: Path, fields: list[str], fix: str = "choose one with --field=NAME") -> Iterator[tuple[str | None, ...]]:
    """The named fields of every row of a .jsonl, .parquet or .csv file, streamed (a null value as
    None); `fix` ends the error for a missing field (what the user does about it with this dataset's options)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UserError(f"{path}: unknown file type '{suffix}'; use {', '.join(TABLE_SUFFIXES)}")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            f = pq.ParquetFile(path)
            _check_fields(path, f.schema_arrow.names, fields, fix)
            for batch in f.iter_batches(batch_size=1024, columns=fields):
                for row in zip(*(batch.column(name).to_pylist() for name in fields), strict=True):
                    yield _text_values(path, "row", row)
        elif suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path} line {n} is not JSON ({e.msg}); each line must be one JSON object") from None
                    if not isinstance(obj, dict):
                        raise UserError(f"{path} line {n} is not a JSON object; each line must be an object with the field(s) {', '.join(fields)}")
                    _check_fields(path, obj, fields, fix)
                    yield _text_values(path, f"line {n}", tuple(obj[name] for name in fields))
        else:
            csv.field_size_limit(2**31 - 1)  # a document can be longer than csv's default limit of 128 KiB
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                _check_fields(path, reader.fieldnames or [], fields, fix)
                for row in reader:
                    yield tuple(row[name] or "" for name in fields)
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise UserError(f"could not read {path} ({e})") from None
    except ValueError as e:  # pyarrow's ArrowInvalid: not a parquet file
        raise UserError(f"could not read {path} as {suffix[1:]} ({e})") from None


def count_records(path: Path) -> int:
    """Rows in a table, without parsing them where the format allows."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError) as e:
            raise UserError(f"could not read {path} as parquet ({e})") from None
    if path.suffix.lower() == ".jsonl":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return sum(1 for _ in read_records(path, []))


def text_files(spec: str, dataset: str) -> tuple:
    """The documents of the field `text` of local files (--data_files: comma-separated .parquet or
    .jsonl files or globs, read in that order): a function that streams them, their count, and
    the source in words."""
    paths = expand_files(spec, "--data_files")
    n = sum(count_records(p) for p in paths)
    fix = f"{dataset} reads the field 'text': give the file's column that name"
    return (lambda: (row[0] for p in paths for row in read_records(p, ["text"], fix))), n, f"{n:,} documents from {spec}"


def val_mask(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Which of n documents go to val: a seeded random choice of round(n * val_fraction), at least one."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if n < 2:
        raise UserError(f"the corpus has {n} document{'s' if n != 1 else ''}; a train/val split by document needs at least 2")
    k = min(n - 1, max(1, round(n * val_fraction)))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def with_splits(records: Iterable[Any], is_val: np.ndarray) -> Iterator[tuple[str, Any]]:
    """(split, record) pairs for a stream of records and its val_mask."""
    records, end, record = iter(records), object(), None
    for val in is_val:
        record = next(records, end)
        if record is end:
            break
        yield ("val" if val else "train"), record
    if record is end or next(records, end) is not end:
        raise UserError(f"the source changed while it was read (it no longer has the {len(is_val):,} documents counted before); prepare again")


def record_files(spec: str, what: str) -> list[Path]:
    """The files of records --input names: a .jsonl, .json or .parquet file, or every one in a folder."""
    path = Path(spec).expanduser()
    if not spec or not path.exists():
        raise UserError(f"pass your {what} with --input=FILE_OR_FOLDER (.jsonl, .json or .parquet){f'; {path} not found' if spec else ''}")
    if path.is_dir():
        found = sorted((p for p in path.rglob("*") if p.suffix.lower() in RECORD_SUFFIXES and p.is_file()), key=lambda p: p.relative_to(path).as_posix())
        if not found:
            raise UserError(f"no .jsonl, .json or .parquet files in {path}; pass a folder that has some, or one file")
        return found
    if path.suffix.lower() not in RECORD_SUFFIXES:
        raise UserError(f"{path}: unknown file type '{path.suffix}'; {what} come in {', '.join(RECORD_SUFFIXES)} files")
    return [path]


def read_objects(path: Path):
    """(where, record) for every record of a file: 'FILE line N' or 'FILE record N'."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            n = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    n += 1
                    yield f"{path} record {n}", row
        elif suffix == ".json":
            records = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(records, dict) and isinstance(records.get("data"), list):
                records = records["data"]
            if not isinstance(records, list):
                raise UserError(f"{path} holds no list of records; a .json file holds a list of records ([{{...}}, ...]), a .jsonl file one per line")
            for n, record in enumerate(records, 1):
                yield f"{path} record {n}", record
        else:
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield f"{path} line {n}", json.loads(line)
                        except json.JSONDecodeError as e:
                            yield f"{path} line {n}", BadRecord(f"{path} line {n}", f"is not JSON ({e.msg})", "not JSON")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON ({e.msg} at line {e.lineno}); a .json file holds a list of records, a .jsonl file one per line") from None
    except OSError as e:
        raise UserError(f"could not read {path} ({e})") from None
    except ValueError as e:  # pyarrow's ArrowInvalid
        raise UserError(f"could not read {path} as parquet ({e})") from None
