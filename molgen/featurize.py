"""Molecules <-> graphs for the graph-VAE, and a cached fast path for millions of molecules.

Representation (the choices the decoder's validity guarantee rests on):

* **Atoms** are typed by ``(element, formal charge)`` from :data:`ATOM_VOCAB`; each type has a
  fixed bond budget :data:`ATOM_VALENCE` (its largest valence RDKit accepts). Hydrogens are not
  nodes and not stored: RDKit's implicit-hydrogen rule restores them from element, charge and
  bond orders, so any graph whose bond orders per atom stay within the budget sanitises.
* **Bonds** are kekulised: single, double, triple (``edge_attr`` 0, 1, 2). Aromaticity is
  re-perceived by RDKit when a graph becomes a molecule again, so an aromatic ring never has to
  be generated as a whole.
* **Atom order** is canonical: breadth-first from the atom RDKit ranks first, neighbours visited
  in rank order. Every bond then joins atoms whose positions differ by at most the width of
  two BFS layers, which the decoder exploits (see :mod:`molgen.models.graph_decoder`).
* Not represented (round trip loses them, counted as exceptions): stereochemistry, isotopes,
  radicals, atoms outside the vocabulary, explicit hydrogens that RDKit's rule would not give
  back (e.g. ``[SiH]`` radicals). The round trip compares non-isomeric canonical SMILES.

The fast path (:func:`featurize_smiles`, :func:`graph_cache`) produces flat numpy arrays
(atom types, atom offsets, bonds, bond offsets) instead of per-molecule Python objects, runs
over processes, and caches the arrays on disk as ``.npy`` files that are memory-mapped back.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from molgen.cache import cache_dir, sha256_strings
from molgen.chem import quiet, to_mol
from molgen.errors import InputError
from molgen.files import atomic_path
from molgen.parallel import run_ordered
from molgen.tokenize import parse_bracket

__all__ = [
    "ATOM_VOCAB",
    "ATOM_VALENCE",
    "BOND_ORDERS",
    "GraphArrays",
    "mol_to_graph",
    "graph_to_mol",
    "dense_to_smiles",
    "build_mol",
    "arrays_to_graph",
    "featurize_smiles",
    "graph_cache",
]

# (element, formal charge) -> bond budget. MOSES uses the first seven neutral types; the rest cover
# common drug-like chemistry (salts of amines, nitro groups, N-oxides, phosphates, boronic acids).
_VOCAB_VALENCE: tuple[tuple[str, int, int], ...] = (
    ("C", 0, 4), ("N", 0, 3), ("O", 0, 2), ("F", 0, 1), ("S", 0, 6), ("Cl", 0, 1), ("Br", 0, 1),
    ("I", 0, 1), ("P", 0, 5), ("B", 0, 3), ("Si", 0, 4), ("Se", 0, 2),
    ("N", 1, 4), ("O", -1, 1), ("N", -1, 2), ("S", -1, 1), ("C", -1, 3), ("O", 1, 3),
)  # fmt: skip
ATOM_VOCAB: tuple[tuple[str, int], ...] = tuple((e, q) for e, q, _ in _VOCAB_VALENCE)
ATOM_VALENCE: tuple[int, ...] = tuple(v for _, _, v in _VOCAB_VALENCE)
BOND_ORDERS: tuple[int, ...] = (1, 2, 3)

_PT = Chem.GetPeriodicTable()
_TYPE_OF = {(_PT.GetAtomicNumber(e), q): i for i, (e, q) in enumerate(ATOM_VOCAB)}
_RDKIT_BOND = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
# Lite sanitisation for the fast path: the valence check and kekulisation, nothing else. Ring
# perception, radicals, H adjustment, atropisomer and organometallic clean-up add ~35 us per
# molecule and change no type, bond or canonical rank (identical arrays on 100k MOSES molecules);
# aromaticity perception would be undone by kekulisation straight away.
_S = Chem.SanitizeFlags
_LITE_SANITIZE = _S.SANITIZE_CLEANUP | _S.SANITIZE_PROPERTIES | _S.SANITIZE_KEKULIZE
_ATOM_TOKEN = re.compile(r"\[[^\]]+\]|Br|Cl|[BCNOPSFIbcnops]")


def _token_type(token: str) -> int:
    """Atom type index of one SMILES atom token, -1 outside the vocabulary."""
    if token[0] != "[":
        return _TYPE_OF.get((_PT.GetAtomicNumber(token.capitalize()), 0), -1)
    atom = parse_bracket(token)
    if atom is None or atom.symbol == "*":
        return -1
    try:
        return _TYPE_OF.get((_PT.GetAtomicNumber(atom.element), atom.charge), -1)
    except RuntimeError:  # not an element symbol
        return -1


_TOKEN_CACHE: dict[str, int] = {}


def _types_from_smiles(smiles: str) -> list[int]:
    """Atom types read off the SMILES text: RDKit numbers atoms in the order they are written."""
    out = []
    for tok in _ATOM_TOKEN.findall(smiles):
        t = _TOKEN_CACHE.get(tok)
        if t is None:
            t = _TOKEN_CACHE[tok] = _token_type(tok)
        out.append(t)
    return out


def _types_from_mol(mol: Chem.Mol) -> list[int]:
    return [_TYPE_OF.get((a.GetAtomicNum(), a.GetFormalCharge()), -1) for a in mol.GetAtoms()]


def _bfs_order(n: int, src: list[int], dst: list[int], rank) -> list[int]:
    """Breadth-first atom order from the lowest-ranked atom, neighbours in rank order; each
    disconnected fragment is started from its lowest-ranked atom in turn.

    ``rank`` is a permutation of ``range(n)`` (RDKit's canonical ranks with ties broken). The
    search runs on ranks, where "in rank order" is a plain integer sort, and maps back at the end.
    """
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(src, dst, strict=True):
        ra, rb = rank[a], rank[b]
        nbrs[ra].append(rb)
        nbrs[rb].append(ra)
    seen = [False] * n
    order: list[int] = []  # ranks, in visiting order; doubles as the queue
    for start in range(n):
        if seen[start]:
            continue
        seen[start] = True
        head = len(order)
        order.append(start)
        while head < len(order):
            a = order[head]
            head += 1
            for b in sorted(nbrs[a]):
                if not seen[b]:
                    seen[b] = True
                    order.append(b)
    atom_of = [0] * n
    for atom, r in enumerate(rank):
        atom_of[r] = atom
    return [atom_of[r] for r in order]


_KEKULE_ORDERS = frozenset((1.0, 2.0, 3.0))


def _kekule_arrays(mol: Chem.Mol, types: list[int], reorder: bool = True) -> tuple[list[int], list[tuple[int, int, int]]] | None:
    """(types, bonds) of a kekulised molecule with atoms renumbered into canonical BFS order.

    Returns ``None`` when an atom is outside the vocabulary or a bond is not single, double or
    triple. ``bonds`` are ``(i, j, order)`` with ``i > j`` in the new numbering, sorted. Plain
    lists: for molecules of ~25 atoms they are several times faster than small numpy arrays.
    ``reorder=False`` keeps RDKit's atom order: enough for the encoder, which is blind to atom
    order (the decoder's targets need the BFS order), and about a third cheaper.
    """
    if -1 in types:
        return None
    adj = Chem.GetAdjacencyMatrix(mol, useBO=True)
    src, dst = np.nonzero(adj)
    upper = src < dst
    src, dst = src[upper], dst[upper]
    orders = adj[src, dst].tolist()
    if not _KEKULE_ORDERS.issuperset(orders):
        return None
    src, dst = src.tolist(), dst.tolist()
    if not reorder:
        return types, [(b, a, int(o)) for a, b, o in zip(src, dst, orders, strict=True)]  # a < b
    rank = list(Chem.CanonicalRankAtoms(mol, breakTies=True))  # a list: indexing the C++ vector is slower
    perm = _bfs_order(len(types), src, dst, rank)
    pos = [0] * len(perm)
    for new, old in enumerate(perm):
        pos[old] = new
    bonds = sorted(
        (pa, pb, int(o)) if pa > pb else (pb, pa, int(o))
        for pa, pb, o in zip([pos[a] for a in src], [pos[b] for b in dst], orders, strict=True)
    )
    return [types[old] for old in perm], bonds


def _unsupported(mol: Chem.Mol) -> str | None:
    """Why a molecule cannot be represented exactly, or ``None``."""
    for a in mol.GetAtoms():
        if (a.GetAtomicNum(), a.GetFormalCharge()) not in _TYPE_OF:
            return (
                f"atom {a.GetSymbol()} with charge {a.GetFormalCharge():+d} is outside the graph vocabulary"
            )
        if a.GetNumRadicalElectrons():
            return f"atom {a.GetSymbol()} has radical electrons"
    return None


def mol_to_graph(mol: Chem.Mol | str) -> Data:
    """A molecule as a graph in canonical BFS atom order.

    Args:
        mol: an RDKit ``Mol`` (or a SMILES string).

    Returns:
        ``Data`` with ``x`` atom type indices, ``edge_index`` (both directions), ``edge_attr``
        bond classes (0 single, 1 double, 2 triple) and ``num_nodes``.

    Raises:
        InputError: the molecule does not parse or has atoms outside :data:`ATOM_VOCAB`.

    Shapes:
        x: (N,) long; edge_index: (2, 2E) long; edge_attr: (2E,) long.
    """
    parsed = to_mol(mol)
    if parsed is None or parsed.GetNumAtoms() == 0:
        raise InputError(f"cannot make a graph of {mol!r}: not a valid molecule")
    why = _unsupported(parsed)
    if why:
        raise InputError(f"cannot make a graph of {Chem.MolToSmiles(parsed)}: {why}")
    # through canonical SMILES and the fast path's parser, so that the graph does not depend on
    # the input's atom order and equals the cached graph of the same molecule
    smiles = Chem.MolToSmiles(parsed, isomericSmiles=False)
    kek = _parse_kekule(smiles)
    if kek is None:  # RDKit cannot re-read its own SMILES (rare exotic valences)
        kek = Chem.Mol(parsed)
        Chem.Kekulize(kek, clearAromaticFlags=True)
    types = _types_from_smiles(smiles)
    if len(types) != kek.GetNumAtoms() or -1 in types:
        types = _types_from_mol(kek)
    types, bonds = _kekule_arrays(kek, types)
    return arrays_to_graph(np.asarray(types), np.asarray(bonds, dtype=np.int64).reshape(-1, 3))


def arrays_to_graph(types: np.ndarray, bonds: np.ndarray) -> Data:
    """A ``Data`` from atom types ``(N,)`` and bonds ``(E, 3)`` rows of ``(i, j, order)``."""
    bonds = torch.as_tensor(np.asarray(bonds, dtype=np.int64)).reshape(-1, 3)
    ij = bonds[:, :2].T
    edge_index = torch.cat([ij, ij.flip(0)], dim=1)
    edge_attr = (bonds[:, 2] - 1).repeat(2)
    x = torch.as_tensor(np.asarray(types, dtype=np.int64))
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=len(x))


def graph_to_mol(graph: Data, sanitize: bool = True, vocab=ATOM_VOCAB) -> Chem.Mol:
    """The molecule of a graph: atoms from the vocabulary, kekulised bonds, implicit hydrogens.

    Raises ``Chem.MolSanitizeException`` only for graphs that break an atom's bond budget,
    which the decoder never produces.
    """
    ei, ea = graph.edge_index.tolist(), graph.edge_attr.tolist()
    bonds = [(a, b, BOND_ORDERS[c]) for a, b, c in zip(ei[0], ei[1], ea, strict=True) if a < b]
    return build_mol(graph.x.tolist(), bonds, vocab, sanitize)


def dense_to_smiles(types: np.ndarray, band: np.ndarray, n_atoms: np.ndarray, vocab=ATOM_VOCAB) -> list[str | None]:
    """Canonical SMILES of the graph decoder's dense output, through :func:`build_mol`.

    ``band[b, i, k]`` is the order of the bond between atoms ``i`` and ``i - k - 1`` of graph ``b``
    (0: none; see :mod:`molgen.models.graph_decoder`). Every decoded graph sanitises by construction;
    a failure would be a bug and shows as ``None`` (``valid`` False), never as a dropped row.

    Shapes:
        types: (B, N); band: (B, N, W); n_atoms: (B,); returns B SMILES.
    """
    _block = quiet()  # noqa: F841
    out = []
    for b in range(len(n_atoms)):
        n = int(n_atoms[b])
        ii, kk = np.nonzero(band[b, :n])
        bonds = zip(ii.tolist(), (ii - kk - 1).tolist(), band[b, ii, kk].tolist(), strict=True)
        try:
            out.append(Chem.MolToSmiles(build_mol(types[b, :n].tolist(), bonds, vocab)))
        except Chem.MolSanitizeException:
            out.append(None)
    return out


def build_mol(types, bonds, vocab=ATOM_VOCAB, sanitize: bool = True) -> Chem.Mol:
    """A molecule from atom type indices and ``(i, j, order)`` bonds (order 1, 2 or 3): the one place
    a graph becomes a molecule (:func:`graph_to_mol`, :func:`dense_to_smiles`).

    Args:
        types: atom type indices into ``vocab``; bonds: each bond once.
        vocab: ``(element, charge)`` per type (a checkpoint carries its own).
    """
    mol = Chem.RWMol()
    for t in types:
        elem, charge = vocab[t]
        atom = Chem.Atom(elem)
        atom.SetFormalCharge(int(charge))
        mol.AddAtom(atom)
    for a, b, order in bonds:
        mol.AddBond(int(a), int(b), _RDKIT_BOND[int(order)])
    out = mol.GetMol()
    if sanitize:
        Chem.SanitizeMol(out)
    return out


@dataclass
class GraphArrays:
    """Many graphs as flat arrays: molecule ``k`` owns ``atom_type[atom_ptr[k]:atom_ptr[k+1]]`` and
    ``bonds[bond_ptr[k]:bond_ptr[k+1]]`` (local atom indices). ``index[k]`` is its source row.

    Shapes:
        atom_type: (A,) int8; atom_ptr: (M+1,) int64; bonds: (E, 3) int8 rows ``(i, j, order)``
        with ``i > j``; bond_ptr: (M+1,) int64; index: (M,) int64.
    """

    atom_type: np.ndarray
    atom_ptr: np.ndarray
    bonds: np.ndarray
    bond_ptr: np.ndarray
    index: np.ndarray
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.index)

    def graph(self, k: int) -> Data:
        a0, a1 = self.atom_ptr[k], self.atom_ptr[k + 1]
        b0, b1 = self.bond_ptr[k], self.bond_ptr[k + 1]
        return arrays_to_graph(self.atom_type[a0:a1], self.bonds[b0:b1])

    def num_atoms(self) -> np.ndarray:
        return np.diff(self.atom_ptr)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for each pair, without a Python loop."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(total)


def collate_arrays(arrays: GraphArrays, ids: np.ndarray) -> Batch:
    """A PyG batch of molecules ``ids`` gathered from flat arrays.

    Shapes:
        ids: (B,) -> Batch with x (A,), edge_index (2, 2E), edge_attr (2E,), batch (A,), ptr (B+1,).
    """
    ids = np.asarray(ids, dtype=np.int64)
    a0, n_atoms = arrays.atom_ptr[ids], np.diff(arrays.atom_ptr)[ids]
    b0, n_bonds = arrays.bond_ptr[ids], np.diff(arrays.bond_ptr)[ids]
    x = torch.from_numpy(np.asarray(arrays.atom_type[_ranges(a0, n_atoms)], dtype=np.int64))
    bonds = np.asarray(arrays.bonds[_ranges(b0, n_bonds)], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(n_atoms)])
    shift = np.repeat(ptr[:-1], n_bonds)
    ij = torch.from_numpy(np.stack([bonds[:, 0] + shift, bonds[:, 1] + shift]))
    order = torch.from_numpy(bonds[:, 2] - 1)
    batch = torch.from_numpy(np.repeat(np.arange(len(ids)), n_atoms))
    return Batch(
        x=x,
        edge_index=torch.cat([ij, ij.flip(0)], 1),
        edge_attr=order.repeat(2),
        batch=batch,
        ptr=torch.from_numpy(ptr),
    )


def _parse_kekule(smi: object) -> Chem.Mol | None:
    """Parse and kekulise, skipping aromaticity perception; explicit ``[H]`` atoms need the full
    parser, which removes them. The lite sanitisation's kekulisation already clears the aromatic
    flags, so only the full parser's output is kekulised here."""
    if not isinstance(smi, str):
        return None
    try:
        if "[H" in smi:
            mol = Chem.MolFromSmiles(smi)
            Chem.Kekulize(mol, clearAromaticFlags=True)
        else:
            mol = Chem.MolFromSmiles(smi, sanitize=False)
            Chem.SanitizeMol(mol, _LITE_SANITIZE)
        return mol
    except Exception:  # None from the parser, or a sanitisation error
        return None


def _featurize_chunk(args: tuple[int, list[str], bool]):
    """Worker: featurise a chunk of SMILES into flat arrays (row indices relative to the source)."""
    offset, smiles, reorder = args
    _block = quiet()  # noqa: F841
    types_out: list[int] = []
    bonds_out: list[tuple[int, int, int]] = []
    n_atoms, n_bonds, index = [], [], []
    skipped = {"parse": 0, "atom": 0, "empty": 0}
    for k, smi in enumerate(smiles):
        mol = _parse_kekule(smi)
        if mol is None:
            skipped["parse"] += 1
            continue
        if mol.GetNumAtoms() == 0:
            skipped["empty"] += 1
            continue
        types = _types_from_smiles(smi)
        if len(types) != mol.GetNumAtoms() or -1 in types:
            if _unsupported(mol):
                skipped["atom"] += 1
                continue
            types = _types_from_mol(mol)
        res = _kekule_arrays(mol, types, reorder)
        if res is None:
            skipped["atom"] += 1
            continue
        types_out.extend(res[0])
        bonds_out.extend(res[1])
        n_atoms.append(len(res[0]))
        n_bonds.append(len(res[1]))
        index.append(offset + k)
    return (
        np.asarray(types_out, np.int8),
        np.asarray(bonds_out, np.int8).reshape(-1, 3),
        np.asarray(n_atoms, np.int64),
        np.asarray(n_bonds, np.int64),
        np.asarray(index, np.int64),
        skipped,
    )


def featurize_smiles(smiles: list[str], n_jobs: int | None = None, chunk: int = 20_000,
                     reorder: bool = True) -> GraphArrays:  # fmt: skip
    """Featurise many SMILES into :class:`GraphArrays`, in parallel over ``n_jobs`` processes.

    Unparsable rows and rows with atoms outside the vocabulary are skipped and counted in
    ``skipped`` by reason; ``index`` maps each graph back to its row. ``reorder=False`` keeps
    RDKit's atom order instead of the canonical BFS order: for the encoder only (it is blind to atom
    order); the decoder's targets need the BFS order.
    """
    smiles = list(smiles)
    n_jobs = n_jobs or min(os.cpu_count() or 1, 8)
    jobs = [(i, smiles[i : i + chunk], reorder) for i in range(0, len(smiles), chunk)]
    parts = list(run_ordered(_featurize_chunk, jobs, n_jobs, hint="Lower n_jobs."))
    skipped: dict[str, int] = {}
    for p in parts:
        for k, v in p[5].items():
            skipped[k] = skipped.get(k, 0) + v
    n_atoms = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
    n_bonds = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)
    return GraphArrays(
        atom_type=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int8),
        atom_ptr=np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64),
        bonds=np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 3), np.int8),
        bond_ptr=np.concatenate([[0], np.cumsum(n_bonds)]).astype(np.int64),
        index=np.concatenate([p[4] for p in parts]) if parts else np.zeros(0, np.int64),
        skipped={k: v for k, v in skipped.items() if v},
    )


