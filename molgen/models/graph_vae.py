"""GraphVAEConfig + GraphVAE: a GINE message-passing encoder and a valence-masked graph decoder.

The encoder maps a molecular graph (:mod:`molgen.featurize`) to ``mu`` and ``logvar`` of a
Gaussian posterior; the decoder (:mod:`molgen.models.graph_decoder`) generates a graph atom by
atom from ``z`` and can only produce molecules that RDKit sanitises. The method surface follows
PyG's ``VGAE``: ``encode_graphs`` / ``reparametrize`` / ``decode_graphs`` / ``kl_loss`` /
``recon_loss``; the chemist's surface takes and returns SMILES: ``encode``, ``decode``, ``sample``,
``interpolate``, ``neighbours``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GINEConv, global_add_pool, global_mean_pool
from torch_geometric.utils import scatter

from molgen.errors import InputError
from molgen.featurize import (
    ATOM_VALENCE,
    ATOM_VOCAB,
    BOND_ORDERS,
    collate_arrays,
    dense_to_smiles,
    featurize_smiles,
    mol_to_graph,
)
from molgen.models.graph_decoder import MAX_REM, GraphDecoder, dense_targets


@dataclass
class GraphVAEConfig:
    """Sizes of a GraphVAE; the only constructor argument, saved as ``config.json``."""

    latent: int = 56
    hidden: int = 256
    enc_layers: int = 5
    dec_hidden: int = 384
    dec_layers: int = 2
    window: int = 12
    max_atoms: int = 38
    dropout: float = 0.0
    atom_vocab: list = field(default_factory=lambda: [list(t) for t in ATOM_VOCAB])
    atom_valence: list = field(default_factory=lambda: list(ATOM_VALENCE))
    # set by GraphVAE.fit_prior: the weights then hold the fitted Gaussian (mixture) that sample() draws from
    fitted_prior: bool = False
    # Gaussians in the fitted prior (1: one full-covariance Gaussian)
    prior_components: int = 1
    # generation closes no ring of more atoms (0 = no limit); MOSES molecules have rings of 3-7 atoms
    # (its filter would allow 8; none of 100,000 training molecules has one)
    max_ring: int = 7
    # generation makes no bridged ring system, fuses no 3- or 4-membered ring and puts no double or
    # triple bond in one (0.8 % of MOSES has one of these)
    ring_rules: bool = True


_FAST_PATH_CHARS = 500  # SMILES up to this length take featurize_smiles; longer ones the checked path

class _BondTableGINEConv(GINEConv):
    """:class:`~torch_geometric.nn.GINEConv` given its edge term ready-made: ``lin`` of each edge's
    bond embedding, which :meth:`GINEBlock.forward` computes once per bond type and gathers."""

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return (x_j + edge_attr).relu()


class GINEBlock(nn.Module):
    """Residual GINE layer (Hu et al. 2020): ``h + dropout(gelu(norm(conv(h, e))))``."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        mlp = nn.Sequential(nn.Linear(hidden, hidden * 2), nn.GELU(), nn.Linear(hidden * 2, hidden))
        self.conv = _BondTableGINEConv(mlp, train_eps=True, edge_dim=hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, bond_rows: Tensor, bond_type: Tensor) -> Tensor:
        """GINEConv's edge term ``lin(bond embedding)`` for the 3 bond types, then gathered per edge:
        the same sums as ``lin`` on every edge's embedding, with a third fewer multiplications in the
        encoder (edges outnumber atoms two to one). Shapes: h (A, H), bond_rows (3, H), bond_type (2E,)."""
        e = self.conv.lin(bond_rows)[bond_type]
        return h + self.drop(F.gelu(self.norm(self.conv(h, edge_index, e))))


#: how :meth:`GraphVAE.embed` turns a molecule into one vector
POOLINGS = ("mu", "layers")


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")


