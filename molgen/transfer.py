"""Transfer to a chemist's small data set: frozen pretrained features and property models on them.

A pretrained model read as a feature extractor turns each molecule into a vector
(:func:`embed`): the graph-VAE's posterior mean, or the SMILES GPT's pooled hidden state. A
small head on those vectors (:class:`PropertyModel`: ridge regression, an MLP, or a Gaussian
process that also says how sure it is) learns a measured property from tens to hundreds of
molecules; ``features="ecfp"`` gives the classic baseline on the same footing. A fitted
:class:`PropertyModel` is a plain ``smiles -> scores`` call, so it can score candidates in a
pipeline or in guided generation, and it saves as safetensors + JSON (no pickle) that names the
pretrained weights it was fitted on by their sha256.

:class:`Embedder` is the scikit-learn face of :func:`embed` (``fit``/``transform``, cloned and
pickled by name, never by weights), to sit in a ``Pipeline`` or ``GridSearchCV`` next to ECFP.

Bad input is counted, never silently dropped and never a traceback from deep inside: a
molecule a model cannot encode gets a NaN row from :func:`embed`; :meth:`PropertyModel.fit`
skips rows without a finite target or without features, averages duplicate molecules, and
reports each count in ``model.report_``.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem

from molgen import chem
from molgen.errors import ConfigError, InputError
from molgen.files import atomic_path, write_json

__all__ = ["FEATURES", "HEADS", "embed", "feature_id", "Embedder", "PropertyModel"]

#: feature extractors known by name: the shipped models, and ECFP4 (2,048 bits) as the baseline.
#: ``"<graph-vae>:layers"`` reads the graph-VAE's atom states pooled after every layer instead of its
#: posterior mean (:meth:`molgen.models.graph_vae.GraphVAE.embed`, ``pooling="layers"``).
FEATURES = ("graph-vae-moses", "graph-vae-moses:layers", "smiles-gpt-moses", "smiles-gpt-moses-small", "ecfp")
_POOLED = ":layers"  # suffix of a graph-VAE name or folder: embed with pooling="layers"
#: property heads of :class:`PropertyModel`
HEADS = ("ridge", "mlp", "gp")
_FORMAT = "molgen.PropertyModel/1"

_MODELS: dict[str, object] = {}  # loaded feature models by name or folder, shared in this process
_IDS: dict[str, str] = {}  # name or folder -> weights sha256
_CACHE: dict[tuple[str, str], np.ndarray] = {}  # (feature id, canonical SMILES) -> vector


def _pooling(model) -> tuple[object, str | None]:
    """``("graph-vae-moses", "layers")`` for ``"graph-vae-moses:layers"``; other models as they are, no pooling."""
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(_POOLED):
        return str(model)[: -len(_POOLED)], _POOLED[1:]
    return model, None


def _load(model):
    """A feature model object from a name, folder or object (loaded once per process)."""
    model, _ = _pooling(model)
    if not isinstance(model, (str, os.PathLike)):
        return model
    key = str(model)
    if key not in _MODELS:
        from molgen.models import load_pretrained

        _MODELS[key] = load_pretrained(key, device="cpu")
    return _MODELS[key]


def feature_id(model) -> str:
    """What identifies a feature extractor: ``"ecfp"``, or the sha256 of the model's weights."""
    from molgen.models import state_sha256

    if isinstance(model, str) and model == "ecfp":
        return "ecfp"
    key = str(model) if isinstance(model, (str, os.PathLike)) else id(model)
    if isinstance(key, str) and key in _IDS:  # a name's weights are read once per process
        return _IDS[key]
    out = state_sha256(_load(model)) + (_POOLED if _pooling(model)[1] else "")
    if isinstance(key, str):
        _IDS[key] = out
    return out


