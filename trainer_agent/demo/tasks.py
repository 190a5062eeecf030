"""Synthetic task families with verifiable rewards: the demo's data mixture.

Each arm is one (family, level) pair named ``f"{family}{level}"``, e.g. ``rev5`` = reverse a string of
5 digits. Prompts are generated on the fly from a seeded ``numpy.random.Generator`` so a run never
sees the same finite dataset twice and needs no files. Rewards are exact match (1.0 / 0.0), like the
verifiable rewards of math and code RL post-training.

The default mixture is built the way real RL mixtures turn out: some sources are solved before RL
starts (the warm-up covered them), some are learnable from where the policy starts, and some are too
hard for the budget (pass rate ~0, so every GRPO group is all-wrong and carries no gradient). A
curriculum only pays off when such arms exist; that is the situation DUMP and SEC target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Role = Literal["easy", "learnable", "hard"]

PAD, BOS, EOS = 0, 1, 2
_CHARS = "0123456789+=CRSA"
VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", *_CHARS)
_INDEX = {c: i for i, c in enumerate(VOCAB)}

# One prompt marker per family so the policy knows which task it is solving.
_MARKER = {"copy": "C", "rev": "R", "sort": "S", "add": "A"}
FAMILIES: tuple[str, ...] = tuple(_MARKER)

# The default mixture and the role each arm plays in it, as measured after the default warm-up
# (seeds 0-4, see bench/curriculum.py): easy = solved before RL starts; learnable = a pass rate
# RL can raise within a few hundred steps; hard = ~0 pass rate, so GRPO groups are all wrong and
# carry no gradient within the demo's budget.
DEFAULT_ROLES: dict[str, Role] = {
    "copy2": "easy",
    "rev3": "easy",
    "sort3": "easy",
    "rev4": "learnable",
    "sort4": "learnable",
    "add2": "hard",
    "rev5": "hard",
    "add3": "hard",
    "rev10": "hard",
}
DEFAULT_ARMS: tuple[str, ...] = tuple(DEFAULT_ROLES)
# Supervised warm-up ("cold start") data and its sampling weights: the easy arms (plus add1, which
# teaches the addition format), and a 5% share of the next levels. With the easy arms only, the
# policy does not length-generalise (rev4, sort4 stay at 0-6% pass rate, and whether RL takes off
# within 200 steps then depends on the seed); a small share of medium data, as cold-start SFT sets
# have, gives a policy that can start to learn, while rev5, add3 and rev10 stay out of reach.
DEFAULT_WARMUP: dict[str, float] = {
    "copy2": 1.0,
    "rev3": 1.0,
    "sort3": 1.0,
    "add1": 1.0,
    "rev4": 0.05,
    "sort4": 0.05,
    "add2": 0.05,
}

_ARM_RE = re.compile(r"^([a-z]+)(\d+)$")


@dataclass(frozen=True)
class Example:
    """One prompt and its unique correct answer (both plain strings over the vocabulary)."""

    prompt: str
    answer: str


def parse_arm(arm: str) -> tuple[str, int]:
    """Split an arm name like ``"rev5"`` into its family and level.

    Args:
        arm: ``f"{family}{level}"`` with family one of `FAMILIES` and level >= 1.

    Raises:
        ValueError: the name does not follow that pattern.
    """
    m = _ARM_RE.match(arm)
    if m is None or m.group(1) not in _MARKER or int(m.group(2)) < 1:
        raise ValueError(f"unknown arm {arm!r}: expected <family><level> with family in {FAMILIES}")
    return m.group(1), int(m.group(2))


def answer_length(arm: str) -> int:
    """Longest possible answer of an arm in characters (bounds generation length)."""
    family, level = parse_arm(arm)
    return level + 1 if family == "add" else level


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def make_example(arm: str, rng: np.random.Generator) -> Example:
    """Draw one example of ``arm`` from ``rng``.

    ``add`` writes the sum least-significant digit first: the policy then emits each digit after
    the carry it depends on, the standard trick that makes addition learnable left to right by a
    small causal transformer (Lee et al. 2023, "Teaching Arithmetic to Small Transformers").
    """
    family, level = parse_arm(arm)
    marker = _MARKER[family]
    if family == "add":
        lo = 10 ** (level - 1) if level > 1 else 0
        a, b = (int(x) for x in rng.integers(lo, 10**level, size=2))
        return Example(f"{marker}{a}+{b}=", str(a + b)[::-1])
    s = _digits(rng, level)
    if family == "copy":
        ans = s
    elif family == "rev":
        ans = s[::-1]
    else:
        ans = "".join(sorted(s))
    return Example(f"{marker}{s}=", ans)


def make_examples(arms: Sequence[str], rng: np.random.Generator) -> list[Example]:
    """One example per entry of ``arms`` (arms may repeat), drawn in order from ``rng``."""
    return [make_example(a, rng) for a in arms]


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (characters of the vocabulary only)."""
    return [_INDEX[c] for c in text]


def decode(ids: Sequence[int]) -> str:
    """Text of ``ids`` up to (excluding) the first EOS; PAD and BOS are skipped."""
    out: list[str] = []
    for i in ids:
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(VOCAB[i])
    return "".join(out)


def reward(completion_ids: Sequence[int], answer: str) -> float:
    """Exact-match reward: 1.0 iff the completion is ``answer`` followed by EOS.

    A completion that never emits EOS within the generation budget scores 0, as a truncated
    answer would in a real verifier.
    """
    ids = list(completion_ids)
    if EOS not in ids:
        return 0.0
    return 1.0 if decode(ids) == answer else 0.0