_FIELDS = ("atom_type", "atom_ptr", "bonds", "bond_ptr", "index")
_CACHE_VERSION = 1  # bump when the representation changes, so old caches are not reused


def graph_cache(smiles: list[str], key: str | None = None, n_jobs: int | None = None) -> GraphArrays:
    """Featurised graphs of ``smiles``, memory-mapped from the disk cache (built on first use).

    Args:
        smiles: the source SMILES.
        key: the sha256 of the source (e.g. of the data file); computed from ``smiles`` if absent.
        n_jobs: processes used when the cache is built.
    """
    key = key or sha256_strings(smiles)
    folder = cache_dir("graphs", f"v{_CACHE_VERSION}-{key[:32]}")
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        arrays = featurize_smiles(smiles, n_jobs=n_jobs)
        for name in _FIELDS:
            np.save(folder / f"{name}.npy", getattr(arrays, name))
        meta = {"n_source": len(smiles), "n_graphs": len(arrays), "skipped": arrays.skipped, "key": key}
        with atomic_path(meta_path) as tmp:  # meta last: a half-written cache is never taken for a complete one
            tmp.write_text(json.dumps(meta, indent=1))
    return _load_cache(folder)


def _load_cache(folder: Path) -> GraphArrays:
    meta = json.loads((folder / "meta.json").read_text())
    fields = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _FIELDS}
    return GraphArrays(**fields, skipped=meta["skipped"])