def embed(model, smiles: Sequence[str], batch_size: int = 256, cache: bool = True, workers="auto") -> np.ndarray:
    """Feature vectors of molecules: one float32 row each, NaN where the model cannot read one.

    Args:
        model: ``"graph-vae-moses"`` (posterior mean), ``"graph-vae-moses:layers"`` (atom states
            pooled after every encoder layer; a checkpoint folder + ``:layers`` too), ``"smiles-gpt-moses"`` /
            ``"smiles-gpt-moses-small"`` (pooled hidden state), a checkpoint folder or model
            object with ``embed()``, or ``"ecfp"`` (Morgan radius 2, 2,048 bits, as 0/1).
        smiles: the molecules; invalid SMILES give NaN rows.
        cache: reuse vectors computed before in this process (keyed by canonical SMILES and the
            model's weights sha256).
        workers: processes that share the molecules on a CPU (``"auto"``: one per PyTorch thread,
            each on one thread, with at least 1,000 molecules each; 1: this process only); they
            read and embed their share in parallel, the RDKit work included, which one process
            with several PyTorch threads would do on one core. Same vectors whatever the count.

    Shapes:
        -> (len(smiles), d).
    """
    import torch

    from molgen.parallel import resolve_workers, run_ordered

    if isinstance(smiles, str):  # list("CCO") would embed three atoms
        raise InputError("embed() takes a list of SMILES, not one string")
    smiles = list(smiles)
    key = feature_id(model)  # loads the model here, before any worker forks
    loaded = None if isinstance(model, str) and model == "ecfp" else _load(model)
    device = getattr(loaded, "device", torch.device("cpu"))
    n = resolve_workers(workers, device, max(1, len(smiles) // _PER_WORKER))
    bounds = np.linspace(0, len(smiles), n + 1).astype(int)
    parts = [smiles[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    canon: list[str | None] = []
    read = functools.partial(_embed_part, model, key, batch_size, cache)
    for part_canon, todo, vectors in run_ordered(read, parts, n, hint="Lower workers."):
        canon.extend(part_canon)
        for c, v in zip(todo, vectors, strict=True):
            _CACHE[(key, c)] = v
    dim = next((v.shape[0] for (k, _), v in _CACHE.items() if k == key), None)
    if dim is None:  # nothing could be read: the model's width from one known molecule
        dim = _compute(model, ["CCO"], 1).shape[1]
    out = np.full((len(smiles), dim), np.nan, dtype=np.float32)
    for i, c in enumerate(canon):
        if c is not None:
            out[i] = _CACHE[(key, c)]
    return out


_PER_WORKER = 1_000  # fewer molecules per process and forking costs more than it saves


def _embed_part(model, key: str, batch_size: int, cache: bool, smiles: list) -> tuple[list, list[str], np.ndarray]:
    """One share of :func:`embed`: canonical SMILES of each row, and the vectors of the new ones
    (in a forked worker, ``_CACHE`` is the parent's at the fork)."""
    canon = [chem.to_smiles(s) if isinstance(s, (str, Chem.Mol)) else None for s in smiles]  # RDKit Mols too
    todo = sorted({c for c in canon if c is not None and (not cache or (key, c) not in _CACHE)})
    return canon, todo, (_compute(model, todo, batch_size) if todo else np.zeros((0, 0), np.float32))


def _compute(model, smiles: list[str], batch_size: int) -> np.ndarray:
    if isinstance(model, str) and model == "ecfp":
        return chem.fps_to_numpy(chem.morgan_fps(smiles, 2, 2048), 2048).astype(np.float32)
    pooling = _pooling(model)[1]
    model = _load(model)
    if not hasattr(model, "embed"):
        raise InputError(f"{type(model).__name__} cannot embed molecules; use one of {', '.join(FEATURES)}")
    if pooling and not hasattr(model, "embed_width"):
        raise InputError(f"'{_POOLED}' reads a graph-VAE's layers; {type(model).__name__} has none to pool")
    with warnings.catch_warnings():  # the rows a model cannot read come back NaN and are counted by the caller
        warnings.simplefilter("ignore", UserWarning)
        vectors = model.embed(smiles, batch_size=batch_size, **({"pooling": pooling} if pooling else {}))
    vectors = vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else np.asarray(vectors)
    return vectors.astype(np.float32)


# --- scikit-learn ---------------------------------------------------------------------------------


def _sklearn_bases():
    from sklearn.base import BaseEstimator, TransformerMixin

    return BaseEstimator, TransformerMixin


class Embedder(*_sklearn_bases()):
    """A scikit-learn transformer: SMILES in, :func:`embed` vectors out.

    ``Embedder("graph-vae-moses")`` goes into a ``Pipeline`` before any regressor; it holds the
    model's *name*, so ``clone``, ``GridSearchCV`` and pickling never copy weights (the model is
    loaded once per process on first use).

    A molecule the model cannot read (an atom or token outside its vocabulary, a graph too large)
    is an :class:`~molgen.errors.InputError` naming the rows (``unreadable="raise"``, the default:
    a scikit-learn estimator downstream would only say "Input X contains NaN"), or a row of NaN
    (``unreadable="nan"``, for a pipeline with an imputer such as ``SimpleImputer``).
    """

    def __init__(self, model: str = "graph-vae-moses", batch_size: int = 256, unreadable: str = "raise"):
        self.model = model
        self.batch_size = batch_size
        self.unreadable = unreadable

    def fit(self, X, y=None):  # noqa: N803  (scikit-learn's argument names)
        if self.unreadable not in ("raise", "nan"):
            raise InputError(f"unreadable must be 'raise' or 'nan', not {self.unreadable!r}")
        return self

    def transform(self, X) -> np.ndarray:  # noqa: N803
        smiles = _smiles_list(X)
        out = embed(self.model, smiles, batch_size=self.batch_size)
        bad = np.flatnonzero(np.isnan(out).any(axis=1))
        if len(bad) and self.unreadable != "nan":
            shown = ", ".join(f"{i} ({smiles[i]!r})" for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise InputError(f"{self.model} cannot read {len(bad)} of {len(smiles)} molecules (rows {shown}): drop "
                             "them first, or use Embedder(..., unreadable='nan') with an imputer")  # fmt: skip
        return out


def _smiles_list(X) -> list:  # noqa: N803
    if isinstance(X, pd.DataFrame):
        if "smiles" not in X.columns:
            raise InputError(f"the table has no 'smiles' column (columns: {list(X.columns)})")
        return X["smiles"].tolist()
    if isinstance(X, str):
        return [X]
    arr = np.asarray(X, dtype=object)
    return arr.ravel().tolist()


# --- property models ------------------------------------------------------------------------------


@dataclass
class _Data:
    smiles: list[str]
    X: np.ndarray  # noqa: N815
    y: np.ndarray
    report: dict = field(default_factory=dict)


def _training_data(data, target: str | None, smiles_col: str, features, batch_size: int) -> _Data:
    """Rows with a finite target and readable features; duplicates averaged; every drop counted."""
    if isinstance(data, pd.DataFrame):
        if smiles_col not in data.columns:
            raise InputError(f"the table has no {smiles_col!r} column (columns: {list(data.columns)})")
        if target is None or target not in data.columns:
            raise InputError(f"target column {target!r} not found; columns: {list(data.columns)}")
        smiles, values = data[smiles_col].tolist(), data[target]
    else:
        smiles, values = data
        smiles, values = list(smiles), pd.Series(values)
    if len(smiles) != len(values):
        raise InputError(f"{len(smiles)} molecules but {len(values)} target values")
    y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    report = {"rows": len(smiles)}
    good = np.isfinite(y)
    report["no_finite_target"] = int((~good).sum())
    canon = [chem.canonicalize(s) if isinstance(s, str) else None for s in smiles]
    parsed = np.array([c is not None for c in canon])
    report["invalid_smiles"] = int((good & ~parsed).sum())
    keep = good & parsed
    table = pd.DataFrame({"smiles": np.array(canon, dtype=object)[keep], "y": y[keep]})
    grouped = table.groupby("smiles", sort=False)["y"]
    report["duplicates_averaged"] = int(len(table) - grouped.ngroups)
    table = grouped.mean().reset_index()
    X = embed(features, table["smiles"].tolist(), batch_size=batch_size)  # noqa: N806
    readable = ~np.isnan(X).any(axis=1)
    report["not_encodable"] = int((~readable).sum())
    table, X = table[readable], X[readable]  # noqa: N806
    report["used"] = len(table)
    if len(table) < 5:
        raise InputError(f"only {len(table)} usable molecules (of {report['rows']} rows: {report}); "
                         "a property model needs at least 5")
    return _Data(table["smiles"].tolist(), X, table["y"].to_numpy(dtype=np.float64), report)


class PropertyModel:
    """A property predictor on frozen pretrained features: ``fit`` on a small table, ``predict`` SMILES.

    Args:
        features: a name from :data:`FEATURES` (or a checkpoint folder) whose :func:`embed`
            vectors the head reads.
        head: ``"ridge"`` (ridge regression, the penalty chosen by leave-one-out; fast and hard to
            overfit), ``"mlp"`` (two hidden layers, early stopping on a validation split) or
            ``"gp"`` (a Gaussian process with an RBF + noise kernel, the only head with a ``std``).
        seed: the MLP's initialisation and split, the GP's optimiser restarts.

    ``predict(smiles)`` gives ``smiles``, ``mean`` and ``std`` (NaN for heads without one, and
    for molecules the features cannot read); ``model(smiles)`` gives the means as an array.
    """

    def __init__(self, features: str = "graph-vae-moses", head: str = "ridge", seed: int = 0, batch_size: int = 256):
        if head not in HEADS:
            raise InputError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        self.features, self.head, self.seed, self.batch_size = str(features), head, seed, batch_size
        self.target: str | None = None
        self.report_: dict = {}
        self._state: dict[str, np.ndarray] = {}
        self._meta: dict = {}

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, data, target: str | None = None, smiles_col: str = "smiles") -> PropertyModel:
        """Fit on a DataFrame (``target`` names the column) or a ``(smiles, values)`` pair."""
        d = _training_data(data, target, smiles_col, self.features, self.batch_size)
        self.target = target or "y"
        self.report_ = d.report
        mean, scale = d.X.mean(0), d.X.std(0)
        scale[scale < 1e-8] = 1.0
        Z = (d.X - mean) / scale  # noqa: N806
        self._state = {"x_mean": mean, "x_scale": scale}
        self._meta = {"feature_id": feature_id(self.features), "n_features": int(d.X.shape[1])}
        getattr(self, f"_fit_{self.head}")(Z, d.y)
        return self

    def _fit_ridge(self, Z, y) -> None:  # noqa: N803
        from sklearn.linear_model import RidgeCV

        ridge = RidgeCV(alphas=np.logspace(-3, 4, 22)).fit(Z, y)
        self._state.update(coef=ridge.coef_.astype(np.float64), intercept=np.array([ridge.intercept_]))
        self._meta["alpha"] = float(ridge.alpha_)

    def _fit_gp(self, Z, y) -> None:  # noqa: N803
        gp = self._gp(Z.shape[1], optimize=True).fit(Z, y)
        self._state.update(theta=gp.kernel_.theta, z_train=Z, y_train=y)
        self._gp_fitted = gp

    @staticmethod
    def _gp(dim: int, optimize: bool, theta=None):
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.sqrt(dim), (1e-2, 1e4)) + WhiteKernel(0.1, (1e-5, 1e1))
        if theta is not None:
            kernel.theta = theta
        return GaussianProcessRegressor(kernel=kernel, normalize_y=True, optimizer="fmin_l_bfgs_b" if optimize else None,
                                        n_restarts_optimizer=2 if optimize else 0, random_state=0)

    def _fit_mlp(self, Z, y) -> None:  # noqa: N803
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(y))
        n_val = max(2, len(y) // 6)
        val, train = order[:n_val], order[n_val:]
        y_mean, y_scale = float(y[train].mean()), float(y[train].std() or 1.0)
        net = self._mlp(Z.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        zt, yt = torch.as_tensor(Z, dtype=torch.float32), torch.as_tensor((y - y_mean) / y_scale, dtype=torch.float32)
        best, best_state, patience = float("inf"), None, 0
        for _epoch in range(500):
            net.train()
            for batch in np.array_split(rng.permutation(train), max(1, len(train) // 32)):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(zt[batch]).squeeze(-1), yt[batch])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val_loss = float(torch.nn.functional.mse_loss(net(zt[val]).squeeze(-1), yt[val]))
            if val_loss < best - 1e-4:
                best, patience = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                patience += 1
                if patience >= 30:  # early stopping on the validation split
                    break
        net.load_state_dict(best_state)
        self._state.update({f"mlp.{k}": v.numpy() for k, v in net.state_dict().items()})
        self._state.update(y_mean=np.array([y_mean]), y_scale=np.array([y_scale]))
        self._meta["epochs"] = _epoch + 1

    @staticmethod
    def _mlp(dim: int):
        import torch.nn as nn

        return nn.Sequential(nn.Linear(dim, 256), nn.GELU(), nn.Dropout(0.1), nn.Linear(256, 128), nn.GELU(),
                             nn.Dropout(0.1), nn.Linear(128, 1))

    # -- prediction ------------------------------------------------------------------------------

    def predict(self, smiles: Sequence[str]) -> pd.DataFrame:
        """``smiles``, ``mean``, ``std`` for each molecule (NaN where the features cannot read it)."""
        if not self._state:
            raise InputError("this PropertyModel is not fitted: call fit(...) or PropertyModel.load(dir)")
        smiles = _smiles_list(smiles) if not isinstance(smiles, list) else smiles
        smiles = [chem.to_smiles(s) or "" if isinstance(s, Chem.Mol) else s for s in smiles]  # a Mol: its SMILES
        X = embed(self.features, smiles, batch_size=self.batch_size)  # noqa: N806
        ok = ~np.isnan(X).any(axis=1)
        mean = np.full(len(smiles), np.nan)
        std = np.full(len(smiles), np.nan)
        if ok.any():
            Z = (X[ok] - self._state["x_mean"]) / self._state["x_scale"]  # noqa: N806
            mean[ok], std[ok] = getattr(self, f"_predict_{self.head}")(Z)
        return pd.DataFrame({"smiles": smiles, "mean": mean, "std": std})

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        """The predicted means: a plain ``smiles -> scores`` call for pipelines and objectives."""
        return self.predict(list(smiles))["mean"].to_numpy()

    def _predict_ridge(self, Z):  # noqa: N803
        return Z @ self._state["coef"] + self._state["intercept"][0], np.nan

    def _predict_gp(self, Z):  # noqa: N803
        gp = getattr(self, "_gp_fitted", None)
        if gp is None:  # loaded: the same kernel, refitted to the stored training set without optimising
            gp = self._gp(Z.shape[1], optimize=False, theta=self._state["theta"])
            gp.fit(self._state["z_train"], self._state["y_train"])
            self._gp_fitted = gp
        mean, std = gp.predict(Z, return_std=True)
        return mean, std

    def _predict_mlp(self, Z):  # noqa: N803
        import torch

        net = self._mlp(Z.shape[1])
        net.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in self._state.items() if k.startswith("mlp.")})
        net.eval()
        with torch.no_grad():
            out = net(torch.as_tensor(Z, dtype=torch.float32)).squeeze(-1).numpy()
        return out * self._state["y_scale"][0] + self._state["y_mean"][0], np.nan

    # -- files -----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` (no pickle) into ``directory``."""
        from safetensors.numpy import save_file

        if not self._state:
            raise InputError("nothing to save: this PropertyModel is not fitted")
        from molgen import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "weights.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self._state.items()}, str(tmp))
        write_json(directory / "config.json", {
            "format": _FORMAT, "molgen_version": __version__, "features": self.features, "head": self.head,
            "seed": self.seed, "target": self.target, "report": self.report_, **self._meta})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, check_features: bool = True) -> PropertyModel:
        """Read a saved model; refuses it when its feature model's weights are not the ones it was fitted on."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{directory} is not a saved PropertyModel ({err})") from None
        if meta.get("format") != _FORMAT:
            raise ConfigError(f"{directory}/config.json is not a {_FORMAT} file")
        model = cls(meta["features"], meta["head"], meta.get("seed", 0))
        model.target, model.report_ = meta.get("target"), meta.get("report", {})
        model._meta = {k: meta[k] for k in ("feature_id", "n_features", "alpha", "epochs") if k in meta}
        model._state = load_file(str(directory / "weights.safetensors"))
        if check_features and feature_id(model.features) != meta["feature_id"]:
            raise ConfigError(f"{directory} was fitted on other weights of {meta['features']!r} "
                              f"(sha256 {meta['feature_id'][:12]}...); load it beside those weights")
        return model
