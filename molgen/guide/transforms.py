"""Desirability transforms: a component's raw value -> a desirability in [0, 1] (1 = what we want).

Each transform is a small pydantic model (``extra="forbid"``) named by its ``type`` in the TOML's
``transform`` table and registered in :data:`TRANSFORMS`. The formulas follow REINVENT 4's
score transforms (``reinvent/scoring/transforms``: ``sigmoids.py``, ``double_sigmoid.py``,
``steps.py``; Loeffler et al., J. Cheminform. 16, 20, 2024), so a REINVENT objective carries over
with the same numbers; the idea of mapping each property to a desirability and combining them by
a geometric mean is Harrington's (E. C. Harrington, "The desirability function", Industrial
Quality Control 21, 494-498, 1965), and the linear window is Derringer and Suich's piecewise
linear desirability (J. Quality Technology 12, 214-219, 1980).

=================  ===========================================================================
``identity``       ``x`` (for raw values already in [0, 1]: QED, similarity, pass/fail checks)
``sigmoid``        ``1 / (1 + 10 ** (-10 k (x - (low + high) / 2) / (high - low)))``: rises
                   through 0.5 at the middle of ``[low, high]``; ``k`` sets the steepness
``reverse_sigmoid`` ``1 - sigmoid``: falls through 0.5 at the middle (lower is better)
``double_sigmoid`` a window with soft edges: ``1 / (1 + 10 ** (-(coef_si / coef_div) (x - low)))``
                   left of the centre, ``1 - 1 / (1 + 10 ** (-(coef_se / coef_div) (x - high)))``
                   right of it; 0.5 at ``low`` and at ``high``
``step``           1 where ``low <= x <= high``, else 0 (either bound may be left out: a limit)
``linear_window``  1 on ``[low, high]``, falling linearly to 0 over ``ramp`` on either side
=================  ===========================================================================

Every desirability is clipped to [0, 1] and a missing raw value (NaN: an invalid molecule, a
failed oracle) gives 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.special import expit

__all__ = ["Transform", "TRANSFORMS", "Identity", "Sigmoid", "ReverseSigmoid", "DoubleSigmoid", "Step",
           "LinearWindow", "parse_transform", "describe_error"]

_LN10 = math.log(10.0)


class Transform(BaseModel):
    """A raw value -> desirability map; subclasses implement :meth:`raw_map` on a float array."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def __call__(self, x) -> np.ndarray:
        """Desirabilities of ``x`` (an array of raw values), clipped to [0, 1], NaN -> 0."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            d = self.raw_map(x)
        return np.nan_to_num(np.clip(d, 0.0, 1.0), nan=0.0)

    def raw_map(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


TRANSFORMS: dict[str, type[Transform]] = {}


def _register(cls: type[Transform]) -> type[Transform]:
    TRANSFORMS[cls.model_fields["type"].default] = cls
    return cls


def _check_window(low: float, high: float, strict: bool) -> None:
    if math.isnan(low) or math.isnan(high):
        raise ValueError("low and high must be numbers, not nan")
    if (low >= high) if strict else (low > high):
        rule = "below" if strict else "at most"
        raise ValueError(f"low ({low}) must be {rule} high ({high}); the window is inverted")


@_register
class Identity(Transform):
    type: Literal["identity"] = "identity"

    def raw_map(self, x):
        return x


class _SigmoidBase(Transform):
    low: float
    high: float
    k: float = Field(0.5, gt=0, description="steepness (REINVENT's k); 0.5 gives 0.003 at low and 0.997 at high")

    @model_validator(mode="after")
    def _window(self):
        _check_window(self.low, self.high, strict=True)
        if math.isinf(self.low) or math.isinf(self.high):
            raise ValueError("low and high must be finite (use 'step' for a one-sided limit)")
        return self

    def _rising(self, x):
        slope = 10.0 * self.k / (self.high - self.low)
        return expit(slope * (x - (self.high + self.low) / 2.0) * _LN10)


@_register
class Sigmoid(_SigmoidBase):
    type: Literal["sigmoid"] = "sigmoid"

    def raw_map(self, x):
        return self._rising(x)


@_register
class ReverseSigmoid(_SigmoidBase):
    type: Literal["reverse_sigmoid"] = "reverse_sigmoid"

    def raw_map(self, x):
        return 1.0 - self._rising(x)


@_register
class DoubleSigmoid(Transform):
    type: Literal["double_sigmoid"] = "double_sigmoid"
    low: float
    high: float
    coef_div: float = Field(100.0, gt=0)
    coef_si: float = Field(150.0, gt=0, description="steepness of the rising (low) edge")
    coef_se: float = Field(150.0, gt=0, description="steepness of the falling (high) edge")

    @model_validator(mode="after")
    def _window(self):
        _check_window(self.low, self.high, strict=True)
        if math.isinf(self.low) or math.isinf(self.high):
            raise ValueError("low and high must be finite")
        return self

    def raw_map(self, x):
        centre = (self.low + self.high) / 2.0
        left = expit((x - self.low) * self.coef_si / self.coef_div * _LN10)
        right = 1.0 - expit((x - self.high) * self.coef_se / self.coef_div * _LN10)
        return np.where(x < centre, left, right)


class _Interval(Transform):
    low: float = -math.inf
    high: float = math.inf

    @model_validator(mode="after")
    def _window(self):
        _check_window(self.low, self.high, strict=False)
        if math.isinf(self.low) and math.isinf(self.high):
            raise ValueError("give low, high or both")
        return self


@_register
class Step(_Interval):
    type: Literal["step"] = "step"

    def raw_map(self, x):
        return ((x >= self.low) & (x <= self.high)).astype(np.float64)


@_register
class LinearWindow(_Interval):
    type: Literal["linear_window"] = "linear_window"
    ramp: float = Field(gt=0, description="width over which the desirability falls from 1 to 0 outside [low, high]")

    def raw_map(self, x):
        outside = np.maximum(self.low - x, 0.0) + np.maximum(x - self.high, 0.0)
        return 1.0 - outside / self.ramp


def parse_transform(data) -> Transform:
    """A transform from its TOML table; ``ValueError`` (with the known types) for an unknown ``type``."""
    if isinstance(data, Transform):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"must be a table such as {{ type = \"sigmoid\", low = 0, high = 1 }}, got {data!r}")
    kind = data.get("type")
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform type {kind!r}; choose from {', '.join(TRANSFORMS)}")
    try:
        return TRANSFORMS[kind].model_validate(data)
    except ValidationError as err:
        raise ValueError("; ".join(describe_error(e) for e in err.errors())) from None


def describe_error(error: dict) -> str:
    """One pydantic error as ``field: what is wrong`` (our own checks keep their message)."""
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
    elif error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling)"
    elif error["type"] == "missing":
        message = "missing"
    else:
        message = f"{error['msg']} (got {error.get('input')!r})"
    return f"{where}: {message}" if where else message

