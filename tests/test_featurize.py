"""molgen.featurize: round trips, canonical order, the fast cached path, the valence table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rdkit import Chem

from molgen.errors import InputError
from molgen.featurize import (
    ATOM_VALENCE,
    ATOM_VOCAB,
    dense_to_smiles,
    featurize_smiles,
    graph_cache,
    graph_to_mol,
    mol_to_graph,
)


def _flat(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def _same(g, h) -> bool:
    return g.x.equal(h.x) and g.edge_index.equal(h.edge_index) and g.edge_attr.equal(h.edge_attr)


@pytest.fixture(scope="module")
def moses_head() -> list[str]:
    from molgen.datasets import moses_smiles

    return moses_smiles("test", nrows=300)


def test_round_trip_real_molecules(real_smiles):
    for s in real_smiles:
        g = mol_to_graph(s)
        assert g.num_nodes == Chem.MolFromSmiles(s).GetNumAtoms()
        assert Chem.MolToSmiles(graph_to_mol(g)) == _flat(s), s


def test_round_trip_moses(moses_head):
    assert [Chem.MolToSmiles(graph_to_mol(mol_to_graph(s))) for s in moses_head] == [
        _flat(s) for s in moses_head
    ]


def test_dense_decoder_arrays_become_the_same_molecules_as_graphs(moses_head):
    """The decoder's dense form (types + band of bonds to the previous atoms) and a graph go through
    the one builder: both give the molecule back."""
    import torch
    from torch_geometric.data import Batch

    from molgen.models.graph_decoder import dense_targets

    graphs = [mol_to_graph(s) for s in moses_head[:50]]
    batch = Batch.from_data_list(graphs)
    types, band, n_atoms = dense_targets(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.ptr, 12)
    smiles = dense_to_smiles(types.numpy(), band.numpy(), n_atoms.numpy())
    assert smiles == [Chem.MolToSmiles(graph_to_mol(g)) for g in graphs] == [_flat(s) for s in moses_head[:50]]
    broken = torch.zeros(1, 2, 12, dtype=torch.long)
    broken[0, 1, 0] = 3  # F#F breaks fluorine's budget: None, not an exception or a dropped row
    assert dense_to_smiles(np.array([[3, 3]]), broken.numpy(), np.array([2])) == [None]


def test_bracket_atoms_are_typed_by_element_and_charge():
    from molgen.featurize import _token_type

    index = {t: i for i, t in enumerate(ATOM_VOCAB)}
    assert _token_type("[nH]") == _token_type("[NH2]") == _token_type("N") == index[("N", 0)]
    assert _token_type("[NH3+:1]") == _token_type("[N+]") == index[("N", 1)]
    assert _token_type("[O-]") == index[("O", -1)] and _token_type("[13CH3]") == index[("C", 0)]
    assert _token_type("[se]") == index[("Se", 0)]
    assert -1 == _token_type("[Pt]") == _token_type("[*]") == _token_type("[N+2]") == _token_type("[X]")


def test_kekulised_bonds_and_charges():
    g = mol_to_graph("c1ccccc1[N+](=O)[O-]")
    assert sorted(set(g.edge_attr.tolist())) == [0, 1]  # single and double only: no aromatic class
    types = [ATOM_VOCAB[t] for t in g.x.tolist()]
    assert ("N", 1) in types and ("O", -1) in types


def test_canonical_order_ignores_input_atom_order(real_smiles):
    for s in real_smiles[:8]:
        mol = Chem.MolFromSmiles(s)
        variants = [Chem.MolToSmiles(mol, doRandom=True, canonical=False) for _ in range(4)]
        first = mol_to_graph(s)
        assert all(_same(first, mol_to_graph(v)) for v in variants), s


def test_bfs_order_keeps_bonds_local(moses_head):
    for s in moses_head:
        src, dst = mol_to_graph(s).edge_index
        assert int((src - dst).abs().max()) <= 10, s


def test_unsupported_and_invalid_input_are_clear_errors():
    with pytest.raises(InputError, match="outside the graph vocabulary"):
        mol_to_graph("[Na+].[Cl-]")
    with pytest.raises(InputError, match="not a valid molecule"):
        mol_to_graph("C1CC")


def test_fast_path_equals_slow_path_and_counts_skips(real_smiles, moses_head):
    source = moses_head[:50] + real_smiles + ["C1CC", "not a smiles", "[Na+].[Cl-]", "[H]OC([H])([H])[H]"]
    arrays = featurize_smiles(source, n_jobs=1)
    assert arrays.skipped == {"parse": 2, "atom": 1}
    assert len(arrays) == len(source) - 3
    for k in range(len(arrays)):
        assert _same(arrays.graph(k), mol_to_graph(source[arrays.index[k]])), source[arrays.index[k]]


def test_parallel_path_matches_serial(moses_head):
    serial = featurize_smiles(moses_head, n_jobs=1)
    parallel = featurize_smiles(moses_head, n_jobs=2, chunk=64)
    for name in ("atom_type", "atom_ptr", "bonds", "bond_ptr", "index"):
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name))


def test_graph_cache_is_memory_mapped_and_reused(tmp_path, monkeypatch, moses_head):
    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path))
    first = graph_cache(moses_head[:40], n_jobs=1)
    assert isinstance(first.atom_type, np.memmap)
    (folder,) = (tmp_path / "graphs").iterdir()
    stamp = (folder / "bonds.npy").stat().st_mtime_ns
    again = graph_cache(moses_head[:40], n_jobs=1)
    assert (folder / "bonds.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.bonds, again.bonds)
    assert _same(again.graph(3), mol_to_graph(moses_head[again.index[3]]))


def test_every_atom_type_sanitises_at_any_use_of_its_budget():
    """The decoder may give any type any bond orders within its budget: all must sanitise."""
    bond = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for (elem, charge), budget in zip(ATOM_VOCAB, ATOM_VALENCE, strict=True):
        for n in range(budget + 1):
            for orders in itertools.combinations_with_replacement((1, 2, 3), n):
                if sum(orders) > budget:
                    continue
                mol = Chem.RWMol()
                centre = Chem.Atom(elem)
                centre.SetFormalCharge(charge)
                mol.AddAtom(centre)
                for order in orders:
                    mol.AddBond(0, mol.AddAtom(Chem.Atom("C")), bond[order])
                Chem.SanitizeMol(mol)  # raises on a budget RDKit does not accept
