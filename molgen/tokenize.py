"""Atom-level SMILES tokenizer with a JSON vocabulary.

A SMILES string is split by one regular expression (Schwaller et al., *ACS Cent. Sci.* 2019)
into bracket atoms (``[nH]``, ``[C@@H]``, ``[13CH3]``, ``[O-]``), two-letter elements (``Cl``,
``Br``), ring closures (``1`` .. ``9`` and ``%10`` .. ``%99``), bonds, branches and stereo marks.
Every character must belong to a token: a string the regex cannot cover entirely is an error,
never a silently shortened molecule.

A vocabulary may speak Kekulé SMILES (``kekule=True``, saved in ``vocab.json``): every SMILES is
then rewritten with explicit single and double ring bonds before it is split
(:func:`molgen.chem.kekule_smiles`, atom order kept), so a model trained on it never writes
aromatic atoms and never samples a ring that RDKit cannot kekulise.

The vocabulary is built from data. A SMILES with a token the vocabulary lacks raises
:class:`~molgen.errors.InputError` naming the token and the molecule; fine-tuning on new
chemistry extends the vocabulary on purpose with :meth:`SmilesTokenizer.extend` (and the model
with ``SmilesGPT.resize_vocab``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from molgen.errors import ConfigError, InputError
from molgen.files import atomic_path

__all__ = ["SmilesTokenizer", "tokenize", "BracketAtom", "parse_bracket", "PAD", "BOS", "EOS", "SPECIAL_TOKENS"]

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2 in every vocabulary

SMILES_REGEX = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])"
)
_FORMAT = "molgen.SmilesTokenizer/1"
# [isotope] symbol [chirality] [H count] [charge] [:map], OpenSMILES order
_BRACKET = re.compile(r"\[(\d*)([A-Za-z][a-z]?|\*)(@[A-Z]{2}\d*|@{1,2})?(H\d*)?([+-]\d*|[+-]+)?(?::(\d+))?\]")


class BracketAtom(NamedTuple):
    """The parts of a bracket atom token such as ``[13CH3+:1]``.

    ``symbol`` is as written (lowercase for an aromatic atom, ``*`` for a wildcard); ``hs`` the
    explicit hydrogen count; ``charge`` the formal charge; ``isotope`` and ``atom_map`` ``None`` when absent.
    """

    isotope: int | None
    symbol: str
    chirality: str
    hs: int
    charge: int
    atom_map: int | None

    @property
    def element(self) -> str:
        """The element symbol capitalised as the periodic table writes it (``n`` -> ``N``, ``se`` -> ``Se``)."""
        return self.symbol.capitalize()

    @property
    def aromatic(self) -> bool:
        return self.symbol[0].islower()


def parse_bracket(token: str) -> BracketAtom | None:
    """The parts of one bracket atom token; ``None`` for a token that is not one.

    The one parser of bracket atoms: the graph featuriser reads types off it, the sampling grammar
    valences and aromaticity. Whether the element exists is the caller's question (RDKit's table).
    """
    m = _BRACKET.fullmatch(token)
    if m is None:
        return None
    iso, symbol, chirality, hs, sign, amap = m.groups()
    digits = (sign or "").lstrip("+-")
    charge = (int(digits) if digits else len(sign or "")) * (-1 if sign and sign[0] == "-" else 1)
    return BracketAtom(
        isotope=int(iso) if iso else None, symbol=symbol, chirality=chirality or "",
        hs=int(hs[1:] or 1) if hs else 0, charge=charge, atom_map=int(amap) if amap else None,
    )  # fmt: skip


def tokenize(smiles: str) -> list[str]:
    """Split one SMILES into atom-level tokens.

    Raises:
        InputError: when a character belongs to no token (e.g. a space or ``%1`` without a
            second digit), naming the position and the molecule.
    """
    tokens = SMILES_REGEX.findall(smiles)
    if sum(map(len, tokens)) != len(smiles):
        pos = _first_uncovered(smiles)
        raise InputError(
            f"cannot tokenize SMILES {smiles!r}: character {smiles[pos]!r} at position {pos} is not "
            "part of any SMILES token; check the string (spaces, stray characters, names instead of SMILES)"
        )
    return tokens


def _first_uncovered(smiles: str) -> int:
    pos = 0
    for match in SMILES_REGEX.finditer(smiles):
        if match.start() != pos:
            return pos
        pos = match.end()
    return pos


class SmilesTokenizer:
    """Maps SMILES <-> integer ids; ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, then data tokens.

    Args:
        tokens: the data tokens (not the special ones), in id order.
        kekule: write every SMILES in Kekulé form before splitting it (see the module docstring).
    """

    def __init__(self, tokens: Sequence[str], kekule: bool = False):
        tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        if len(set(tokens)) != len(tokens):
            raise ConfigError("vocabulary has duplicate tokens")
        self.itos: list[str] = [*SPECIAL_TOKENS, *tokens]
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        self.kekule = bool(kekule)

    pad_id, bos_id, eos_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"SmilesTokenizer({len(self)} tokens{', Kekulé' if self.kekule else ''})"

    def __eq__(self, other) -> bool:
        return isinstance(other, SmilesTokenizer) and self.itos == other.itos and self.kekule == other.kekule

    def spell(self, smiles: str) -> str:
        """The SMILES as this vocabulary writes it: unchanged, or in Kekulé form for a Kekulé vocabulary.

        Raises:
            InputError: a Kekulé vocabulary was given a string RDKit cannot parse.
        """
        if not self.kekule:
            return smiles
        from molgen.chem import kekule_smiles

        out = kekule_smiles(smiles)
        if out is None:
            raise InputError(f"SMILES {smiles!r} does not parse, so it cannot be written in Kekulé form for this model")
        return out

    def tokens(self, smiles: str) -> list[str]:
        """The tokens of ``smiles`` as this vocabulary spells it (bare tokens pass through unchanged)."""
        try:
            return tokenize(self.spell(smiles))
        except InputError:  # not a molecule: a bare token such as "%10", or junk the caller reports
            return tokenize(smiles)

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def from_smiles(cls, smiles: Iterable[str], min_count: int = 1, kekule: bool = False) -> SmilesTokenizer:
        """Vocabulary of every token seen at least ``min_count`` times, most frequent first."""
        counts: Counter[str] = Counter()
        spelling = cls([], kekule=kekule)
        for s in smiles:
            counts.update(spelling.tokens(s))
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(kept, kekule=kekule)

    def extend(self, smiles_or_tokens: Iterable[str]) -> list[str]:
        """Add the tokens of these SMILES (or bare tokens) that are new; returns the added ones.

        Existing ids never change, so a model only needs new embedding rows appended.
        """
        added: list[str] = []
        for item in smiles_or_tokens:
            for tok in self.tokens(item):
                if tok not in self.stoi:
                    self.stoi[tok] = len(self.itos)
                    self.itos.append(tok)
                    added.append(tok)
        return added

    def missing(self, smiles: Iterable[str]) -> Counter:
        """Counts of tokens in ``smiles`` that are not in the vocabulary."""
        counts: Counter[str] = Counter()
        for s in smiles:
            counts.update(t for t in self.tokens(s) if t not in self.stoi)
        return counts

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, smiles: str, add_special: bool = True) -> list[int]:
        """Ids of one SMILES, wrapped in ``<bos>`` ... ``<eos>`` unless ``add_special=False``.

        Raises:
            InputError: for a token outside the vocabulary, naming token and molecule, and for a
                molecule a Kekulé vocabulary cannot parse.
        """
        ids = []
        for tok in tokenize(self.spell(smiles)):
            idx = self.stoi.get(tok)
            if idx is None:
                raise InputError(
                    f"token {tok!r} in SMILES {smiles!r} is not in the model's vocabulary "
                    f"({len(self)} tokens). Standardise the molecule, drop it, or extend the "
                    "vocabulary on purpose with tokenizer.extend(smiles) and model.resize_vocab(len(tokenizer))"
                )
            ids.append(idx)
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def encode_batch(self, smiles: Sequence[str], max_len: int | None = None) -> np.ndarray:
        """Encode and right-pad with ``<pad>`` to an ``(N, L)`` int64 array.

        ``L`` is the longest encoding (with specials) or ``max_len``; a longer molecule raises
        :class:`InputError` naming it, because truncated SMILES would teach broken chemistry.
        """
        encoded = [self.encode(s) for s in smiles]
        width = max((len(e) for e in encoded), default=2) if max_len is None else max_len
        out = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(encoded):
            if len(ids) > width:
                raise InputError(
                    f"SMILES {smiles[row]!r} has {len(ids)} tokens with <bos>/<eos>, more than the "
                    f"model's context of {width}; drop molecules this large or use a model with a longer block_size"
                )
            out[row, : len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """SMILES from ids: skips ``<bos>``/``<pad>``, stops at the first ``<eos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i])
        return "".join(out)

    def decode_batch(self, ids: np.ndarray) -> list[str]:
        return [self.decode(row) for row in ids]

    # --- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = {"format": _FORMAT, "regex": SMILES_REGEX.pattern, "tokens": self.itos}
        if self.kekule:  # absent for aromatic vocabularies, so their files (and cache keys) stay as they were
            out["kekule"] = True
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``vocab.json`` (tokens in id order, specials first)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SmilesTokenizer:
        """Read a ``vocab.json`` written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read vocabulary {path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("tokens"), list):
            raise ConfigError(f"{path} is not a molgen SMILES vocabulary (expected format {_FORMAT!r})")
        if tuple(data["tokens"][:3]) != SPECIAL_TOKENS:
            raise ConfigError(f"{path}: the first tokens must be {SPECIAL_TOKENS}")
        return cls(data["tokens"][3:], kekule=bool(data.get("kekule", False)))
