"""Per-molecule features that the set-level metrics aggregate, computed in worker processes.

One pass over a chunk of SMILES gives everything the MOSES metrics need from those molecules:
canonical SMILES (validity, uniqueness, novelty, FCD input), Morgan bits (SNN, IntDiv), BRICS
fragments (Frag), Bemis-Murcko scaffolds with at least two rings (Scaf), logP/SA/QED/weight
(the Wasserstein metrics) and, for generated sets, the MOSES filter. Chunks come back already
aggregated (packed bits, counters, arrays) so that little crosses the process boundary.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem

from molgen.chem import morgan_fp, quiet, scaffold, to_mol, to_smiles
from molgen.metrics.similarity import N_BITS, pack
from molgen.parallel import parallel_map
from molgen.score import MolScores

__all__ = ["PROPS", "Features", "features", "smiles_hashes"]

PROPS = ("logP", "SA", "QED", "weight")


@dataclass
class Features:
    """Features of a list of SMILES; per-molecule arrays cover the valid molecules in input order."""

    canon: list = field(default_factory=list)  # per input: canonical SMILES or None
    packed: np.ndarray = field(default_factory=lambda: np.zeros((0, N_BITS // 8), np.uint8))
    frags: Counter = field(default_factory=Counter)
    scafs: Counter = field(default_factory=Counter)
    props: np.ndarray = field(default_factory=lambda: np.zeros((0, len(PROPS))))
    passes: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def valid_smiles(self) -> list[str]:
        return [s for s in self.canon if s is not None]

    @classmethod
    def merge(cls, parts: list[Features]) -> Features:
        out = cls()
        out.canon = [s for p in parts for s in p.canon]
        for p in parts:
            out.frags.update(p.frags)
            out.scafs.update(p.scafs)
        if parts:
            out.packed = np.concatenate([p.packed for p in parts])
            out.props = np.concatenate([p.props for p in parts])
            out.passes = np.concatenate([p.passes for p in parts])
        return out


def _brics_fragments(mol: Chem.Mol) -> list[str]:
    return Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(mol)).split(".")


def _moses_scaffold(mol: Chem.Mol) -> str | None:
    """MOSES ``compute_scaffold``: the Murcko scaffold, or None if it has fewer than two rings.

    The scaffold keeps every ring of the molecule, so the molecule's ring count decides.
    """
    if mol.GetRingInfo().NumRings() < 2:
        return None
    return scaffold(mol) or None


def _chunk_features(args: tuple[list, bool]) -> Features:
    smiles, generated = args
    _block = quiet()  # noqa: F841
    out = Features()
    bits, props, passes = [], [], []
    for s in smiles:
        mol = to_mol(s)
        canon = to_smiles(mol) if mol is not None else None
        out.canon.append(canon)
        if canon is None:
            continue
        if generated:
            # MOSES scores generated molecules re-read from their canonical SMILES
            mol = to_mol(canon) or mol
        bits.append(np.fromiter(morgan_fp(mol, 2, N_BITS).GetOnBits(), dtype=np.int64))
        out.frags.update(_brics_fragments(mol))
        scaf = _moses_scaffold(mol)
        if scaf is not None:
            out.scafs[scaf] += 1
        scores = MolScores(mol)
        props.append((scores.logp, scores.sa, scores.qed, scores.mw))
        if generated:
            passes.append(scores.moses_filter)
    out.packed = pack(bits)
    out.props = np.array(props, dtype=np.float64).reshape(-1, len(PROPS))
    out.passes = np.array(passes, dtype=bool)
    return out


def features(smiles: list, generated: bool = True, n_jobs: int = 1, progress: bool = False,
             description: str = "molecules") -> Features:
    """Features of ``smiles``; ``generated=True`` also runs the MOSES filter."""
    parts = parallel_map(_chunk_features, smiles, n_jobs=n_jobs, progress=progress,
                         description=description, extra=generated, flatten=False)
    return Features.merge(parts)


def _hash(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def _chunk_hashes(args: tuple[list, None]) -> list[int | None]:
    _block = quiet()  # noqa: F841
    out = []
    for s in args[0]:
        canon = to_smiles(s)
        out.append(_hash(canon) if canon is not None else None)
    return out


def smiles_hashes(smiles: list, canonical: bool = False, n_jobs: int = 1, progress: bool = False,
                  description: str = "canonicalising") -> np.ndarray:
    """Sorted unique 64-bit hashes of (canonicalised, unless ``canonical``) SMILES; invalid skipped.

    A set of 1.58M train molecules is 12.7 MB this way; the chance that one of 30,000 generated
    molecules collides with it by accident is about 3e-9.
    """
    if canonical:
        hashes = [_hash(s) for s in smiles if s is not None]
    else:
        hashes = parallel_map(_chunk_hashes, smiles, n_jobs=n_jobs, progress=progress,
                              description=description, chunk=2048)
    return np.unique(np.array([h for h in hashes if h is not None], dtype=np.uint64))
