"""PMO / GuacaMol goal-directed tasks (molgen.guide.pmo) against hand computations of GuacaMol's definitions."""

import math

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import Crippen, Descriptors
from rdkit.Chem import rdFingerprintGenerator as G

from molgen.errors import ConfigError, InputError
from molgen.guide import Objective, Oracle, pmo

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def test_the_twenty_tasks_and_the_three_left_out():
    assert len(pmo.TASKS) == 20 and len(pmo.PMO_TASKS) == 23
    with pytest.raises(InputError, match="pickled classifier"):
        pmo.score("drd2", [ASPIRIN])
    with pytest.raises(InputError, match="unknown PMO task"):
        pmo.score("celecoxib", [ASPIRIN])


def test_every_task_scores_in_unit_interval_and_invalid_is_zero():
    smiles = [ASPIRIN, pmo.OSIMERTINIB, pmo.HOP_START, "C1CC1N", "not a smiles", None]
    for task in pmo.TASKS:
        s = pmo.score(task, smiles)
        assert s.shape == (6,) and np.all((s >= 0) & (s <= 1)), task
        assert s[4] == 0 and s[5] == 0, task


def test_rediscovery_of_the_target_is_one():
    for task, target in [("celecoxib_rediscovery", pmo.CELECOXIB), ("troglitazone_rediscovery", pmo.TROGLITAZONE),
                         ("thiothixene_rediscovery", pmo.THIOTHIXENE)]:
        assert pmo.score(task, [target])[0] == pytest.approx(1.0)
        # another spelling of the same molecule, too
        assert pmo.score(task, [Chem.MolToSmiles(Chem.MolFromSmiles(target), doRandom=True)])[0] == pytest.approx(1.0)
    assert pmo.score("celecoxib_rediscovery", [ASPIRIN])[0] < 0.2


def test_qed_of_aspirin():
    # Bickerton et al. 2012 report QED 0.55 for aspirin
    assert pmo.score("qed", [ASPIRIN])[0] == pytest.approx(0.5501, abs=1e-4)


def test_isomers_by_hand():
    # 2-methyl-4-nitroaniline is C7H8N2O2: every Gaussian at its mean
    assert pmo.score("isomers_c7h8n2o2", ["Cc1cc([N+](=O)[O-])ccc1N"])[0] == pytest.approx(1.0)
    # 4-nitroaniline C6H6N2O2: C off by 1 (sigma 1), H off by 2 (sigma 1), 16 atoms for 19 (sigma 2)
    hand = (math.exp(-0.5) * 1 * 1 * math.exp(-2.0) * math.exp(-0.5 * 1.5**2)) ** (1 / 5)
    assert pmo.score("isomers_c7h8n2o2", ["Nc1ccc(cc1)[N+](=O)[O-]"])[0] == pytest.approx(hand)
    # an isomer of C9H10N2O2PF2Cl: 7 element terms and the total, all at their means
    assert pmo.score("isomers_c9h10n2o2pf2cl", ["NNc1ccc(C(=O)OCP(F)F)c(Cl)c1C"])[0] == pytest.approx(1.0)


def _tanimoto(a, b, gen):
    fa, fb = (gen.GetSparseCountFingerprint(Chem.MolFromSmiles(s)) for s in (a, b))
    return DataStructs.TanimotoSimilarity(fa, fb)


def test_similarity_tasks_clip_at_their_threshold():
    fcfp4 = G.GetMorganGenerator(radius=2, atomInvariantsGenerator=G.GetMorganFeatureAtomInvGen())
    salbutamol_des_tbutyl = "CC(C)NCC(O)c1ccc(O)c(CO)c1"  # isopropyl for tert-butyl
    sim = _tanimoto(salbutamol_des_tbutyl, pmo.ALBUTEROL, fcfp4)
    assert 0 < sim < 1
    assert pmo.score("albuterol_similarity", [salbutamol_des_tbutyl])[0] == pytest.approx(min(sim / 0.75, 1.0))
    assert pmo.score("albuterol_similarity", [pmo.ALBUTEROL])[0] == 1.0
    assert pmo.score("mestranol_similarity", [pmo.MESTRANOL])[0] == 1.0


