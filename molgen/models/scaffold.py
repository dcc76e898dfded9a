"""Scaffold-constrained SMILES decoding: the scaffold's tokens are forced, only the decorations are sampled.

A scaffold such as ``c1ccc([*])cc1C(=O)N[*]`` marks its attachment points with ``[*]``. RDKit writes it
(in the model's spelling: Kekulé for a Kekulé vocabulary) so that every ``[*]``, an atom with one bond,
is either a branch ``(...[*])`` or the end of the string; a string that would start with ``[*]`` is
rooted at its neighbour instead. The template is then the scaffold's tokens with a *slot* at each
``[*]``. During sampling (:meth:`molgen.models.gpt.SmilesGPT.generate` with ``scaffold=``) a row writes
the template's tokens as forced steps, and at a slot the model samples a decoration: at least one atom,
ended by the ``)`` that closes the slot's branch (at the slot's own depth, with every ring label opened
inside the slot closed) or by ``<eos>`` for a slot at the end. Inside a slot the ring labels still open
in the scaffold are masked, so a decoration can never close a scaffold ring onto itself, and ``.`` is
masked; the :class:`~molgen.models.smiles_grammar.SmilesGrammar` masks keep the whole row SMILES. So
every finished row holds the scaffold, and the decorations are the model's own conditional
distribution given everything written before them: constrained decoding with forced segments
(Langevin et al., "Scaffold-constrained molecular generation", *J. Chem. Inf. Model.* 2020, 60, 5637;
the idea of REINVENT 4's LibInvent, written anew here).

A scaffold without ``[*]`` may grow at any atom that bears an implicit hydrogen: each gets an *optional*
slot, where the model chooses between writing the scaffold's next token (no decoration there) and
opening one (``(`` for a branch slot, an atom or bond for a slot at the end of a chain), so the model
decides which positions to decorate. Prefix sampling from randomised SMILES of the scaffold (grow only
after the last atom) was the simpler alternative; it reaches one position per string and cannot
decorate two positions at once, which this does. Atoms written in brackets with hydrogens (``[nH]``)
are not offered: their token would have to change when decorated; mark them with ``[*]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molgen.errors import InputError
from molgen.models.smiles_grammar import ATOM, BOND, SmilesGrammar
from molgen.tokenize import SmilesTokenizer, parse_bracket, tokenize

__all__ = ["ScaffoldTemplate", "ScaffoldState", "scaffold_mol", "scaffold_core", "contains_scaffold"]

TOK, SLOT, OPT_CHAIN, OPT_BRANCH, END = range(5)


def _is_dummy(token: str) -> bool:
    atom = parse_bracket(token) if token.startswith("[") else None
    return token == "*" or (atom is not None and atom.symbol == "*")


def scaffold_mol(smiles: str):
    """The scaffold as an RDKit Mol, checked: one connected fragment, each ``[*]`` bonded to one atom.

    Raises:
        InputError: one line naming what is wrong with the scaffold.
    """
    from rdkit import Chem

    from molgen.chem import quiet

    if not isinstance(smiles, str) or not smiles.strip():
        raise InputError(f"scaffold must be a SMILES string, got {smiles!r}")
    with quiet():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise InputError(f"scaffold {smiles!r} is not a valid SMILES (RDKit cannot parse it); mark attachment "
                         "points with [*], e.g. c1ccc([*])cc1C(=O)N[*]")  # fmt: skip
    if len(Chem.GetMolFrags(mol)) > 1:
        raise InputError(f"scaffold {smiles!r} has {len(Chem.GetMolFrags(mol))} fragments; give one connected scaffold")
    dummies = [a for a in mol.GetAtoms() if a.GetAtomicNum() == 0]
    if any(a.GetDegree() != 1 for a in dummies):
        raise InputError(f"scaffold {smiles!r}: each [*] attachment point must bond to exactly one scaffold atom")
    if len(dummies) == mol.GetNumAtoms():
        raise InputError(f"scaffold {smiles!r} has no atoms besides its [*] attachment points")
    return mol


def scaffold_core(smiles: str):
    """The scaffold with its ``[*]`` attachment points removed: the query behind ``contains_scaffold``."""
    from rdkit import Chem

    mol = scaffold_mol(smiles)
    return Chem.DeleteSubstructs(mol, Chem.MolFromSmarts("[#0]")) if any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()) else mol


def contains_scaffold(smiles, scaffold: str) -> list[bool]:
    """For each SMILES, whether it holds the scaffold (its ``[*]`` removed) as a substructure (RDKit
    ``HasSubstructMatch``); ``False`` for one that does not parse."""
    from molgen.chem import to_mol

    core = scaffold_core(scaffold)
    mols = (to_mol(s) if isinstance(s, str) else None for s in smiles)
    return [m is not None and m.HasSubstructMatch(core) for m in mols]


def _template_smiles(mol, kekule: bool) -> tuple[str, bool]:
    """The scaffold written for decoding, and whether its slots are required (``[*]`` given)."""
    from rdkit import Chem

    required = any(a.GetAtomicNum() == 0 for a in mol.GetAtoms())
    mol = Chem.RWMol(mol)
    if not required:  # every atom with an implicit hydrogen may grow: an optional [*] on each
        for atom in list(mol.GetAtoms()):
            if atom.GetTotalNumHs() and not atom.GetNumExplicitHs() and not atom.GetNoImplicit():
                d = mol.AddAtom(Chem.Atom(0))
                mol.AddBond(atom.GetIdx(), d, Chem.BondType.SINGLE)
        if not any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()):
            raise InputError(f"scaffold {Chem.MolToSmiles(mol)!r} has no atom with a hydrogen to grow from; mark "
                             "attachment points with [*]")  # fmt: skip
        Chem.SanitizeMol(mol)
    mol = mol.GetMol()
    if kekule:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    text = Chem.MolToSmiles(mol, kekuleSmiles=kekule)
    first = int(mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",")[0])
    if mol.GetAtomWithIdx(first).GetAtomicNum() == 0:  # never start at [*]: root the string at its neighbour
        root = mol.GetAtomWithIdx(first).GetNeighbors()[0].GetIdx()
        text = Chem.MolToSmiles(mol, kekuleSmiles=kekule, rootedAtAtom=root)
    return text, required


@dataclass
class ScaffoldTemplate:
    """A scaffold as decoding steps: ``kinds[i]`` is TOK (force ``ids[i]``), SLOT (a required decoration),
    OPT_CHAIN / OPT_BRANCH (an optional one) or END (force ``<eos>``); ``head`` is the forced start,
    fed as a prefix. ``smiles`` is the template as written (``*`` at the slots)."""

    scaffold: str
    smiles: str
    kinds: list[int]
    ids: list[int]
    head: list[int]
    required: bool

    @classmethod
    def from_smiles(cls, scaffold: str, tokenizer: SmilesTokenizer) -> ScaffoldTemplate:
        """Parse ``scaffold`` and write it as this vocabulary's template.

        Raises:
            InputError: a scaffold RDKit cannot parse, with several fragments, a ``[*]`` on more than
                one atom, or a token outside the model's vocabulary.
        """
        text, required = _template_smiles(scaffold_mol(scaffold), tokenizer.kekule)
        tokens = tokenize(text)
        missing = sorted({t for t in tokens if not _is_dummy(t) and t not in tokenizer.stoi})
        if missing:
            raise InputError(f"scaffold {scaffold!r} (written {text!r} for this model) holds tokens outside the "
                             f"model's vocabulary: {missing}")  # fmt: skip
        if not required:  # a single bond written before an optional [*] goes with it
            tokens = [t for i, t in enumerate(tokens) if not (t == "-" and i + 1 < len(tokens) and _is_dummy(tokens[i + 1]))]
        kinds, ids, i = [], [], 0
        while i < len(tokens):
            t = tokens[i]
            if not _is_dummy(t):
                kinds.append(TOK)
                ids.append(tokenizer.stoi[t])
                i += 1
                continue
            if i + 1 < len(tokens) and tokens[i + 1] != ")":
                raise InputError(f"scaffold {scaffold!r}: cannot place the attachment point in {text!r}")
            if required:
                kinds.append(SLOT)
            elif tokens[i - 1] == "(":  # "([*])": choose between "(" decoration ")" and what follows
                kinds.pop()
                ids.pop()
                kinds.append(OPT_BRANCH)
                i += 1  # its ")" goes with it
            else:  # "...C[*]" at the end of a chain
                kinds.append(OPT_CHAIN)
            ids.append(-1)
            i += 1
        kinds, ids = [*kinds, END], [*ids, tokenizer.eos_id]
        n_head = next(i for i, k in enumerate(kinds) if k != TOK)
        return cls(scaffold, text.replace("[*]", "*"), kinds, ids, ids[:n_head], required)

    def start(self, grammar: SmilesGrammar, batch: int, device) -> ScaffoldState:
        """Decoding state for ``batch`` rows that have written ``head``."""
        return ScaffoldState(self, grammar, batch, torch.device(device))



class ScaffoldState:
    """Per-row position in the template, and the slot each row is decorating.

    Shapes:
        ptr, slot_depth: (B,) long; in_slot, first: (B,) bool; outer: (B, R) the ring labels open
        when the slot began; free: (B, T) which written tokens were sampled (not forced), filled
        by :meth:`record`.
    """

    def __init__(self, template: ScaffoldTemplate, grammar: SmilesGrammar, batch: int, device: torch.device):
        self.kinds = torch.tensor(template.kinds, dtype=torch.long, device=device)
        self.ids = torch.tensor(template.ids, dtype=torch.long, device=device)
        # the token that ends each slot: ")" (a slot in a branch) or <eos> (the template's end)
        close = grammar.close_ids.to(device)
        if len(close) != 1:
            raise InputError("scaffold decoding needs a vocabulary with exactly one ')' token")
        self.close_id, self.eos_id = int(close[0]), int(template.ids[-1])
        nxt = torch.cat([self.ids[1:], self.ids[-1:]])
        self.ends_with = torch.where(self.kinds == OPT_BRANCH, self.close_id, nxt)  # (I,)
        self.after = torch.where(self.kinds == OPT_BRANCH, 1, 2)  # items a closed slot moves past
        self.classes = grammar.classes.to(device)
        self.ring_ids = grammar.ring_ids.to(device)
        self.dot_ids = grammar.dot_ids.to(device)
        self.grows = (self.classes == ATOM) | (self.classes == BOND)  # (V,) tokens that may start a decoration
        long = dict(dtype=torch.long, device=device)
        self.ptr = torch.full((batch,), len(template.head), **long)
        self.in_slot = torch.zeros(batch, dtype=torch.bool, device=device)
        self.first = torch.zeros(batch, dtype=torch.bool, device=device)
        self.slot_depth = torch.zeros(batch, **long)
        self.outer = torch.zeros(batch, len(self.ring_ids), dtype=torch.bool, device=device)
        self.stuck = torch.zeros(batch, dtype=torch.bool, device=device)

    def mask(self, syntax, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Narrow ``allowed`` (B, V) bool, the grammar's mask, to the template; returns the rows whose
        next token is forced and that token. Forced rows keep ``allowed`` as it is (the token is
        written over the draw), so a draw always has something to draw from; a row whose slot has
        no allowed token left may only end (``stuck``: counted unfinished)."""
        kind = self.kinds[self.ptr]
        enter = ~self.in_slot & (kind == SLOT)
        if enter.any():  # a required slot begins here
            self._begin(enter, syntax.depth, syntax.open_ring)
        forced = ~self.in_slot & ((kind == TOK) | (kind == END))
        rows = torch.arange(len(kind), device=kind.device)
        ends_with = self.ends_with[self.ptr]  # (B,)
        nxt = self.ids[(self.ptr + 1).clamp(max=len(self.ids) - 1)]
        m = allowed.clone()
        # an optional branch: "(" (decorate) or the scaffold's next token
        choice = torch.zeros_like(m)
        choice[rows, nxt.clamp(min=0)] = True
        opt_b = ~self.in_slot & (kind == OPT_BRANCH)
        opt_c = ~self.in_slot & (kind == OPT_CHAIN)
        choice_b = choice.clone()
        choice_b[:, syntax.open_ids] = True
        m[opt_b] &= choice_b[opt_b]
        m[opt_c] &= choice[opt_c] | self.grows[None]
        s = self.in_slot
        if s.any():
            m[:, self.dot_ids] &= ~s[:, None]
            m[:, self.ring_ids] &= ~(s[:, None] & self.outer)
            m[s & self.first] &= self.grows[None]
            at_end = s & (syntax.depth == self.slot_depth)
            inner_open = (syntax.open_ring & ~self.outer).any(1)
            m[:, self.close_id] &= ~(at_end & ((ends_with != self.close_id) | inner_open | self.first))
            m[:, self.eos_id] &= ~(s & ((ends_with != self.eos_id) | self.first))
        m[forced] = allowed[forced]
        self.stuck = ~m.any(1) & ~forced
        m[self.stuck, self.eos_id] = True
        return m, forced, self.ids[self.ptr]

    def _begin(self, rows: torch.Tensor, depth: torch.Tensor, open_ring: torch.Tensor) -> None:
        self.in_slot |= rows
        self.first |= rows
        self.slot_depth = torch.where(rows, depth, self.slot_depth)
        self.outer = torch.where(rows[:, None], open_ring, self.outer)

    def update(self, nxt: torch.Tensor, depth_before: torch.Tensor, syntax) -> None:
        """Advance each row past its written token (``syntax`` already updated with it)."""
        kind = self.kinds[self.ptr]
        nxt_tok = self.ids[(self.ptr + 1).clamp(max=len(self.ids) - 1)]
        was_slot = self.in_slot.clone()
        # forced tokens: one step on
        self.ptr += (~was_slot & (kind == TOK)).long()
        # an optional choice: the scaffold's next token skips the slot, anything else opens it
        opt = ~was_slot & ((kind == OPT_BRANCH) | (kind == OPT_CHAIN))
        skip = opt & (nxt == nxt_tok)
        self.ptr = (self.ptr + 2 * skip.long()).clamp(max=len(self.kinds) - 1)  # skipping to <eos> ends the row
        grow = opt & ~skip
        if grow.any():
            # "(" goes one level deeper; an atom or bond continues the chain at this depth
            self._begin(grow, syntax.depth, syntax.open_ring)
        # inside a slot: the first atom, and the ")" at the slot's depth that ends it
        atom = self.classes[nxt] == ATOM
        self.first &= ~(atom & (was_slot | grow))
        done = was_slot & (nxt == self.close_id) & (depth_before == self.slot_depth)
        self.ptr += torch.where(done, self.after[self.ptr], 0)
        self.in_slot &= ~done

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a (B,) bool mask), as the sampler drops finished rows."""
        for name in ("ptr", "in_slot", "first", "slot_depth", "outer", "stuck"):
            setattr(self, name, getattr(self, name)[rows])
