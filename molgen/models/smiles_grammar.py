"""SMILES syntax as token masks, so that sampling cannot write a string that is not SMILES.

Most invalid samples of a chemical language model are not chemistry errors but syntax: a ring
label opened and never closed, a branch left open at the end, ``()``, ``((``, ``=#``, a ring
label right after ``(``. :class:`SmilesGrammar` tracks, for every row of a sampling batch, what
the last token was, the branch depth and which ring labels are open, and masks the next-token
logits so that only tokens that keep the string a SMILES prefix can be drawn; ``<eos>`` only
when every branch and ring is closed. The model's probabilities are renormalised over the
allowed tokens; nothing is filtered afterwards.

Given the number of tokens a row may still write (``start(..., max_tokens=...)``), it can also keep
every row able to close its open rings and branches in time. ``SmilesGPT`` sampling does not use this:
on the shipped model, forced closures turned the rows that wander past the context into large
macrocycles (n = 10,000: 88 samples of 55 tokens or more instead of 9, 65 with over 30 heavy atoms
instead of none) at a cost in FCD and filter pass rate, so a row cut at the context stays invalid.

It also keeps every atom's bond orders within its largest RDKit valence (lower bounds: an
aromatic bond counts 1, so no valid SMILES is ever masked). Aromaticity (can the rings be
kekulised?) is still the model's to get right, and the model card reports validity with and
without the grammar.

For a model that writes Kekulé SMILES (``aromatic=False``, from a Kekulé vocabulary) aromatic atoms
(``c``, ``[nH]``) and the ``:`` bond are never drawn, so no sample can fail kekulisation.

Token classes (from the token text, so any vocabulary works): atoms (bracket atoms and the
organic subset), bonds, ``(``, ``)``, ring labels (``1``-``9``, ``%nn``), ``.``, ``<eos>``;
other tokens (specials, stray ``+``/``@``) are never sampled under the grammar.
"""

from __future__ import annotations

import re

import torch

from molgen.tokenize import parse_bracket

__all__ = ["SmilesGrammar", "GrammarState"]

START, ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS, OTHER, BRANCH_BOND = range(10)
_ORGANIC = {"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "s", "p", "*"}
_RING = re.compile(r"^(%[0-9]{2}|[0-9])$")
# which classes may follow which (conditional ones are narrowed per row in GrammarState.mask)
_FOLLOW = {
    START: {ATOM},
    ATOM: {ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS},
    RING: {ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS},
    CLOSE: {ATOM, BOND, OPEN, CLOSE, DOT, EOS},
    OPEN: {ATOM, BOND},
    BOND: {ATOM, RING},
    BRANCH_BOND: {ATOM},  # a bond that opens a branch bonds to an atom: C(=1) is not SMILES
    DOT: {ATOM},
    EOS: {EOS},  # a finished row only repeats <eos>, so its distribution stays defined
    OTHER: {EOS},
}


# bond order of each bond symbol, aromatic ":" counted 1 (0 = no symbol: single or aromatic, counted 1)
_BOND_ORDER = {"-": 1, "=": 2, "#": 3, "$": 4, ":": 1, "/": 1, "\\": 1, "~": 1}


def _atom_capacity(token: str) -> int:
    """Largest total bond order an atom token can carry: RDKit's largest allowed valence (of the
    isoelectronic element for ions) less explicit Hs; 99 = no limit."""
    from rdkit import Chem

    atom = parse_bracket(token) if token.startswith("[") else None
    if atom:
        symbol, h, charge = atom.symbol, atom.hs, atom.charge
    elif token.startswith("[") or token == "*":
        return 99
    else:
        symbol, h, charge = token, 0, 0
    table = Chem.GetPeriodicTable()
    try:
        z = table.GetAtomicNumber(symbol.capitalize()) - charge
        valences = [v for v in table.GetValenceList(z) if v >= 0] if z > 0 else []
    except RuntimeError:
        valences = []
    return max(max(valences) - h, 0) if valences else 99


def is_aromatic(token: str) -> bool:
    """An aromatic atom (``c``, ``[nH]``, ``[se]``) or the aromatic bond ``:``."""
    if token == ":" or token in {"b", "c", "n", "o", "s", "p"}:
        return True
    atom = parse_bracket(token) if token.startswith("[") else None
    return atom is not None and atom.aromatic


def token_class(token: str, eos_token: str = "<eos>") -> int:
    if token == eos_token:
        return EOS
    if token in _ORGANIC or (token.startswith("[") and token.endswith("]")):
        return ATOM
    if token in _BOND_ORDER:
        return BOND
    if _RING.match(token):
        return RING
    return {"(": OPEN, ")": CLOSE, ".": DOT}.get(token, OTHER)


class SmilesGrammar:
    """Token classes and follow rules of one vocabulary; :meth:`start` gives a batch's state.

    ``aromatic=False`` never draws aromatic atoms or ``:`` (for Kekulé vocabularies).

    Example:
        >>> grammar = SmilesGrammar(model.tokenizer.itos)
        >>> state = grammar.start(batch=64, device="cpu")
        >>> logits = logits.masked_fill(~state.mask(), float("-inf")); state.update(next_ids)
    """

    def __init__(self, tokens, eos_token: str = "<eos>", size: int | None = None, aromatic: bool = True):
        self.tokens = list(tokens)
        classes = [OTHER if not aromatic and is_aromatic(t) else token_class(t, eos_token) for t in self.tokens]
        classes += [OTHER] * ((size or len(classes)) - len(classes))  # model rows past the tokenizer
        self.classes = torch.tensor(classes, dtype=torch.long)  # (V,)
        self.follow = torch.tensor([[c in _FOLLOW[p] for c in classes] for p in range(len(_FOLLOW))])  # (10, V)
        ids = {k: torch.nonzero(self.classes == k).squeeze(1) for k in (RING, CLOSE, OPEN, EOS, ATOM, BOND, DOT)}
        self.ring_ids, self.close_ids, self.open_ids = ids[RING], ids[CLOSE], ids[OPEN]  # (R,), ...
        self.eos_ids, self.atom_ids, self.bond_ids, self.dot_ids = ids[EOS], ids[ATOM], ids[BOND], ids[DOT]
        if not (len(self.atom_ids) and len(self.eos_ids)):
            raise ValueError("a SMILES grammar needs atom tokens and an end token in the vocabulary")
        self.ring_slot = torch.full((len(classes),), -1, dtype=torch.long)  # (V,) ring-label index or -1
        self.ring_slot[self.ring_ids] = torch.arange(len(self.ring_ids))
        # per token id: the order a bond symbol writes (0 for other tokens), an atom's capacity
        self.bond_order = torch.zeros(len(classes), dtype=torch.long)
        self.bond_order[self.bond_ids] = torch.tensor([_BOND_ORDER[self.tokens[i]] for i in self.bond_ids.tolist()])
        self.atom_cap = torch.full((len(classes),), 99, dtype=torch.long)
        self.atom_cap[self.atom_ids] = torch.tensor([_atom_capacity(self.tokens[i]) for i in self.atom_ids.tolist()])

    def start(self, batch: int, device, max_atoms: int = 256, max_tokens: int | None = None) -> GrammarState:
        """State for ``batch`` rows of at most ``max_atoms`` atoms each (a model's block size will do).

        ``max_tokens``: how many tokens a row may write, ``<eos>`` included (a model's context less
        ``<bos>``); the masks then keep every row able to close its rings and branches in time.
        """
        return GrammarState(self, batch, torch.device(device), max_atoms, max_tokens)


class GrammarState:
    """Per-row syntax and valence state of a sampling batch.

    Syntax: the last token class, the branch depth, the open ring labels, and which atom the next
    atom bonds to (``anchor``, with a stack of branch points), so that a ring closure cannot
    repeat a bond that already exists: ``C1C1`` (the chain bond), ``C12CC12`` (two labels, one pair).

    Chemistry, as lower bounds that never reject a valid SMILES: every atom's bond orders so far
    (an aromatic bond counts 1, ring labels reserve 1 when opened) stay within its largest RDKit
    valence (``C(=O)(=O)C``, ``=F``, ``O(C)C`` with a third bond are masked). Aromaticity is left
    to the model: whether a ring can be kekulised is only known once the ring system is complete
    (``c1cccc2ccccc12`` passes through a 10-ring before its last label splits it).

    Shapes:
        prev, depth, atoms, anchor, parent, pending: (B,); stack: (B, max_depth);
        open_ring, opened_at, partner_here, ring_bond: (B, R) for the vocabulary's R ring labels;
        used, cap: (B, A + 1) per atom, the last column standing for "no atom".
    """

    max_depth = 16  # deeper branches than this are never opened (MOSES needs 4)

    def __init__(self, grammar: SmilesGrammar, batch: int, device: torch.device, max_atoms: int,
                 max_tokens: int | None = None):  # fmt: skip
        g = grammar
        for name in ("classes", "follow", "ring_ids", "ring_slot", "close_ids", "open_ids", "eos_ids",
                     "atom_ids", "bond_ids", "dot_ids", "bond_order", "atom_cap"):  # fmt: skip
            setattr(self, name, getattr(g, name).to(device))
        self.atom_cap_of_atoms = self.atom_cap[self.atom_ids]  # (n_atom_tokens,), for the mask
        self.order_of_bonds = self.bond_order[self.bond_ids]  # (n_bond_tokens,)
        long = dict(dtype=torch.long, device=device)
        n_ring = len(g.ring_ids)
        self.prev = torch.full((batch,), START, **long)
        self.depth = torch.zeros(batch, **long)
        self.atoms = torch.zeros(batch, **long)  # atoms written so far
        self.anchor = torch.full((batch,), -1, **long)  # the atom a new atom bonds to; -1: none
        self.parent = torch.full((batch,), -1, **long)  # the atom the current atom bonded to
        self.pending = torch.zeros(batch, **long)  # bond code written before the next atom/label
        self.stack = torch.full((batch, self.max_depth), -1, **long)  # anchors at each open "("
        self.open_ring = torch.zeros(batch, n_ring, dtype=torch.bool, device=device)
        self.opened_at = torch.zeros(batch, n_ring, **long)
        self.ring_bond = torch.zeros(batch, n_ring, **long)  # bond code written at the opening
        self.partner_here = torch.full((batch, n_ring), -1, **long)  # closures at the current atom
        self.used = torch.zeros(batch, max_atoms + 1, **long)  # column max_atoms: "no atom"
        self.cap = torch.zeros(batch, max_atoms + 1, **long)
        self.cap[:, -1] = 99
        self.rows = torch.arange(batch, device=device)
        # with "." in the vocabulary a full atom is no dead end (C1CCF.C1 is SMILES): no guards
        self.guarded = not bool((g.classes == DOT).any())
        self.left = max_tokens  # tokens each row may still write, <eos> included; None: no limit
        self.forced = torch.zeros(batch, dtype=torch.bool, device=device)  # set by mask()

    def _room(self, atom: torch.Tensor) -> torch.Tensor:
        """Bond order still free on ``atom`` (B,) (-1 = none: unlimited)."""
        a = torch.where(atom >= 0, atom, self.cap.size(1) - 1)
        return self.cap[self.rows, a] - self.used[self.rows, a]

    def mask(self) -> torch.Tensor:
        """Allowed next tokens. Shapes: returns (B, V) bool."""
        m = self.follow[self.prev]  # (B, V), a fresh tensor
        rings = self.open_ring.any(1)
        m[:, self.close_ids] &= (self.depth > 0)[:, None]
        m[:, self.eos_ids] &= (((self.depth == 0) & ~rings) | (self.prev == EOS))[:, None]
        # valence: the next bond leaves the anchor from its room, and must fit the next atom.
        # Dead-end guards: on the main chain with rings still open, a move must leave the chain an
        # atom with room for one more bond, or the string could neither go on nor end (C1CCF,
        # C1CC(C)(C)(C)). They are stricter than SMILES: C1CC(C)(C)(C1) is masked, its other
        # spelling C1CC(C)(C)C1 is not; no MOSES test or scaffold-test SMILES is masked anywhere.
        main = (self.depth == 0) & self.guarded  # (B,) rows on the main chain, where guards apply
        spare = (main & rings).long()  # (B,) bond order a move must leave free
        room = self._room(self.anchor)  # (B,)
        order = _order(self.pending)
        bonded = torch.where(self.anchor >= 0, order, 0)
        m[:, self.atom_ids] &= (room >= bonded)[:, None] & (self.atom_cap_of_atoms[None] >= (bonded + spare)[:, None])
        m[:, self.bond_ids] &= room[:, None] >= self.order_of_bonds[None]
        m[:, self.open_ids] &= ((self.depth < self.max_depth) & (room >= 1 + spare))[:, None]
        if self.guarded:  # a last ")" must return to a main-chain atom with room left
            back = self._room(self.stack[:, 0])
            m[:, self.close_ids] &= ~((self.depth == 1) & rings & (back < 1))[:, None]
        # a label opens a ring, or closes one onto an atom not yet bonded to the current one:
        # not itself (C11), not its chain parent (C1C1), not a partner of another closure here
        here, partner = self.anchor[:, None], self.opened_at
        taken = (partner == here) | (partner == self.parent[:, None])
        taken |= (partner[:, :, None] == self.partner_here[:, None, :]).any(2)
        ring_order = torch.maximum(order[:, None], _order(self.ring_bond))  # (B, R)
        partner_room = self.cap.gather(1, partner) - self.used.gather(1, partner)
        left_open = (main & (self.open_ring.sum(1) > 1)).long()[:, None]
        fits = (room[:, None] >= ring_order + left_open) & (partner_room >= ring_order - _order(self.ring_bond))
        closable = self.open_ring & ~taken & fits
        opens = ~self.open_ring & (room >= order + main.long())[:, None]
        m[:, self.ring_ids] &= closable | opens
        if self.left is not None:
            self._budget(m)
        # what the guards cannot foresee (a vocabulary without light atoms, say) ends the row:
        # it is then counted invalid like any unfinished string, never sampled from nothing
        stuck = ~m.any(1)
        if stuck.any():
            m[stuck.nonzero()[:, :1], self.eos_ids] = True
        self.forced = stuck & (self.prev != EOS)  # (B,) rows whose <eos> now would be this fallback
        return m

    def _budget(self, m: torch.Tensor) -> None:
        """Mask, in place, tokens after which the row could no longer finish in its remaining tokens.

        Finishing needs at least one token per open ring label (its closure), one ``)`` per open
        branch and the ``<eos>``; a ``(`` or ``.`` also needs an atom after it. A lower bound, so
        no SMILES that fits is masked; as the end nears, only closing moves stay allowed.
        """
        after = self.left - 1  # tokens left once this one is written
        base = self.open_ring.sum(1) + self.depth + 1  # (B,) the debt with nothing opened or closed
        m[:, self.atom_ids] &= (base <= after)[:, None]
        m[:, self.bond_ids] &= (base <= after)[:, None]
        m[:, self.dot_ids] &= (base + 1 <= after)[:, None]
        m[:, self.open_ids] &= (base + 2 <= after)[:, None]
        m[:, self.close_ids] &= (base - 1 <= after)[:, None]
        ring_debt = base[:, None] + torch.where(self.open_ring, -1, 1)  # (B, R) closing or opening
        m[:, self.ring_ids] &= ring_debt <= after

    def update(self, nxt: torch.Tensor) -> None:
        """Advance every row by its sampled token. Shapes: nxt (B,) token ids."""
        if self.left is not None:
            self.left -= 1
        cls = self.classes[nxt]
        atom = cls == ATOM
        rows = atom.nonzero().squeeze(1)
        if len(rows):
            self._add_atoms(rows, nxt[rows])
        rows = (cls == RING).nonzero().squeeze(1)
        if len(rows):
            self._ring_labels(rows, nxt[rows])
        self.parent = torch.where(atom, self.anchor, self.parent)
        self.anchor = torch.where(atom, self.atoms, self.anchor)  # the new atom's index
        self.anchor = torch.where(cls == DOT, -1, self.anchor)
        self.partner_here[atom] = -1
        self.atoms += atom.long()
        rows = (cls == OPEN).nonzero().squeeze(1)
        if len(rows):  # push the branch point
            self.stack[rows, self.depth[rows]] = self.anchor[rows]
        self.depth += (cls == OPEN).long() - (cls == CLOSE).long()
        rows = (cls == CLOSE).nonzero().squeeze(1)
        if len(rows):  # pop it: the chain goes on from the atom before "("
            self.anchor[rows] = self.stack[rows, self.depth[rows]]
        self.pending = self.bond_order[nxt]
        self.prev = torch.where((cls == BOND) & (self.prev == OPEN), BRANCH_BOND, cls)

    def _add_atoms(self, rows: torch.Tensor, tok: torch.Tensor) -> None:
        """Atoms written on ``rows``: their capacity, and the bond to their anchor."""
        new, anchor, code = self.atoms[rows], self.anchor[rows], self.pending[rows]
        self.cap[rows, new] = self.atom_cap[tok]
        b = anchor >= 0
        rows, new, anchor, code = rows[b], new[b], anchor[b], code[b]
        order = _order(code)
        self.used[rows, anchor] += order
        self.used[rows, new] += order

    def _ring_labels(self, rows: torch.Tensor, tok: torch.Tensor) -> None:
        """Ring labels written on ``rows``: open (reserve one bond) or close (bond the pair)."""
        r, here, code = self.ring_slot[tok], self.anchor[rows], self.pending[rows]
        was_open = self.open_ring[rows, r]
        partner, opened_code = self.opened_at[rows, r], self.ring_bond[rows, r]
        order = torch.where(was_open, torch.maximum(_order(code), _order(opened_code)), _order(code))
        self.used[rows, here] += order
        self.used[rows, partner] += torch.where(was_open, order - _order(opened_code), 0)
        self.open_ring[rows, r] = ~was_open
        self.partner_here[rows, r] = torch.where(was_open, partner, -1)
        self.opened_at[rows, r] = torch.where(was_open, partner, here)
        self.ring_bond[rows, r] = torch.where(was_open, opened_code, code)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a (B,) bool mask), as the sampler drops finished rows."""
        for name in ("prev", "depth", "atoms", "anchor", "parent", "pending", "stack", "open_ring", "opened_at",
                     "ring_bond", "partner_here", "used", "cap"):  # fmt: skip
            setattr(self, name, getattr(self, name)[rows])
        self.rows = torch.arange(int(rows.sum()), device=self.rows.device)


def _order(code: torch.Tensor) -> torch.Tensor:
    """Bond order counted for a pending bond code (0 = no symbol: counted 1)."""
    return code.clamp(min=1)