def test_median1_is_the_geometric_mean_of_two_similarities():
    ecfp4 = G.GetMorganGenerator(radius=2)
    s_camphor = _tanimoto(pmo.CAMPHOR, pmo.MENTHOL, ecfp4)
    assert pmo.score("median1", [pmo.CAMPHOR])[0] == pytest.approx(math.sqrt(s_camphor))


def test_osimertinib_mpo_of_osimertinib_by_hand():
    mol = Chem.MolFromSmiles(pmo.OSIMERTINIB)
    # FCFP4 similarity 1 (clipped at 0.8: 1), ECFP6 similarity 1 above mu 0.85, TPSA below 100, logP above 1
    terms = [1.0, math.exp(-0.5 * (0.15 / 0.1) ** 2), math.exp(-0.5 * ((Descriptors.TPSA(mol) - 100) / 10) ** 2),
             math.exp(-0.5 * (Crippen.MolLogP(mol) - 1) ** 2)]
    assert pmo.score("osimertinib_mpo", [pmo.OSIMERTINIB])[0] == pytest.approx(np.prod(terms) ** 0.25)


def test_hops_of_the_start_molecule():
    # deco_hop: pharmacophore similarity 1, both old decorations present (0, 0), scaffold kept (1)
    assert pmo.score("deco_hop", [pmo.HOP_START])[0] == pytest.approx(0.5)
    # scaffold_hop: similarity 1, decoration kept (1), the old scaffold present (0)
    assert pmo.score("scaffold_hop", [pmo.HOP_START])[0] == pytest.approx(2 / 3)


def test_valsartan_smarts_needs_the_pattern():
    assert pmo.score("valsartan_smarts", [ASPIRIN, pmo.SITAGLIPTIN])[0] == 0.0
    valsartan = "CCCCC(=O)N(Cc1ccc(-c2ccccc2-c2nn[nH]n2)cc1)C(C(C)C)C(=O)O"
    assert pmo.score("valsartan_smarts", [valsartan])[0] > 0


def test_pmo_component_in_an_objective_and_oracle():
    obj = Objective.from_dict({"component": [{"kind": "pmo", "task": "celecoxib_rediscovery"},
                                             {"kind": "pmo", "task": "qed", "name": "drug_likeness", "weight": 0}]})
    assert obj.columns == ["score", "celecoxib_rediscovery", "celecoxib_rediscovery_d", "drug_likeness",
                           "drug_likeness_d"]
    oracle = Oracle(obj, budget=2)
    table = oracle([pmo.CELECOXIB, "nonsense", ASPIRIN, pmo.CELECOXIB])
    assert table["score"].tolist()[:3] == pytest.approx([1.0, 0.0, pmo.score("celecoxib_rediscovery", [ASPIRIN])[0]])
    assert oracle.calls_used == 2 and table["drug_likeness"][2] == pytest.approx(0.5501, abs=1e-4)
    assert pmo.objective("qed")([ASPIRIN])["qed"][0] == pytest.approx(0.5501, abs=1e-4)
    with pytest.raises(ConfigError, match="task"):
        Objective.from_dict({"component": [{"kind": "pmo", "task": "drd2"}]})


def test_top_auc_follows_mol_opt():
    # constant 1 from the first call: the curve starts at 0, so 1 - 100 / (2 * 10,000)
    assert pmo.top_auc(np.ones(10_000), 10, 10_000) == pytest.approx(0.995)
    # by hand: checkpoint at 100 (top-10 mean 0.1), end of run at 200 (0.5), flat to 300
    scores = [0.1] * 100 + [0.5] * 100
    hand = (100 * (0.1 + 0) / 2 + 100 * (0.5 + 0.1) / 2 + 100 * 0.5) / 300
    assert pmo.top_auc(scores, 10, 300) == pytest.approx(hand)
    assert pmo.top_auc(scores, 10, 300, finish=False) == pytest.approx((5 + 30) / 300)
    assert pmo.top_auc([], 10, 300) == 0.0