class GraphEncoder(nn.Module):
    """Atom type + free valence embeddings -> GINE blocks -> sum & mean readout -> (mu, logvar)."""

    def __init__(self, cfg: GraphVAEConfig):
        super().__init__()
        n_types = len(cfg.atom_vocab)
        self.register_buffer("valence", torch.tensor(cfg.atom_valence), persistent=False)
        self.atom_emb = nn.Embedding(n_types, cfg.hidden)
        self.free_emb = nn.Embedding(MAX_REM + 1, cfg.hidden)
        self.bond_emb = nn.Embedding(len(BOND_ORDERS), cfg.hidden)
        self.blocks = nn.ModuleList(GINEBlock(cfg.hidden, cfg.dropout) for _ in range(cfg.enc_layers))
        self.readout = nn.Sequential(nn.Linear(cfg.hidden * 2, cfg.hidden), nn.GELU())
        self.mu = nn.Linear(cfg.hidden, cfg.latent)
        self.logvar = nn.Linear(cfg.hidden, cfg.latent)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, n_graphs: int):
        """Shapes: x (A,), edge_index (2, 2E), edge_attr (2E,), batch (A,) -> mu, logvar (B, L)."""
        *_, h = self._states(x, edge_index, edge_attr)
        g = self.readout(_pool(h, batch, n_graphs))
        return self.mu(g), self.logvar(g).clamp(-10, 10)

    def pools(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, n_graphs: int) -> list[Tensor]:
        """Per molecule, ``[sum / 8, mean]`` of the atom states after the input embedding and after
        each GINE block (the last is the readout's input). Shapes: -> enc_layers + 1 of (B, 2 * hidden)."""
        return [_pool(h, batch, n_graphs) for h in self._states(x, edge_index, edge_attr)]

    def _states(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Iterator[Tensor]:
        """The atom states after the input embedding, then after each GINE block. Shapes: -> (A, hidden) each."""
        order = (edge_attr + 1).to(torch.long)
        bonded = scatter(order, edge_index[0], 0, dim_size=len(x), reduce="sum")
        free = (self.valence[x] - bonded).clamp(0, MAX_REM)  # implicit hydrogens, roughly
        h = self.atom_emb(x) + self.free_emb(free)
        yield h
        for block in self.blocks:
            h = block(h, edge_index, self.bond_emb.weight, edge_attr)
            yield h


def _pool(h: Tensor, batch: Tensor, n_graphs: int) -> Tensor:
    """``[sum / 8, mean]`` of atom states per molecule. Shapes: (A, H) -> (B, 2H)."""
    return torch.cat([global_add_pool(h, batch, n_graphs) / 8.0, global_mean_pool(h, batch, n_graphs)], -1)


class GraphVAE(nn.Module):
    """Graph variational autoencoder whose decoder only produces valid molecules.

    Args:
        config: a :class:`GraphVAEConfig`.
    """

    config_class = GraphVAEConfig
    model_type = "graph_vae"

    def __init__(self, config: GraphVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = GraphEncoder(config)
        self.decoder = GraphDecoder(
            len(config.atom_vocab), config.atom_valence, config.latent, config.dec_hidden,
            config.dec_layers, config.window, config.max_atoms, config.dropout,
        )  # fmt: skip
        self._vocab = [(e, int(q)) for e, q in config.atom_vocab]
        if config.fitted_prior:
            self._prior_buffers()
        self.register_load_state_dict_pre_hook(_single_gaussian_prior_as_mixture)

    def _prior_buffers(self) -> None:
        K, L = self.config.prior_components, self.config.latent
        self.register_buffer("prior_weights", torch.full((K,), 1.0 / K))  # (K,) mixture weights
        self.register_buffer("prior_loc", torch.zeros(K, L))  # (K, L) means
        self.register_buffer("prior_scale_tril", torch.eye(L).repeat(K, 1, 1))  # (K, L, L) Cholesky factors

    @classmethod
    def from_pretrained(cls, name_or_dir: str = "graph-vae-moses", device: str = "auto") -> GraphVAE:
        """Load a shipped name (default ``graph-vae-moses``) or a checkpoint folder, in eval mode."""
        from molgen.models.hub import from_pretrained

        return from_pretrained(name_or_dir, device=device, model_type="graph_vae")

    def save_pretrained(self, directory, provenance: dict | None = None, card: str | None = None):
        """Write ``config.json`` + ``model.safetensors`` (+ card) to ``directory``."""
        from molgen.models.hub import save_pretrained

        return save_pretrained(self, directory, provenance, card)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- VGAE-style surface on graphs ------------------------------------------------------------

    def encode_graphs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Posterior parameters of a PyG batch. Shapes: -> mu, logvar (B, latent)."""
        return self.encoder(batch.x, batch.edge_index, batch.edge_attr, batch.batch, len(batch.ptr) - 1)

    def reparametrize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """A sample ``mu + sigma * eps`` in training, ``mu`` in eval mode. Shapes: (B, L) -> (B, L)."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    @staticmethod
    def kl_loss(mu: Tensor, logvar: Tensor, free_bits: float = 0.0) -> Tensor:
        """KL(q(z|x) || N(0, I)) per molecule; with free bits, each dimension's batch-mean KL
        below ``free_bits`` nats is not penalised (Kingma et al. 2016). Shapes: (B, L) -> (B,)."""
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())  # (B, L)
        if free_bits > 0:
            kl = torch.where(kl.mean(0, keepdim=True) < free_bits, kl.detach() * 0, kl)
        return kl.sum(-1)

    def targets(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder targets of a batch. Shapes: -> types (B, N), band (B, N, W), n_atoms (B,)."""
        types, band, n_atoms = dense_targets(
            batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.ptr, self.config.window
        )
        types = types.masked_fill(types < 0, self.decoder.STOP)
        return types, band, n_atoms

    def recon_loss(self, z: Tensor, batch: Batch) -> Tensor:
        """Negative log-likelihood of each graph of ``batch`` given ``z``. Shapes: z (B, L) -> (B,)."""
        return self.decoder(z, *self.targets(batch))

    def decode_graphs(self, z: Tensor, temperature: float = 0.0, generator=None, max_ring: int | None = None,
                      ring_rules: bool | None = None, prefix: tuple[Tensor, Tensor] | None = None):  # fmt: skip
        """Dense graphs from latents (greedy at temperature 0): the model's graph-level ``generate``.
        See ``GraphDecoder.generate``; ``None`` keeps ``config.max_ring`` / ``config.ring_rules``;
        ``prefix`` (from :meth:`prefix_graphs`) fixes each row's first atoms and bonds."""
        max_ring, ring_rules = self._ring_options(max_ring, ring_rules)
        return self.decoder.generate(z, temperature, generator, max_ring=max_ring, ring_rules=ring_rules, prefix=prefix)

    generate = decode_graphs

    def prefix_graphs(self, smiles: str | list[str], n: int | None = None) -> tuple[Tensor, Tensor]:
        """Molecules (e.g. scaffolds) as decoding prefixes: their atoms and bonds in decoding order.

        A decode that starts from a prefix keeps its atoms and bonds and grows the rest. One
        SMILES with ``n`` repeats it for ``n`` rows; shorter prefixes are padded with -1 (free).

        Shapes:
            -> types (B, P), band (B, P, W) for :meth:`decode_graphs`'s ``prefix``.
        """
        smiles = [smiles] if isinstance(smiles, str) else list(smiles)
        batch = self._graphs(smiles).to(self.device)
        types, band, n_atoms = self.targets(batch)
        P = int(n_atoms.max())
        keep = torch.arange(P, device=self.device)[None] < n_atoms[:, None]  # (B, P)
        types = torch.where(keep, types[:, :P], -1)
        band = torch.where(keep[..., None], band[:, :P], -1)
        if n is not None and len(smiles) == 1:
            types, band = types.expand(n, -1), band.expand(n, -1, -1)
        return types, band

    def scaffold_graphs(self, scaffold: str, n: int, max_ring: int | None = None,
                        ring_rules: bool | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """A scaffold as the prefix every one of ``n`` decodes starts from (:meth:`prefix_graphs`), checked.

        Its ``[*]`` attachment points are dropped: the decoder adds atoms after the scaffold's, and a
        new atom bonds only to the ``window`` atoms before it, so the scaffold grows wherever one of its
        last ``window`` atoms in canonical BFS order has valence to spare, not only at the ``[*]``
        (a scaffold of at most ``window`` atoms may grow anywhere). Every decode keeps the scaffold's
        atoms and bonds, so every valid molecule contains it.

        Raises:
            InputError: a scaffold that does not parse, or that this decoder can never produce: an atom
                outside its vocabulary, more than ``max_atoms`` atoms, a bond spanning more than
                ``window`` atoms, or a ring its ring rules forbid.
        """
        from rdkit import Chem

        from molgen.models.scaffold import scaffold_core

        core = Chem.MolToSmiles(scaffold_core(scaffold))
        max_ring, ring_rules = self._ring_options(max_ring, ring_rules)
        try:
            blocked = bool(self.blocked(core, max_ring, ring_rules))
        except InputError as err:
            raise InputError(f"scaffold {scaffold!r}: {str(err).removeprefix('row 0: ')}") from None
        if blocked:
            raise InputError(
                f"scaffold {scaffold!r} cannot be decoded by this graph-VAE: more than {self.config.max_atoms} atoms, "
                f"a bond spanning more than {self.config.window} atoms in BFS order, or a ring its ring rules forbid "
                f"(max_ring {max_ring}, ring_rules {ring_rules}); try --no-ring-rules / --max-ring 0, or the SMILES GPT"
            )
        return self.prefix_graphs(core, n=n)

    def _ring_options(self, max_ring: int | None, ring_rules: bool | None) -> tuple[int, bool]:
        """The decoder's ring rules: the arguments, or the config's where ``None``; checked."""
        max_ring = self.config.max_ring if max_ring is None else max_ring
        ring_rules = self.config.ring_rules if ring_rules is None else ring_rules
        if max_ring < 0 or 0 < max_ring < 3:
            raise InputError(f"max_ring must be 0 (no limit) or at least 3 atoms, not {max_ring}")
        return max_ring, bool(ring_rules)

    def forward(self, batch: Batch, beta: float = 1.0, free_bits: float = 0.0) -> dict[str, Tensor]:
        """Training losses of a batch: ``loss = recon + beta * kl`` (means over molecules)."""
        mu, logvar = self.encode_graphs(batch)
        z = self.reparametrize(mu, logvar)
        recon = self.recon_loss(z, batch).mean()
        kl_fb = self.kl_loss(mu, logvar, free_bits).mean()
        kl = self.kl_loss(mu, logvar).mean()
        return {"loss": recon + beta * kl_fb, "recon": recon, "kl": kl}

    # -- the chemist's surface -------------------------------------------------------------------

    @staticmethod
    def _graph_list(smiles: list[str], offset: int = 0) -> list:
        graphs = []
        for row, s in enumerate(smiles):
            try:
                graphs.append(mol_to_graph(s))
            except InputError as err:
                raise InputError(f"row {offset + row}: {err}") from None
        return graphs

    def _graphs(self, smiles: list[str]) -> Batch:
        return Batch.from_data_list(self._graph_list(smiles)).to(self.device)

    @torch.no_grad()
    def encode(self, smiles: str | list[str], batch_size: int = 512) -> Tensor:
        """Posterior means of molecules. Shapes: n SMILES -> (n, latent) (a single string -> (latent,))."""
        single = isinstance(smiles, str)
        items = [smiles] if single else list(smiles)
        self.eval()
        mus = [
            self.encode_graphs(self._graphs(items[i : i + batch_size]))[0]
            for i in range(0, len(items), batch_size)
        ]
        z = torch.cat(mus) if mus else torch.zeros(0, self.config.latent, device=self.device)
        return z[0] if single else z

    @property
    def embed_dim(self) -> int:
        """Width of :meth:`embed`'s vectors (the default ``pooling="mu"``): the latent size."""
        return self.config.latent

    def embed_width(self, pooling: str = "mu") -> int:
        """Width of :meth:`embed`'s vectors under ``pooling``."""
        check_pooling(pooling)
        return self.config.latent if pooling == "mu" else 2 * self.config.hidden * (self.config.enc_layers + 1)

    def embed(self, smiles, batch_size: int = 512, errors: str = "nan", grad: bool = False,
              pooling: str = "mu") -> Tensor:  # fmt: skip
        """Vectors for molecules: the posterior means (what :meth:`encode` gives), the input of a property head.

        Args:
            smiles: SMILES strings (or RDKit Mols; one string counts as a list of one).
            pooling: ``"mu"``, the posterior mean (``latent`` wide); ``"layers"``, the sum and the
                mean of the atom states after the input embedding and after every GINE block,
                concatenated (``2 * hidden * (enc_layers + 1)`` wide): every radius of the atoms'
                neighbourhoods, before the readout squeezes them for reconstruction. On
                ``solubility`` (scaffold split, GP head) ``"layers"`` predicts better at every
                training size (``molgen experiment transfer``; docs/transfer.md).
            errors: ``"nan"``: a molecule that does not parse or has an atom outside the model's atom
                vocabulary (:data:`~molgen.featurize.ATOM_VOCAB`) is a row of NaN, with one warning
                naming the rows; ``"raise"``: an :class:`~molgen.errors.InputError` for the first.
            grad: keep gradients and the current train/eval mode (fine-tuning through the
                encoder); by default eval mode under ``torch.no_grad()``, deterministic.

        Shapes:
            n molecules -> (n, latent) float32.
        """
        from molgen.models.heads import check_errors, embedding, report_failures

        check_errors(errors)
        width = self.embed_width(pooling)
        items = [smiles] if isinstance(smiles, str) else list(smiles)
        # ordinary SMILES through the flat-array fast path (the same graphs, ~6x faster); Mols, long
        # strings (they meet the size limits of molgen.chem there) and rows it skips go one by one,
        # which also says why a row cannot be read
        fast = [r for r, s in enumerate(items) if isinstance(s, str) and len(s) <= _FAST_PATH_CHARS]
        arrays = featurize_smiles([items[r] for r in fast], n_jobs=1, reorder=False)
        fast_rows = [fast[int(i)] for i in arrays.index]
        done = set(fast_rows)
        slow, failed = {}, {}
        for row, s in enumerate(items):
            if row in done:
                continue
            try:
                slow[row] = mol_to_graph(s)
            except InputError as err:
                failed[row] = str(err)
        report_failures(failed, errors, len(items))
        out = torch.full((len(items), width), float("nan"), device=self.device)

        def vectors(batch: Batch) -> Tensor:
            batch = batch.to(self.device)
            if pooling == "mu":
                return self.encode_graphs(batch)[0]
            return torch.cat(self.encoder.pools(batch.x, batch.edge_index, batch.edge_attr, batch.batch,
                                                len(batch.ptr) - 1), -1)  # fmt: skip

        def put(out: Tensor, rows: list[int], batch: Batch) -> Tensor:
            return out.index_put((torch.as_tensor(rows, device=self.device),), vectors(batch).float())

        rows_slow = sorted(slow)
        with embedding(self, grad):
            for i in range(0, len(fast_rows), batch_size):  # straight from the flat arrays, no Data per molecule
                ids = np.arange(i, min(i + batch_size, len(fast_rows)))
                out = put(out, fast_rows[i : i + batch_size], collate_arrays(arrays, ids))
            for i in range(0, len(rows_slow), batch_size):
                part = rows_slow[i : i + batch_size]
                out = put(out, part, Batch.from_data_list([slow[r] for r in part]))
        return out

    @torch.no_grad()
    def decode(
        self, z: Tensor, temperature: float = 0.0, seed: int | None = None, batch_size: int = 1024
    ) -> list[str]:
        """Canonical SMILES decoded from latents (greedy at temperature 0). Shapes: (n, L) or (L,)."""
        self.eval()
        z = z.reshape(-1, self.config.latent).to(self.device)
        gen = _generator(seed, self.device)
        out: list[str] = []
        for i in range(0, len(z), batch_size):
            types, band, n = self.decode_graphs(z[i : i + batch_size], temperature, gen)
            out.extend(self.dense_to_smiles(types, band, n))
        return out

    def dense_to_smiles(self, types: Tensor, band: Tensor, n_atoms: Tensor) -> list[str | None]:
        """Canonical SMILES of decoder output in this model's atom vocabulary
        (:func:`molgen.featurize.dense_to_smiles`)."""
        return dense_to_smiles(types.cpu().numpy(), band.cpu().numpy(), n_atoms.cpu().numpy(), self._vocab)

    @torch.no_grad()
    def blocked(self, smiles: str | list[str], max_ring: int | None = None, ring_rules: bool | None = None,
                batch_size: int = 512) -> np.ndarray:  # fmt: skip
        """``True`` for each molecule the decoder can never produce: it has more than ``max_atoms``
        atoms, a bond that spans more than ``window`` atoms in canonical BFS order, or a ring the
        ring rules forbid (``None``: the config's ``max_ring`` / ``ring_rules``). Such a molecule
        is never sampled, decoded or reconstructed; before fine-tuning on a set of them, turn the
        rule off (``model.config.ring_rules = False``). Bad SMILES raise ``InputError`` naming the row.

        Shapes:
            n SMILES -> (n,) bool (a single string -> a 0-d array).
        """
        single = isinstance(smiles, str)
        items = [smiles] if single else list(smiles)
        max_ring, ring_rules = self._ring_options(max_ring, ring_rules)
        N, W = self.config.max_atoms, self.config.window
        out = np.zeros(len(items), dtype=bool)
        for start in range(0, len(items), batch_size):
            graphs = self._graph_list(items[start : start + batch_size], start)
            walk = []
            for row, g in enumerate(graphs, start):
                src, dst = g.edge_index
                span = int((src - dst).max()) if g.edge_index.numel() else 0
                if g.num_nodes > N or span > W:
                    out[row] = True
                else:
                    walk.append((row, g))
            if walk:
                types, band, _ = self.targets(Batch.from_data_list([g for _, g in walk]).to(self.device))
                pad = N + 1 - types.shape[1]
                types = F.pad(types, (0, pad), value=self.decoder.STOP)
                band = F.pad(band, (0, 0, 0, pad))
                out[[row for row, _ in walk]] = self.decoder.blocked(types, band, max_ring, ring_rules).cpu().numpy()
        return out[0] if single else out

    @torch.no_grad()
    def fit_prior(self, smiles: list[str], components: int = 1, seed: int = 0, batch_size: int = 512) -> dict:
        """Fit the distribution :func:`molgen.sample.sample` draws latents from to where molecules actually encode.

        A VAE's KL term pulls the aggregated posterior q(z) = mean_i N(mu_i, sigma_i^2) towards
        N(0, I) but never all the way; decoding draws from where molecules do encode keeps the
        samples in the region the decoder was trained on (ex-post density estimation, Ghosh et al.,
        ICLR 2020). With ``components`` 1 the fit is a full-covariance Gaussian with the mean of the
        ``mu_i`` and the covariance of the ``mu_i`` plus the mean ``sigma_i^2``; with more, a
        full-covariance Gaussian mixture fitted to the ``mu_i`` by EM (scikit-learn's
        ``GaussianMixture``, seeded by ``seed``), which also follows the clusters of q(z). It is
        stored in the weights (``prior_weights``, ``prior_loc``, ``prior_scale_tril``) and
        ``config.fitted_prior`` is set, so ``save_pretrained`` ships it. Returns the fit's summary
        for provenance.
        """
        L = self.config.latent
        if not isinstance(components, int) or components < 1:
            raise InputError(f"components must be a positive integer, not {components!r}")
        if len(smiles) < 2 * L * components:
            raise InputError(f"fitting a {L}-dimensional prior of {components} Gaussian(s) needs at least {2 * L * components} molecules, got {len(smiles)}")
        self.eval()
        mus, variances = [], []
        for i in range(0, len(smiles), batch_size):
            mu, logvar = self.encode_graphs(self._graphs(smiles[i : i + batch_size]))
            mus.append(mu.double())
            variances.append(logvar.double().exp())
        mu, var = torch.cat(mus), torch.cat(variances)
        info: dict = {"n_molecules": len(mu), "components": components}
        if components == 1:
            weights, loc, cov = torch.ones(1), mu.mean(0, keepdim=True), (torch.cov(mu.T) + torch.diag(var.mean(0)))[None]
        else:
            from sklearn.mixture import GaussianMixture

            points = mu.cpu().numpy()
            gm = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, max_iter=300, random_state=seed)
            gm.fit(points)
            weights, loc, cov = (torch.from_numpy(a) for a in (gm.weights_, gm.means_, gm.covariances_))
            info.update(seed=seed, converged=bool(gm.converged_), mean_log_likelihood=round(float(gm.score(points)), 3))
        self.config.fitted_prior, self.config.prior_components = True, components
        self._prior_buffers()
        self.to(mu.device)
        self.prior_weights.copy_(weights)
        self.prior_loc.copy_(loc)
        self.prior_scale_tril.copy_(torch.linalg.cholesky(cov))
        variance = (weights[:, None] * (cov.diagonal(dim1=1, dim2=2) + loc**2)).sum(0) - ((weights[:, None] * loc).sum(0)) ** 2
        info.update(mean_norm=round(float(mu.mean(0).norm()), 4), variance_min=round(float(variance.min()), 4),
                    variance_max=round(float(variance.max()), 4))  # fmt: skip
        return info

    def draw_latents(self, m: int, gen: torch.Generator | None, standard: bool = False) -> Tensor:
        """``m`` latent points from the fitted prior (N(0, I) with ``standard`` or without a fitted one).

        Shapes: -> (m, L).
        """
        z = torch.randn(m, self.config.latent, generator=gen, device=self.device)
        if standard or not self.config.fitted_prior:
            return z
        if self.config.prior_components == 1:  # no component draw: the stream stays that of one Gaussian
            return self.prior_loc[0] + z @ self.prior_scale_tril[0].T
        comp = torch.multinomial(self.prior_weights, m, replacement=True, generator=gen)
        return self.prior_loc[comp] + (self.prior_scale_tril[comp] @ z.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def interpolate(self, a: str, b: str, steps: int = 8) -> pd.DataFrame:
        """Greedy decodes along the straight line between two molecules' latent means.

        The first and last rows are the decodes of ``a``'s and ``b``'s own latent means, their
        reconstructions, which need not be ``a`` and ``b`` (the shipped model reconstructs about 40 %
        of MOSES test exactly, and neither aspirin nor paracetamol). So those two rows also carry
        ``input`` (the SMILES given) and ``reconstructed`` (whether the decode is that molecule,
        stereo aside: graphs carry none); the rows between have ``input`` and ``reconstructed``
        missing (``NaN`` / ``<NA>``).

        Returns:
            DataFrame with ``smiles``, ``alpha`` (0 at ``a``, 1 at ``b``), ``valid``, ``input``,
            ``reconstructed``; ``steps`` rows.
        """
        from molgen.chem import canonicalize

        if steps < 2:
            raise InputError(f"steps must be at least 2 (the two endpoints), not {steps!r}")
        za, zb = self.encode([a, b])
        alpha = torch.linspace(0, 1, steps, device=self.device).unsqueeze(1)
        smiles = self.decode((1 - alpha) * za + alpha * zb)
        inputs: list[str | None] = [None] * steps
        inputs[0], inputs[-1] = a, b
        same = pd.array([pd.NA] * steps, dtype="boolean")
        same[0], same[-1] = (smiles[i] is not None and smiles[i] == canonicalize(x, isomeric=False)
                             for i, x in ((0, a), (-1, b)))  # fmt: skip
        return pd.DataFrame({"smiles": smiles, "alpha": alpha.squeeze(1).cpu().numpy(),
                             "valid": [s is not None for s in smiles], "input": inputs, "reconstructed": same})  # fmt: skip

    @torch.no_grad()
    def neighbours(self, smiles: str, radius: float = 1.0, n: int = 10, seed: int = 0, grow: float = 1.5,
                   max_draws: int | None = None) -> pd.DataFrame:  # fmt: skip
        """``n`` distinct molecules decoded from points around a molecule's latent mean.

        Points are drawn uniformly on the sphere of ``radius`` around the mean, ``max(4 n, 32)`` at a
        time, and decoded greedily. Near a molecule many points decode to the same graph, so when a
        round of draws brings no molecule not seen before the radius grows by the factor ``grow``
        and the next round draws there; it stops once ``n`` distinct molecules are found or after
        ``max_draws`` points (``None``: ``max(1000, 100 n)``). The molecule itself (stereo aside)
        is not its own neighbour and is left out; its reconstruction, when it differs, is kept.

        Returns:
            DataFrame of at most ``n`` rows in the order found (nearest radius first): ``smiles``,
            ``radius`` (the distance of the point that first decoded to it), ``count`` (how many
            of the points drawn decoded to it), ``valid``. ``df.attrs`` holds ``draws`` and
            ``max_radius`` (the largest radius drawn at), and ``note`` when fewer than ``n`` were found.
        """
        from molgen.chem import canonicalize

        if n < 1:
            raise InputError(f"n must be a positive integer, not {n!r}")
        if radius <= 0 or grow <= 1:
            raise InputError(f"radius must be > 0 and grow > 1, not radius={radius!r}, grow={grow!r}")
        budget = max(1000, 100 * n) if max_draws is None else max_draws
        z0, itself = self.encode(smiles), canonicalize(smiles, isomeric=False)
        gen = _generator(seed, self.device)
        found: dict[str, list] = {}  # smiles -> [radius first seen, count]
        per_round, r, draws, invalid = max(4 * n, 32), float(radius), 0, 0
        last_r = r
        while len(found) < n and draws < budget:
            m = min(per_round, budget - draws)
            d = torch.randn(m, self.config.latent, generator=gen, device=self.device)
            before = len(found)
            for s in self.decode(z0 + d / d.norm(dim=1, keepdim=True) * r):
                if s is None:
                    invalid += 1
                elif s != itself:
                    found.setdefault(s, [r, 0])[1] += 1
            draws, last_r = draws + m, r
            if len(found) == before:
                r *= grow
        rows = list(found.items())[:n]
        df = pd.DataFrame({"smiles": [s for s, _ in rows], "radius": [v[0] for _, v in rows],
                           "count": [v[1] for _, v in rows], "valid": True})  # fmt: skip
        df.attrs.update(draws=draws, max_radius=last_r, invalid_draws=invalid)
        if len(df) < n:
            df.attrs["note"] = (f"found {len(df)} distinct molecules of the {n} asked for in {draws} draws "
                                f"at radius {radius:g} to {last_r:.3g}; raise max_draws or grow for more")  # fmt: skip
        return df


PRIOR_BUFFERS = ("prior_weights", "prior_loc", "prior_scale_tril")


def _single_gaussian_prior_as_mixture(module, state_dict, prefix, *args) -> None:
    """Load-time upgrade: checkpoints of molgen before mixtures hold one Gaussian as (L,) + (L, L)."""
    loc = state_dict.get(prefix + "prior_loc")
    if loc is not None and loc.dim() == 1:
        state_dict[prefix + "prior_loc"] = loc[None]
        state_dict[prefix + "prior_scale_tril"] = state_dict[prefix + "prior_scale_tril"][None]
        state_dict.setdefault(prefix + "prior_weights", loc.new_ones(1))


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _register() -> None:
    from molgen.models.hub import register_model

    register_model("graph_vae", GraphVAE)


_register()
