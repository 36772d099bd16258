"""Which order each sample shows the responses in: independent shuffles (the paper's remedy for position bias) or
balanced rotations, undoing a shuffle when reading a judgement's scores, and how evenly a set of orders spread the
responses over the slots. Pure functions; the randomness is seeded by the caller."""

from __future__ import annotations

import random
from collections import Counter
from typing import Sequence


def draw_orders(n_responses: int, k: int, rng: random.Random, shuffle: bool = True,
                balanced: bool = False) -> list[list[int]]:
    """One presentation order per sample: ``order[j]`` is the original index shown in slot j.

    Each sample's order is an independent uniform shuffle (the paper's remedy for position bias); with
    ``shuffle=False`` every sample sees the original order. ``balanced`` draws one shuffle and gives sample j its
    rotation by j (the rows of a Latin square): every n consecutive samples show each response once in each slot.

    Example:
        >>> draw_orders(3, 2, random.Random(0), shuffle=False)
        [[0, 1, 2], [0, 1, 2]]
        >>> draw_orders(3, 3, random.Random(0), balanced=True)
        [[0, 2, 1], [2, 1, 0], [1, 0, 2]]
    """
    if balanced and shuffle:
        base = list(range(n_responses))
        rng.shuffle(base)
        return [base[j % n_responses:] + base[:j % n_responses] for j in range(k)]
    orders = []
    for _ in range(k):
        order = list(range(n_responses))
        if shuffle:
            rng.shuffle(order)
        orders.append(order)
    return orders


def unshuffle(shown_scores: Sequence[int], order: Sequence[int]) -> list[int]:
    """Map scores given per shown slot back to the original response order.

    Example:
        >>> unshuffle([9, 2], [1, 0])  # slot 1 showed response 1, which got 9
        [2, 9]
    """
    scores = [0] * len(order)
    for slot, index in enumerate(order):
        scores[index] = shown_scores[slot]
    return scores


def slot_imbalance(orders: Sequence[Sequence[int]], n_responses: int) -> int:
    """How unevenly the responses sat in the slots: the largest minus the smallest count of (response, slot) pairs
    over ``orders`` (0: every response was shown in every slot equally often). Linear in the slots shown: only the
    pairs that occur are counted.

    Example:
        >>> slot_imbalance([[0, 1], [1, 0]], 2), slot_imbalance([[0, 1], [0, 1]], 2)
        (0, 2)
    """
    counts = Counter((index, slot) for order in orders for slot, index in enumerate(order))
    if not counts:
        return 0
    lowest = min(counts.values()) if len(counts) == n_responses * n_responses else 0  # a pair never seen counts 0
    return max(counts.values()) - lowest
