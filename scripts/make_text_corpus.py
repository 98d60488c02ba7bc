"""Write arena/data/tiny_stories.txt: the small synthetic corpus the `text` task trains on by default (and tests use).

    python scripts/make_text_corpus.py            # rewrites arena/data/tiny_stories.txt (deterministic: seed 0)

Nothing is downloaded: every story is built here from templates with a fixed seed, so the file is reproducible
and free of licence questions. The stories have structure a language model can learn beyond letter statistics:
names recur within a story, counts follow arithmetic ("had 3 ... gave away 1 ... now has 2"), and a few names
carry non-ASCII letters (Zoë, José, Łucja, Søren) so the byte tokenizer sees multi-byte UTF-8. Stories are
separated by a blank line: each one is a document of the `text` task (arena/tasks/text.py).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "arena" / "data" / "tiny_stories.txt"
NAMES = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jack", "Kai", "Lena", "Milo", "Nora",
         "Otto", "Pia", "Zoë", "José", "Łucja", "Søren"]
THINGS = ["apple", "pear", "stone", "shell", "coin", "book", "kite", "cup", "ball", "leaf"]
PLACES = ["the park", "the river", "the market", "the hill", "the garden", "the old mill", "the beach"]
WEATHER = ["It was sunny.", "It was raining.", "The wind was cold.", "Snow covered the ground.", "The sky was grey."]
FEELINGS = ["happy", "tired", "curious", "glad", "sleepy", "proud"]


def plural(count: int, thing: str) -> str:
    return f"{count} {thing}" if count == 1 else f"{count} {thing}s"


def story(rng: random.Random, index: int) -> str:
    a, b = rng.sample(NAMES, 2)
    thing, place = rng.choice(THINGS), rng.choice(PLACES)
    have = rng.randint(2, 9)
    give = rng.randint(1, have - 1)
    found = rng.randint(0, 4)
    lines = [f"Story {index}.", rng.choice(WEATHER), f"{a} went to {place} with {b}.",
             f"{a} had {plural(have, thing)}.", f"{a} gave {plural(give, thing)} to {b}.",
             f"Now {a} had {plural(have - give, thing)} and {b} had {plural(give, thing)}."]
    if found:
        lines.append(f"At {place} {b} found {plural(found, thing)} more, so {b} had {plural(give + found, thing)}.")
    lines.append(f"In the evening {a} and {b} went home. {a} felt {rng.choice(FEELINGS)}.")
    return " ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=800)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = random.Random(0)
    text = "\n\n".join(story(rng, i + 1) for i in range(args.stories)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode())} bytes, {args.stories} stories)")


if __name__ == "__main__":
    main()
