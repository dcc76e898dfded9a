"""What an RL run remembers: the diversity filter and the replay buffer.

:class:`DiversityFilter` is REINVENT 2.0's identical Bemis-Murcko scaffold filter (Blaschke et al.
2020, J. Cheminform. 12:68): a molecule scoring at least ``min_score`` enters a memory under its
scaffold; once a scaffold holds more than ``bucket_size`` molecules, every further molecule of it
gets reward 0, and a molecule already in the memory (sampled again) gets reward 0 too. The agent
is thus pushed off a chemotype it has exhausted instead of sampling it for ever. Acyclic
molecules share the scaffold ``''``.

:class:`ReplayBuffer` is the experience replay of Olivecrona et al. 2017 (REINVENT's "inception"):
the ``size`` best molecules by reward, each once, never re-scored; each step draws a few of them,
with probability proportional to reward, into the loss.

Both are plain state built from (canonical SMILES, scaffold, score) in the order the molecules were
met, so a resumed run rebuilds them exactly from its CSV.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

__all__ = ["DiversityFilter", "ReplayBuffer"]


class DiversityFilter:
    """Identical-Murcko-scaffold memory (REINVENT 2.0); see the module docstring.

    Args:
        bucket_size: molecules of one scaffold rewarded before the scaffold's reward drops to 0.
        min_score: score at which a molecule enters the memory (lower scores pass unchanged).
    """

    def __init__(self, bucket_size: int = 25, min_score: float = 0.4):
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        self.bucket_size, self.min_score = int(bucket_size), float(min_score)
        self.buckets: Counter[str] = Counter()  # scaffold -> molecules in memory
        self.memory: set[str] = set()  # canonical SMILES in memory

    def __call__(self, smiles: list[str | None], scaffolds: list[str | None], scores) -> np.ndarray:
        """Rewards for one batch, in order (the memory is updated as it goes).

        ``smiles``: canonical SMILES, ``None`` for an invalid row; ``scores``: the objective's
        scores (NaN, e.g. past the budget, counts as 0).
        """
        scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
        rewards = np.zeros(len(scores))
        for i, (smi, scaffold, score) in enumerate(zip(smiles, scaffolds, scores, strict=True)):
            if smi is None or smi in self.memory:
                continue
            rewards[i] = score
            if score >= self.min_score:
                self.memory.add(smi)
                key = scaffold or ""
                self.buckets[key] += 1
                if self.buckets[key] > self.bucket_size:
                    rewards[i] = 0.0
        return rewards

    @property
    def full(self) -> list[str]:
        """Scaffolds whose molecules now get reward 0."""
        return [s for s, n in self.buckets.items() if n > self.bucket_size]


class ReplayBuffer:
    """The ``size`` best molecules by reward, each once (see the module docstring).

    A molecule is considered once, at its first offer (a repeat, even of one that has since left
    the buffer, is ignored), and ties keep the molecule met first: the buffer is a function of the
    molecules' first offers in order, which is what a resumed run replays from its CSV.
    """

    def __init__(self, size: int = 100):
        self.size = int(size)
        self._items: dict[str, tuple[float, int]] = {}  # smiles -> (reward, order met)
        self._offered: set[str] = set()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, smiles, rewards) -> None:
        """Offer molecules with their rewards; repeats, ``None`` and rewards <= 0 (or NaN) are ignored."""
        for smi, r in zip(smiles, rewards, strict=True):
            if smi is None or smi in self._offered:
                continue
            self._offered.add(smi)
            if r > 0 and math.isfinite(r):
                self._items[smi] = (float(r), len(self._offered))
        if len(self._items) > self.size:
            keep = sorted(self._items.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[: self.size]
            self._items = dict(keep)

    def items(self) -> list[tuple[str, float]]:
        """(SMILES, reward), best first."""
        return [(s, r) for s, (r, _) in sorted(self._items.items(), key=lambda kv: (-kv[1][0], kv[1][1]))]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        """Up to ``n`` distinct molecules, drawn with probability proportional to reward."""
        items = self.items()
        n = min(int(n), len(items))
        if n == 0:
            return [], np.zeros(0)
        rewards = np.array([r for _, r in items])
        pick = rng.choice(len(items), size=n, replace=False, p=rewards / rewards.sum())
        return [items[i][0] for i in pick], rewards[pick]
