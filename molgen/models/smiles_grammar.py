"""SMILES syntax as token masks, so that sampling cannot write a string that is not SMILES.

Most invalid samples of a chemical language model are not chemistry errors but syntax: a ring
label opened and never closed, a branch left open at the end, ``()``, ``((``, ``=#``, a ring
label right after ``(``. :class:`SmilesGrammar` tracks, for every row of a sampling batch, what
the last token was, the branch depth and which ring labels are open, and masks the next-token
logits so that only tokens that keep the string a SMILES prefix can be drawn; ``<eos>`` only
when every branch and ring is closed. The model's probabilities are renormalised over the
allowed tokens; nothing is filtered afterwards.

It is syntax only: valence and aromaticity (can the ring be kekulised?) are still the model's
to get right, and the model card reports validity with and without the grammar.

Token classes (from the token text, so any vocabulary works): atoms (bracket atoms and the
organic subset), bonds, ``(``, ``)``, ring labels (``1``-``9``, ``%nn``), ``.``, ``<eos>``;
other tokens (specials, stray ``+``/``@``) are never sampled under the grammar.
"""

from __future__ import annotations

import re

import torch

__all__ = ["SmilesGrammar", "GrammarState"]

START, ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS, OTHER = range(9)
_ORGANIC = {"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "s", "p", "*"}
_BONDS = {"-", "=", "#", ":", "/", "\\", "$", "~"}
_RING = re.compile(r"^(%[0-9]{2}|[0-9])$")
# which classes may follow which (conditional ones are narrowed per row in GrammarState.mask)
_FOLLOW = {
    START: {ATOM},
    ATOM: {ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS},
    RING: {ATOM, BOND, OPEN, CLOSE, RING, DOT, EOS},
    CLOSE: {ATOM, BOND, OPEN, CLOSE, DOT, EOS},
    OPEN: {ATOM, BOND},
    BOND: {ATOM, RING},
    DOT: {ATOM},
    EOS: {EOS},  # a finished row only repeats <eos>, so its distribution stays defined
    OTHER: {EOS},
}


def token_class(token: str, eos_token: str = "<eos>") -> int:
    if token == eos_token:
        return EOS
    if token in _ORGANIC or (token.startswith("[") and token.endswith("]")):
        return ATOM
    if token in _BONDS:
        return BOND
    if _RING.match(token):
        return RING
    return {"(": OPEN, ")": CLOSE, ".": DOT}.get(token, OTHER)


class SmilesGrammar:
    """Token classes and follow rules of one vocabulary; :meth:`start` gives a batch's state.

    Example:
        >>> grammar = SmilesGrammar(model.tokenizer.itos)
        >>> state = grammar.start(batch=64, device="cpu")
        >>> logits = logits.masked_fill(~state.mask(), float("-inf")); state.update(next_ids)
    """

    def __init__(self, tokens, eos_token: str = "<eos>", size: int | None = None):
        self.tokens = list(tokens)
        classes = [token_class(t, eos_token) for t in self.tokens]
        classes += [OTHER] * ((size or len(classes)) - len(classes))  # model rows past the tokenizer
        self.classes = torch.tensor(classes, dtype=torch.long)  # (V,)
        self.follow = torch.tensor([[c in _FOLLOW[p] for c in classes] for p in range(len(_FOLLOW))])  # (9, V)
        self.ring_ids = torch.tensor([i for i, c in enumerate(classes) if c == RING], dtype=torch.long)  # (R,)
        slot = torch.full((len(classes),), -1, dtype=torch.long)
        slot[self.ring_ids] = torch.arange(len(self.ring_ids))
        self.ring_slot = slot  # (V,) ring-label index or -1
        self.close_ids = torch.tensor([i for i, c in enumerate(classes) if c == CLOSE], dtype=torch.long)
        self.open_ids = torch.tensor([i for i, c in enumerate(classes) if c == OPEN], dtype=torch.long)
        self.eos_ids = torch.tensor([i for i, c in enumerate(classes) if c == EOS], dtype=torch.long)
        if not (classes.count(ATOM) and len(self.eos_ids)):
            raise ValueError("a SMILES grammar needs atom tokens and an end token in the vocabulary")

    def start(self, batch: int, device) -> GrammarState:
        return GrammarState(self, batch, torch.device(device))


class GrammarState:
    """Per-row syntax state of a sampling batch.

    Besides the last token class, the branch depth and the open ring labels, it follows which atom
    the next atom bonds to (``anchor``, with a stack of branch points) so that a ring closure cannot
    repeat a bond that already exists: ``C1C1`` (the chain bond) and ``C12CC12`` (two labels, one pair).

    Shapes:
        prev, depth, atoms, anchor, parent: (B,); stack: (B, max_depth);
        open_ring, opened_at, partner_here: (B, R) for the vocabulary's R ring labels.
    """

    max_depth = 16  # deeper branches than this are never opened (MOSES needs 4)

    def __init__(self, grammar: SmilesGrammar, batch: int, device: torch.device):
        g = grammar
        self.classes, self.follow = g.classes.to(device), g.follow.to(device)
        self.ring_ids, self.ring_slot = g.ring_ids.to(device), g.ring_slot.to(device)
        self.close_ids, self.eos_ids = g.close_ids.to(device), g.eos_ids.to(device)
        self.prev = torch.full((batch,), START, dtype=torch.long, device=device)
        self.depth = torch.zeros(batch, dtype=torch.long, device=device)
        self.atoms = torch.zeros(batch, dtype=torch.long, device=device)  # atoms written so far
        long = dict(dtype=torch.long, device=device)
        self.anchor = torch.full((batch,), -1, **long)  # the atom a new atom bonds to; -1: none
        self.parent = torch.full((batch,), -1, **long)  # the atom the current atom bonded to
        self.stack = torch.full((batch, self.max_depth), -1, **long)  # anchors at each open "("
        self.open_ring = torch.zeros(batch, len(g.ring_ids), dtype=torch.bool, device=device)
        self.opened_at = torch.zeros(batch, len(g.ring_ids), **long)
        self.partner_here = torch.full((batch, len(g.ring_ids)), -1, **long)  # closures at this atom
        self.open_ids = g.open_ids.to(device)

    def mask(self) -> torch.Tensor:
        """Allowed next tokens. Shapes: returns (B, V) bool."""
        m = self.follow[self.prev]  # (B, V), a fresh tensor
        m[:, self.close_ids] &= (self.depth > 0)[:, None]
        m[:, self.open_ids] &= (self.depth < self.max_depth)[:, None]
        closed = (self.depth == 0) & ~self.open_ring.any(1)
        m[:, self.eos_ids] &= (closed | (self.prev == EOS))[:, None]
        # a label opens a ring, or closes one onto an atom not yet bonded to the current one:
        # not itself (C11), not its chain parent (C1C1), not a partner of another closure here
        here = self.atoms[:, None] - 1
        partner = self.opened_at
        taken = (partner == here) | (partner == self.parent[:, None])
        taken |= (partner[:, :, None] == self.partner_here[:, None, :]).any(2)
        m[:, self.ring_ids] &= ~self.open_ring | ~taken
        return m

    def update(self, nxt: torch.Tensor) -> None:
        """Advance every row by its sampled token. Shapes: nxt (B,) token ids."""
        cls = self.classes[nxt]
        atom = cls == ATOM
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
        rows = (cls == RING).nonzero().squeeze(1)
        if len(rows):
            r = self.ring_slot[nxt[rows]]
            was_open = self.open_ring[rows, r]
            self.open_ring[rows, r] = ~was_open
            self.partner_here[rows, r] = torch.where(was_open, self.opened_at[rows, r], -1)
            self.opened_at[rows, r] = torch.where(was_open, self.opened_at[rows, r], self.atoms[rows] - 1)
        self.prev = cls

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a (B,) bool mask), as the sampler drops finished rows."""
        for name in ("prev", "depth", "atoms", "anchor", "parent", "stack", "open_ring", "opened_at", "partner_here"):
            setattr(self, name, getattr(self, name)[rows])
