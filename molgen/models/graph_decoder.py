"""Valence-constrained autoregressive graph decoder (atom by atom, canonical BFS order).

A molecule is generated as a sequence of steps ``i = 0, 1, ...``. Step ``i`` picks the type of
atom ``i`` (or STOP), then its bonds to the ``window`` previous atoms ``i-1, ..., i-window``, nearest
first, each as none / single / double / triple. In the canonical BFS order of
:mod:`molgen.featurize` every bond of a MOSES molecule spans at most 10 positions, so a window of
12 covers them and ring closures are ordinary steps.

Validity by construction, not filtering: every choice is masked so that

* a bond order never exceeds the remaining budget of either atom (``ATOM_VALENCE`` minus bonds
  already placed), so every atom stays within a valence RDKit accepts and hydrogens fill the rest;
* every atom after the first bonds to at least one earlier atom ("none" is masked on the last
  candidate that could still take a bond), so the graph is connected;
* an atom is only started when some atom in the window has budget left; otherwise STOP is forced.

Generation can also refuse ring closures by ring rules. The new ring of a closure is a shortest
path between its two atoms (in the graph so far) plus the bond; with ``max_ring`` no ring of more
atoms is closed (MOSES's filter keeps no ring above 8 atoms and its molecules have rings of 3-7,
while an unlimited decoder closes 8- to 17-membered ones), and with ``ring_rules`` no closure makes
a bridged system (the new ring shares three or more atoms with an earlier one), fuses a 3- or
4-membered ring to another ring (shares a bond with it) or makes a 3- or 4-membered ring with a
double or triple bond in it (cyclopropenes, azetines: 0.02 % of MOSES, 7 % of the shipped
decoder's samples without the rules). Replayed in canonical BFS order, the closures of MOSES
training molecules break these rules exactly for the molecules whose smallest rings do
(``scripts/check_ring_rules.py``).

Training uses teacher forcing: all steps are computed in parallel from the target graph, with the
same valence and connectivity masks, so the loss is the exact log-likelihood of the masked process
used for sampling. The ring rules are applied only when generating: they remove probability that
the training data (almost) never put there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molgen.models import draw

NEG = -1e4  # masked logit; finite so that bf16 and 0 * NEG stay well defined
MAX_REM = 6  # largest bond budget in the vocabulary (S)


def band_to_adjacency(band: Tensor) -> Tensor:
    """Dense symmetric bond-order matrix from a band.

    Shapes:
        band: (B, N, W) with ``band[b, i, k-1]`` the order of bond (i, i-k); out: (B, N, N).
    """
    B, N, W = band.shape
    adj = band.new_zeros(B, N, N)
    i = torch.arange(N, device=band.device)
    for k in range(1, min(W, N - 1) + 1):
        adj[:, i[k:], i[k:] - k] = band[:, k:, k - 1]
    return adj + adj.transpose(1, 2)


def window_remaining(types: Tensor, band: Tensor, valence: Tensor) -> Tensor:
    """Budget left on atom ``i-k`` just before step ``i`` (teacher forcing), -1 where ``i-k < 0``.

    Shapes:
        types: (B, N) atom types (STOP/pad may appear at the end); band: (B, N, W); out: (B, N, W).
    """
    B, N, W = band.shape
    adj = band_to_adjacency(band)  # (B, N, N)
    used_before = F.pad(adj.cumsum(-1), (1, 0))[..., :N]  # [b, j, i] = bonds of j to atoms < i
    budget = valence[types]  # (B, N)
    out = band.new_full((B, N, W), -1)
    i = torch.arange(N, device=band.device)
    for k in range(1, W + 1):
        if k >= N:
            break
        j = i[k:] - k
        out[:, k:, k - 1] = budget[:, j] - used_before[:, j, i[k:]]
    return out


class GraphDecoder(nn.Module):
    """GRU over atoms conditioned on z; an MLP scores each candidate bond of the current atom.

    Args:
        n_types: atom vocabulary size (STOP is index ``n_types``).
        valence: (n_types,) bond budget of each type.
        latent: size of z; hidden: GRU width; layers: GRU depth; window: bond window W;
        max_atoms: atoms at most per molecule.
    """

    def __init__(self, n_types: int, valence: list[int], latent: int, hidden: int, layers: int,
                 window: int, max_atoms: int, dropout: float = 0.0):  # fmt: skip
        super().__init__()
        self.n_types, self.window, self.max_atoms, self.hidden = n_types, window, max_atoms, hidden
        self.register_buffer("valence", torch.tensor(list(valence) + [0, 0]), persistent=False)
        self.START, self.STOP = n_types + 1, n_types
        self.type_emb = nn.Embedding(n_types + 2, hidden)
        # previous atom's bonds (W x 4 one-hot) and the budgets left in the window (W x 8 one-hot)
        self.ctx = nn.Linear(window * 4 + window * (MAX_REM + 2), hidden)
        self.z_in = nn.Linear(latent, hidden)
        self.z_h0 = nn.Linear(latent, hidden * layers)
        self.gru = nn.GRU(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.atom_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n_types + 1))
        # bond scorer: projections of the two atoms' GRU states are added (cheaper than a Linear
        # over their concatenation, which would run once per candidate pair)
        hb = max(hidden // 2, 16)
        self.bond_i, self.bond_j = nn.Linear(hidden, hb), nn.Linear(hidden, hb, bias=False)
        self.k_emb = nn.Embedding(window, hb)
        self.rem_i_emb, self.rem_j_emb = nn.Embedding(MAX_REM + 1, hb), nn.Embedding(MAX_REM + 2, hb)
        self.bond_head = nn.Sequential(nn.GELU(), nn.Linear(hb, hb), nn.GELU(), nn.Linear(hb, 4))

    # -- shared pieces ---------------------------------------------------------------------------

    def _step_input(self, prev_type: Tensor, prev_band: Tensor, rem_win: Tensor, z: Tensor) -> Tensor:
        """GRU input for a step. Shapes: prev_type (..,), prev_band (.., W), rem_win (.., W), z (.., L)."""
        ctx = torch.cat(
            [F.one_hot(prev_band, 4).flatten(-2), F.one_hot(rem_win + 1, MAX_REM + 2).flatten(-2)], -1
        ).to(z.dtype)
        return self.type_emb(prev_type) + self.ctx(ctx) + self.z_in(z)

    def _h0(self, z: Tensor) -> Tensor:
        B = z.shape[0]
        return torch.tanh(self.z_h0(z)).view(B, -1, self.hidden).transpose(0, 1).contiguous()

    @staticmethod
    def _atom_mask(rem_win: Tensor, step: Tensor, n_types: int, max_atoms: int) -> Tensor:
        """Allowed atom choices (n_types types + STOP).

        Shapes: rem_win (.., W); step (..,) -> (.., n_types+1).
        """
        can_bond = (rem_win >= 1).any(-1, keepdim=True)
        first, room = (step == 0).unsqueeze(-1), (step < max_atoms).unsqueeze(-1)
        types_ok = (can_bond | first) & room
        stop_ok = ~first
        return torch.cat([types_ok.expand(*rem_win.shape[:-1], n_types), stop_ok], -1)

    @staticmethod
    def _bond_mask(rem_i: Tensor, rem_j: Tensor, must_bond: Tensor) -> Tensor:
        """Allowed orders 0..3 for a candidate bond. Shapes: all (..,) -> (.., 4)."""
        order = torch.arange(4, device=rem_i.device)
        ok = order <= torch.minimum(rem_i, rem_j).clamp(min=0).unsqueeze(-1)
        ok[..., 0] = ~must_bond
        return ok

    def _bond_logits(self, p_i: Tensor, p_j: Tensor, k: Tensor, rem_i: Tensor, rem_j: Tensor) -> Tensor:
        """Scores of orders 0..3. Shapes: p_i, p_j (.., Hb) projected states; k, rem_* (..,) -> (.., 4)."""
        x = p_i + p_j + self.k_emb(k) + self.rem_i_emb(rem_i.clamp(0, MAX_REM))
        return self.bond_head(x + self.rem_j_emb(rem_j.clamp(-1, MAX_REM) + 1))

    # -- teacher forcing -------------------------------------------------------------------------

    def forward(self, z: Tensor, types: Tensor, band: Tensor, n_atoms: Tensor) -> Tensor:
        """Negative log-likelihood of each target graph under the masked process.

        Args:
            z: latent vectors. types: atom types with STOP at ``n_atoms`` and anything after.
            band: bond orders to the window (0 none). n_atoms: atoms per molecule.

        Shapes:
            z: (B, L); types: (B, N) with N > max(n_atoms); band: (B, N, W); n_atoms: (B,) -> (B,).
        """
        B, N, W = band.shape
        dev = z.device
        steps = torch.arange(N, device=dev)
        real = steps < n_atoms.unsqueeze(1)  # (B, N) atom positions
        t_in = torch.where(real, types, torch.full_like(types, self.STOP))
        band = band * real.unsqueeze(-1)
        rem_win = window_remaining(t_in, band, self.valence)  # (B, N, W)
        prev_t = torch.cat([torch.full_like(t_in[:, :1], self.START), t_in[:, :-1]], 1)
        prev_b = torch.cat([torch.zeros_like(band[:, :1]), band[:, :-1]], 1)
        x = self._step_input(prev_t, prev_b, rem_win, z.unsqueeze(1).expand(B, N, -1))
        h, _ = self.gru(x, self._h0(z))  # (B, N, H)

        atom_logits = self.atom_head(h).float()
        amask = self._atom_mask(rem_win, steps.expand(B, N), self.n_types, self.max_atoms)
        atom_nll = F.cross_entropy(
            atom_logits.masked_fill(~amask, NEG).transpose(1, 2), t_in, reduction="none"
        )
        steps_used = steps.unsqueeze(0) <= n_atoms.unsqueeze(1)  # atoms and the STOP step
        loss = (atom_nll * steps_used).sum(1)

        # bonds of atom i to i-k, k = 1..W (nearest first)
        used = F.pad(band.cumsum(-1), (1, 0))[..., :W]  # bond orders placed before candidate k
        rem_i = self.valence[t_in].unsqueeze(-1) - used  # (B, N, W)
        avail = rem_win >= 1
        later = torch.flip(torch.cumsum(torch.flip(avail.int(), [-1]), -1), [-1]) - avail.int()  # k' > k
        must = (used == 0) & (later == 0) & avail
        # score only real candidates (atom i exists, i-k >= 0): about half the padded grid
        bond_on = real.unsqueeze(-1) & (rem_win >= 0)
        b, i, k = bond_on.nonzero(as_tuple=True)
        p_i, p_j = self.bond_i(h), self.bond_j(h)  # (B, N, Hb)
        rem_i, rem_j, must = rem_i[b, i, k], rem_win[b, i, k], must[b, i, k]  # (V,)
        blog = self._bond_logits(p_i[b, i], p_j[b, i - k - 1], k, rem_i, rem_j).float()  # (V, 4)
        blog = blog.masked_fill(~self._bond_mask(rem_i, rem_j, must), NEG)
        bond_nll = F.cross_entropy(blog, band[b, i, k], reduction="none")
        return loss + torch.zeros_like(loss).index_add(0, b, bond_nll)

    # -- generation ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, z: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
                 max_ring: int = 0, ring_rules: bool = False, prefix: tuple[Tensor, Tensor] | None = None):  # fmt: skip
        """Decode graphs for a batch of latents; greedy when ``temperature == 0``.

        ``max_ring`` > 0 masks every ring closure that would form a ring of more atoms;
        ``ring_rules`` masks closures that make a bridged system, fuse a 3-/4-membered ring or put a
        double or triple bond in one. ``prefix`` = ``(types, band)`` fixes each row's first atoms
        and their bonds (a partial graph in decoding order, e.g. a scaffold to decorate); an
        entry of -1 leaves that choice to the decoder, so rows may have prefixes of any length.

        Returns:
            (types, band, n_atoms) in the target layout of :meth:`forward`.

        Shapes:
            z: (B, L); prefix: types (B, P), band (B, P, W) with P <= max_atoms
            -> types (B, max_atoms), band (B, max_atoms, W), n_atoms (B,).
        """
        force = None
        if prefix is not None:
            p_types, p_band = prefix
            B, P = p_types.shape
            force = (torch.full((B, self.max_atoms + 1), -1, dtype=torch.long, device=z.device),
                     torch.full((B, self.max_atoms + 1, self.window), -1, dtype=torch.long, device=z.device))
            force[0][:, :P], force[1][:, :P] = p_types, p_band
        return self._decode(z, temperature, generator, max_ring, ring_rules, force)[:3]

    @torch.no_grad()
    def blocked(self, types: Tensor, band: Tensor, max_ring: int = 0, ring_rules: bool = False) -> Tensor:
        """Which target graphs generation can never produce: each is walked through the decoding
        steps with its own choices forced, and flagged where one of them is masked.

        Shapes:
            types: (B, max_atoms + 1) with STOP after the last atom; band: (B, max_atoms + 1, W) -> (B,) bool.
        """
        z = torch.zeros(len(types), self.z_in.in_features, device=types.device)  # the masks do not depend on z
        return self._decode(z, 0.0, None, max_ring, ring_rules, force=(types, band))[3]

    def _decode(self, z, temperature, generator, max_ring, ring_rules, force=None):
        """:meth:`generate`, plus a (B,) flag of rows whose forced choice (``force``: target
        ``types``, ``band``) was masked at some step."""
        B, W, N = z.shape[0], self.window, self.max_atoms
        dev = z.device
        types = torch.full((B, N + 1), self.STOP, dtype=torch.long, device=dev)
        band = torch.zeros((B, N + 1, W), dtype=torch.long, device=dev)
        rem = torch.full((B, N + W + 1), -1, dtype=torch.long, device=dev)  # index j + W; -1 = no atom
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        n_atoms = torch.zeros(B, dtype=torch.long, device=dev)
        p_js = torch.zeros((B, N + 1, self.bond_j.out_features), dtype=z.dtype, device=dev)
        hidden = self._h0(z)
        prev_t = torch.full((B,), self.START, dtype=torch.long, device=dev)
        prev_b = torch.zeros((B, W), dtype=torch.long, device=dev)
        rows = torch.arange(B, device=dev)
        blocked = torch.zeros(B, dtype=torch.bool, device=dev)

        def pick(logits: Tensor, target: Tensor | None) -> Tensor:
            if target is None:
                return _choose(logits, temperature, generator)
            fixed = target >= 0  # -1: the decoder's own choice
            if not bool(fixed.all()):
                target = torch.where(fixed, target, _choose(logits, temperature, generator))
            blocked.logical_or_((logits.gather(1, target.unsqueeze(1)).squeeze(1) <= NEG / 2) & fixed & ~done)
            return target

        # shortest-path lengths between placed atoms (FAR = not connected), for the ring rules
        FAR = N + 2
        small_int = torch.int16  # path lengths stay below 2 * FAR + 1: a small type moves less memory
        track = max_ring > 0 or ring_rules
        dist = torch.full((B, N + 1, N + 1), FAR, dtype=small_int, device=dev) if track else None
        if ring_rules:  # the atoms and size of every ring closed so far (at most 2N + 1 in a graph of N atoms)
            multiple = torch.zeros((B, N + 1, N + 1), dtype=torch.bool, device=dev)  # double and triple bonds
            rings = torch.zeros((B, 2 * N + 1, N + 1), dtype=torch.bool, device=dev)
            ring_size = torch.zeros((B, 2 * N + 1), dtype=torch.long, device=dev)  # 0: no ring
            n_rings = torch.zeros(B, dtype=torch.long, device=dev)
            most = 0  # the largest n_rings so far: rings[:, most:] are all empty
        for i in range(N + 1):
            rem_win = torch.stack([rem[:, i + W - k] for k in range(1, W + 1)], 1)  # (B, W)
            x = self._step_input(prev_t, prev_b, rem_win, z)
            out, hidden = self.gru(x.unsqueeze(1), hidden)
            h = out[:, 0]
            p_i, p_js[:, i] = self.bond_i(h), self.bond_j(h)
            logits = self.atom_head(h).float()
            logits = logits.masked_fill(
                ~self._atom_mask(rem_win, torch.full_like(prev_t, i), self.n_types, N), NEG
            )
            t = pick(logits, None if force is None else force[0][:, i])
            t = torch.where(done, torch.full_like(t, self.STOP), t)
            done = done | (t == self.STOP)
            types[:, i] = t
            n_atoms += (~done).long()
            if bool(done.all()):
                break
            rem_i = torch.where(done, torch.zeros_like(t), self.valence[t])
            used = torch.zeros_like(t)
            avail = rem_win >= 1
            d_i = torch.full((B, N + 1), FAR, dtype=small_int, device=dev) if dist is not None else None
            for k in range(1, min(W, i) + 1):
                rem_j = rem[:, i + W - k]
                must = (used == 0) & avail[:, k - 1] & ~avail[:, k:].any(-1) & ~done
                ok = self._bond_mask(rem_i, rem_j, must)
                if d_i is not None:  # a bond to i-k closes a ring of d_i[i-k] + 1 atoms (none while i is unbonded)
                    d = d_i[:, i - k]
                    closes = d < FAR
                    if max_ring > 0:
                        ok[:, 1:] &= (~closes | (d < max_ring)).unsqueeze(-1)
                    if ring_rules:  # the new ring's atoms: i and those on a shortest path i..i-k
                        on = d_i + dist[:, i - k] == d.unsqueeze(-1)  # (B, N+1)
                        on[:, i] = True
                        # a 3- or 4-membered ring stays saturated: its closing bond is single, and
                        # no ring closes over a double or triple bond already on the path
                        tiny = (closes & (d <= 3)).nonzero().squeeze(1)
                        if len(tiny):
                            o = on[tiny]
                            unsat = (multiple[tiny] & o.unsqueeze(2) & o.unsqueeze(1)).flatten(1).any(1)
                            ok[tiny, 2:] = False
                            ok[tiny[unsat], 1:] = False
                    if ring_rules and most:
                        shared = (rings[:, :most] & on.unsqueeze(1)).sum(-1)  # (B, R) atoms shared with each ring
                        size = ring_size[:, :most]
                        small = ((size > 0) & (size <= 4)) | (d <= 3).unsqueeze(-1)
                        broken = ((shared >= 3) | ((shared >= 2) & small)).any(-1)
                        ok[:, 1:] &= (~closes | ~broken).unsqueeze(-1)
                blog = self._bond_logits(p_i, p_js[:, i - k], torch.full_like(t, k - 1), rem_i, rem_j).float()
                b = pick(blog.masked_fill(~ok, NEG), None if force is None else force[1][:, i, k - 1])
                b = torch.where(done, torch.zeros_like(b), b)
                if ring_rules:
                    new = ((b > 0) & closes).nonzero().squeeze(1)
                    if len(new):
                        rings[new, n_rings[new]] = on[new]
                        ring_size[new, n_rings[new]] = d[new].long() + 1
                        n_rings[new] += 1
                        most = int(n_rings.max())
                band[:, i, k - 1] = b
                if ring_rules:
                    multiple[:, i, i - k] = multiple[:, i - k, i] = b >= 2
                rem[:, i + W - k] = torch.where(rem_j >= 0, rem_j - b, rem_j)
                rem_i = rem_i - b
                used = used + b
                if d_i is not None:
                    d_i = torch.where((b > 0).unsqueeze(-1), torch.minimum(d_i, dist[:, i - k] + 1), d_i)
            if dist is not None:  # atom i joins: its distances, and the shortcuts through it
                d_i[:, i] = 0
                dist[:, i], dist[:, :, i] = d_i, d_i
                via = ((band[:, i] > 0).sum(-1) >= 2).nonzero().squeeze(1)  # only an atom with two bonds shortens paths
                if len(via):
                    d_v = d_i[via]
                    dist[via] = torch.minimum(dist[via], d_v.unsqueeze(2) + d_v.unsqueeze(1))
            rem[rows, i + W] = torch.where(done, torch.full_like(t, -1), rem_i)
            prev_t, prev_b = t, band[:, i]
        return types[:, :N], band[:, :N], n_atoms, blocked


def _choose(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Argmax at temperature 0, else a sample. Shapes: (B, C) -> (B,)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return draw(probs, generator)


def dense_targets(x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, ptr: Tensor, window: int):
    """Decoder targets from a PyG batch whose graphs are in canonical BFS order.

    Returns ``(types, band, n_atoms)`` with STOP (``-1`` here; the caller maps it) after the last
    atom. Bonds spanning more than ``window`` positions raise ``ValueError``.

    Shapes:
        x: (A,); edge_index: (2, 2E); edge_attr: (2E,); batch: (A,); ptr: (B+1,)
        -> types (B, N+1), band (B, N+1, W), n_atoms (B,) with N the largest graph.
    """
    n_atoms = ptr[1:] - ptr[:-1]
    B, N = len(n_atoms), int(n_atoms.max()) + 1
    local = torch.arange(len(x), device=x.device) - ptr[batch]
    types = torch.full((B, N), -1, dtype=torch.long, device=x.device)
    types[batch, local] = x
    src, dst = edge_index
    keep = src > dst
    g = batch[src[keep]]
    i, j = local[src[keep]], local[dst[keep]]
    k = i - j
    if len(k) and int(k.max()) > window:
        raise ValueError(f"a bond spans {int(k.max())} atoms in BFS order, more than the window {window}")
    band = torch.zeros((B, N, window), dtype=torch.long, device=x.device)
    band[g, i, k - 1] = edge_attr[keep] + 1
    return types, band, n_atoms
