"""
Small instruction tasks whose answers can be checked, as conversations to tune a model on and to
score it with: add two numbers, reverse a word, spell it, sort its letters, the next letter of the
alphabet, count a letter in a word. Made offline from a seed, a few phrasings per task.

    python -m tools.chat_tasks --out=data/tasks                        # train.jsonl (5,000) and test.jsonl (500)
    python -m tools.chat_tasks --out=data/tasks --train=20000 --test=600 --seed=7 --tasks=add,reverse
    python prepare.py chat --input=data/tasks/train.jsonl --data_dir=data/tasks-char --tokenizer=char --block_size=128
    python eval.py --out_dir=out-tasks --task=chat --chat_file=data/tasks/test.jsonl

Each line is a conversation in OpenAI's messages format with its task's name beside it:

    {"messages": [{"role": "user", "content": "What is 12 + 305?"}, {"role": "assistant", "content": "317"}], "task": "add"}

The tasks take turns, so each has its share of the items. No test question appears in
train.jsonl (the test questions are drawn first, and a training question equal to one of them is
drawn again), so a model that answers the test has learned the task, not the items; the same seed
gives the same bytes. The files are written whole or not at all (a temp file renamed), and
existing ones are not replaced without --overwrite=True.
"""

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from configurator import option, parse_config
from gptsuite.atomic import check_folder, write_text
from gptsuite.errors import UserError, cli

# common short words, and made-up ones of consonant-vowel syllables, so the tasks go past a vocabulary
WORDS = (
    "apple bread chair dance eagle flame grape house jelly knife lemon mango night ocean piano queen river stone tiger "
    "uncle voice water yacht zebra cat dog sun moon tree bird fish rain snow wind cloud green black white brown plant "
    "light sound smile table paper glass money music world heart dream train truck woman child garden window pencil "
    "rabbit forest castle silver orange purple yellow market doctor winter summer spring autumn letter number"
).split()
CONSONANTS, VOWELS = "bcdfghjklmnprstvwz", "aeiou"
MAX_DRAWS = 1000  # draws for one new question before a task counts as having no more of them


def word(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(WORDS)
    syllables = rng.randint(2, 4)
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables))[: rng.randint(3, 2 * syllables)]


def add(rng: random.Random) -> tuple[str, str]:
    a, b = (rng.randint(0, 10 ** rng.randint(1, 3) - 1) for _ in range(2))
    q = rng.choice(("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}.", "{a} + {b} = ?", "What is the sum of {a} and {b}?"))
    return q.format(a=a, b=b), str(a + b)


def reverse(rng: random.Random) -> tuple[str, str]:
    w = word(rng)
    q = rng.choice(("Reverse the word '{w}'.", "Spell '{w}' backwards.", "Write {w} in reverse.", "What is '{w}' reversed?"))
    return q.format(w=w), w[::-1]


def spell(rng: random.Random) -> tuple[str, str]:
    w = word(rng)
    sep, name = rng.choice(((" ", "spaces"), ("-", "dashes")))
    q = rng.choice(
        (
            "Spell '{w}' with {name} between the letters.",
            "Spell out {w}, one letter at a time, separated by {name}.",
            "Write the letters of '{w}' separated by {name}.",
        )
    )
    return q.format(w=w, name=name), sep.join(w)


def sort_letters(rng: random.Random) -> tuple[str, str]:
    w = word(rng)
    q = rng.choice(
        ("Sort the letters of '{w}' alphabetically.", "Put the letters of {w} in alphabetical order.", "What are the letters of '{w}' in alphabetical order?")
    )
    return q.format(w=w), "".join(sorted(w))


def next_letter(rng: random.Random) -> tuple[str, str]:
    letters = rng.choice((string.ascii_lowercase, string.ascii_uppercase))
    i = rng.randrange(25)
    q = rng.choice(
        (
            "What letter comes after '{c}' in the alphabet?",
            "Which letter follows {c}?",
            "Next letter after {c}?",
            "What is the letter after '{c}'?",
            "Name the letter that comes after {c}.",
        )
    )
    return q.format(c=letters[i]), letters[i + 1]


def count_letter(rng: random.Random) -> tuple[str, str]:
    w = word(rng)
    c = rng.choice(w) if rng.random() < 0.8 else rng.choice(string.ascii_lowercase)  # now and then a letter it lacks: 0
    q = rng.choice(("How many times does the letter '{c}' appear in '{w}'?", "Count the letter '{c}' in '{w}'.", "How many {c}'s are in the word '{w}'?"))
    return q.format(c=c, w=w), str(w.count(c))


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": add,
    "reverse": reverse,
    "spell": spell,
    "sort": sort_letters,
    "next_letter": next_letter,
    "count": count_letter,
}


@dataclass
class ChatTasksConfig:
    out: str = ""  # the folder to write train.jsonl and test.jsonl in
    train: int = option(5000, ge=0)  # training conversations
    test: int = option(500, ge=0)  # test conversations, none of whose questions is in train
    seed: int = option(1337, ge=0)
    tasks: str = ",".join(TASKS)  # which tasks, comma-separated
    overwrite: bool = False  # replace train.jsonl / test.jsonl already in --out


def task_names(spec: str) -> list[str]:
    names = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise UserError(f"unknown task {', '.join(map(repr, unknown)) or '(none given)'}; pass --tasks= with some of {','.join(TASKS)}")
    return list(dict.fromkeys(names))


def conversation(task: str, question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], "task": task}


def draw(task: str, rng: random.Random, taken: set[str], unique: bool) -> dict:
    """One item of `task` whose question is not in `taken` (added to it if `unique`)."""
    for _ in range(MAX_DRAWS):
        question, answer = TASKS[task](rng)
        if question not in taken:
            if unique:
                taken.add(question)
            return conversation(task, question, answer)
    raise UserError(f"the task {task} has no more distinct questions for this many items; pass a smaller --test (or --train), or more --tasks")


def make_items(names: list[str], n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test): the tasks take turns; test questions are distinct, and none is in train."""
    rng = random.Random(seed)
    test_questions: set[str] = set()
    test = [draw(names[i % len(names)], rng, test_questions, unique=True) for i in range(n_test)]
    train = [draw(names[i % len(names)], rng, test_questions, unique=False) for i in range(n_train)]
    return train, test


def jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def main(argv: list[str]) -> None:
    cfg = parse_config(ChatTasksConfig(), argv)
    if not cfg.out:
        raise UserError("pass --out=DIR: the folder to write train.jsonl and test.jsonl in")
    out = Path(cfg.out)
    check_folder(out, "--out")
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl"}
    there = [p for p in paths.values() if p.exists()]
    if there and not cfg.overwrite:
        raise UserError(
            f"{' and '.join(map(str, there))} already exist{'s' if len(there) == 1 else ''}; pass another --out, or --overwrite=True to replace them"
        )
    names = task_names(cfg.tasks)
    train, test = make_items(names, cfg.train, cfg.test, cfg.seed)
    for split, items in (("train", train), ("test", test)):
        write_text(paths[split], jsonl(items))
        print(f"wrote {paths[split]}: {len(items):,} conversations ({', '.join(names)})")
    example = test[0] if test else train[0] if train else None
    if example:
        print(f"e.g. {example['messages'][0]['content']!r} -> {example['messages'][1]['content']!r}")


if __name__ == "__main__":
    cli(main)
