"""The conditional pixel-space denoiser: diffusers' ``UNet2DModel`` plus a small condition encoder.

Conditioning follows Khosravi et al. (2024): a vector of findings and demographics is encoded by a
small MLP and **added to the time embedding** of the UNet. diffusers' ``UNet2DModel`` does exactly
this with ``class_embed_type="identity"``: ``emb = time_embedding(t) + class_labels`` (see
``UNet2DModel.forward``, "# 1. time"), so ``class_labels`` is the encoded condition, of width
``time_embed_dim = 4 * block_out_channels[0]``.

Every field of the condition (each label, sex, age) has its own learned **null** embedding meaning
"unknown". A label the dataset does not know (``label_mask`` False), a sex of -1 or an age of NaN
uses it; the *null condition* has every field null. Dropping fields or the whole condition during
training lets one network be conditional, partially conditional and unconditional, which is what
classifier-free guidance (Ho & Salimans 2022) needs:

    ε̃(x, c) = (1 + w) · ε(x, c) − w · ε(x, ∅)

with guidance ``w >= 0``; ``w = 0`` is the plain conditional prediction (no second pass). This is Ho &
Salimans' ``w``; diffusers pipelines call ``1 + w`` their ``guidance_scale``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.labels import CHEXPERT_LABELS, check_label_names

PREDICTION_TYPES = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")

# Age enters the encoder as (age - AGE_CENTER) / AGE_SCALE (years), so typical adult ages lie in [-2, 2].
AGE_CENTER, AGE_SCALE = 55.0, 20.0


# --- conditions ---------------------------------------------------------------------------------
@dataclass
class Condition:
    """A batch of conditions. Unknown entries use the field's null embedding.

    ``labels`` float [B, L] (0/1; value ignored where not known), ``known`` bool [B, L],
    ``sex`` long [B] (0 female, 1 male, -1 unknown), ``age`` float [B] (years, NaN unknown).
    """

    labels: torch.Tensor
    known: torch.Tensor
    sex: torch.Tensor
    age: torch.Tensor

    def __post_init__(self):
        b = self.labels.shape[0]
        if self.labels.ndim != 2 or self.known.shape != self.labels.shape:
            raise ValueError(f"Condition: labels {tuple(self.labels.shape)} and known {tuple(self.known.shape)} must both be [B, L]")
        if self.sex.shape != (b,) or self.age.shape != (b,):
            raise ValueError(f"Condition: sex {tuple(self.sex.shape)} and age {tuple(self.age.shape)} must be [{b}]")

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def n_labels(self) -> int:
        return self.labels.shape[1]

    @classmethod
    def null(cls, n: int, n_labels: int, device="cpu") -> "Condition":
        """``n`` null conditions: every field unknown (the unconditional model)."""
        return cls(
            labels=torch.zeros(n, n_labels, device=device),
            known=torch.zeros(n, n_labels, dtype=torch.bool, device=device),
            sex=torch.full((n,), -1, dtype=torch.long, device=device),
            age=torch.full((n,), float("nan"), device=device),
        )

    @classmethod
    def from_table(cls, table: pd.DataFrame, label_names: Sequence[str]) -> "Condition":
        """From a conditions table: one column per label (1 / 0 / NaN = unknown), ``sex`` ("F"/"M"/
        empty) and ``age`` (years, NaN = unknown). Missing ``sex``/``age`` columns mean unknown."""
        from ..data.base import _sex_code

        missing = [c for c in label_names if c not in table.columns]
        if missing:
            raise ValueError(f"conditions table lacks label columns {missing}; it has {list(table.columns)}")
        raw = table[list(label_names)].to_numpy(dtype=np.float64)
        bad = ~(np.isnan(raw) | np.isin(raw, (0.0, 1.0)))
        if bad.any():
            raise ValueError(f"condition label values must be 1, 0 or empty (unknown); found {sorted(set(raw[bad].tolist()))[:5]}")
        n = len(table)
        sex = [_sex_code(s) for s in table["sex"]] if "sex" in table.columns else [-1] * n
        age = pd.to_numeric(table["age"], errors="coerce").to_numpy(np.float32) if "age" in table.columns else np.full(n, np.nan, np.float32)
        return cls(
            labels=torch.from_numpy(np.nan_to_num(raw, nan=0.0).astype(np.float32)),
            known=torch.from_numpy(~np.isnan(raw)),
            sex=torch.tensor(sex, dtype=torch.long),
            age=torch.from_numpy(np.asarray(age, np.float32)),
        )

    def to(self, device) -> "Condition":
        return Condition(self.labels.to(device), self.known.to(device), self.sex.to(device), self.age.to(device))

    def __getitem__(self, idx) -> "Condition":
        return Condition(self.labels[idx], self.known[idx], self.sex[idx], self.age[idx])

    @staticmethod
    def cat(conds: Sequence["Condition"]) -> "Condition":
        return Condition(*(torch.cat([getattr(c, f) for c in conds]) for f in ("labels", "known", "sex", "age")))

    def drop(self, labels: torch.Tensor, sex: torch.Tensor, age: torch.Tensor) -> "Condition":
        """Null the fields where the boolean masks (``labels`` [B, L], ``sex`` [B], ``age`` [B]) are True."""
        return Condition(
            labels=self.labels,
            known=self.known & ~labels,
            sex=torch.where(sex, torch.full_like(self.sex, -1), self.sex),
            age=torch.where(age, torch.full_like(self.age, float("nan")), self.age),
        )


# --- encoder ------------------------------------------------------------------------------------
class ConditionEncoder(nn.Module):
    """Condition -> vector added to the UNet's time embedding.

    h = Σ_j E_label[j, s_j] + E_sex[s_sex] + (W_age · a  if age known else e_age_null),
    out = Linear(SiLU(h)),

    with s_j ∈ {0 absent, 1 present, 2 unknown}, s_sex ∈ {0 F, 1 M, 2 unknown} and
    a = (age − 55) / 20. A sum of per-field embeddings is a linear layer on the one-hot encoding of
    every field, so this is a two-layer MLP on Khosravi's condition vector, with a null state per field.
    """

    def __init__(self, n_labels: int, hidden: int, out_dim: int):
        super().__init__()
        self.n_labels = n_labels
        self.label_embed = nn.Embedding(3 * max(n_labels, 1), hidden)  # rows 3j, 3j+1, 3j+2 for label j
        self.sex_embed = nn.Embedding(3, hidden)
        self.age_proj = nn.Linear(1, hidden)
        self.age_null = nn.Parameter(torch.randn(hidden) * 0.02)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out_dim))

    def forward(self, cond: Condition) -> torch.Tensor:
        if cond.n_labels != self.n_labels:
            raise ValueError(f"condition has {cond.n_labels} labels, the encoder expects {self.n_labels}")
        # 1. labels: state 0/1 from the value, 2 where unknown
        state = torch.where(cond.known, cond.labels.round().long().clamp(0, 1), torch.full_like(cond.labels, 2, dtype=torch.long))
        offsets = 3 * torch.arange(self.n_labels, device=state.device)
        h = self.label_embed(state + offsets).sum(dim=1) if self.n_labels else 0.0
        # 2. sex: -1 (unknown) -> state 2
        h = h + self.sex_embed(torch.where(cond.sex < 0, torch.full_like(cond.sex, 2), cond.sex))
        # 3. age: linear in normalized years, or the null vector
        age_known = ~torch.isnan(cond.age)
        a = torch.where(age_known, (cond.age - AGE_CENTER) / AGE_SCALE, torch.zeros_like(cond.age))
        h = h + torch.where(age_known[:, None], self.age_proj(a[:, None]), self.age_null.expand(len(cond), -1))
        return self.out(h)


# --- the generator network ----------------------------------------------------------------------
def generator_config_of(options: Mapping[str, Any]) -> dict:
    """:func:`generator_config` of a generator's training options (e.g.
    :func:`cxrlib.experiments.synthetic.generator_options`): its architecture fields, the others ignored."""
    import inspect

    fields = inspect.signature(generator_config).parameters
    return generator_config(**{k: v for k, v in options.items() if k in fields})


def generator_config(
    *,
    image_size: int,
    labels: Sequence[str] = CHEXPERT_LABELS,
    channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 2,
    attention: Sequence[bool] | None = None,
    dropout: float = 0.0,
    norm_groups: int = 32,
    cond_hidden: int = 128,
    prediction_type: str = "epsilon",
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    time_scale_shift: str = "default",
    label_channels: bool = False,
) -> dict:
    """The JSON-able description of a generator (architecture + the noise schedule it was trained for).

    ``attention[i]`` puts self-attention in resolution level ``i`` (default: the lowest resolution only).
    ``time_scale_shift="scale_shift"``: the (time + condition) embedding modulates every ResNet
    block's GroupNorm as scale and shift (ADM's AdaGN, Dhariwal & Nichol 2021) instead of being
    added; ``label_channels=True`` also feeds the label states to the first layer as 2 constant
    input channels per label (value, known), a short path that small models on short budgets learn
    the condition through much sooner.
    """
    labels = list(check_label_names(labels, where="labels"))
    channels = [int(c) for c in channels]
    attention = [False] * (len(channels) - 1) + [True] if attention is None else [bool(a) for a in attention]
    if len(attention) != len(channels):
        raise ValueError(f"attention={attention} must have one entry per level of channels={channels}")
    if any(c % norm_groups for c in channels):
        raise ValueError(f"norm_groups={norm_groups} must divide every entry of channels={channels}")
    if image_size % 2 ** (len(channels) - 1):
        raise ValueError(f"image_size={image_size} must be divisible by 2**{len(channels) - 1} for channels={channels}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r}: expected one of {PREDICTION_TYPES}")
    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule={beta_schedule!r}: expected one of {BETA_SCHEDULES} (linear = Ho 2020, squaredcos_cap_v2 = cosine, Nichol & Dhariwal 2021)")
    if time_scale_shift not in ("default", "scale_shift"):
        raise ValueError(f"time_scale_shift={time_scale_shift!r}: expected 'default' or 'scale_shift'")
    unet = dict(
        sample_size=int(image_size),
        in_channels=1 + (2 * len(labels) if label_channels else 0),
        out_channels=1,
        block_out_channels=channels,
        layers_per_block=int(layers_per_block),
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        dropout=float(dropout),
        norm_num_groups=int(norm_groups),
        attention_head_dim=8,
        class_embed_type="identity",
        resnet_time_scale_shift=time_scale_shift,
    )
    return {
        "unet": unet,
        "label_channels": bool(label_channels),
        "labels": labels,
        "cond_hidden": int(cond_hidden),
        "schedule": {"prediction_type": prediction_type, "beta_schedule": beta_schedule, "num_train_timesteps": int(num_train_timesteps)},
    }


class GeneratorModel(nn.Module):
    """What every generator network of the study exposes: ``config`` (JSON-able), the ``label_names`` it
    is conditioned on, its ``image_size`` and, once loaded from a finished model folder, its
    ``generator_id`` (:func:`cxrlib.generators.training_utils.generator_id`)."""

    config: dict
    generator_id: str | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.config["labels"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])


class ConditionalUNet(GeneratorModel):
    """``UNet2DModel`` (1 channel, images in [-1, 1]) + :class:`ConditionEncoder`.

    ``forward(x, t, cond, guidance=0.0)`` returns the network's prediction (ε or v, as in
    ``config["schedule"]["prediction_type"]``), with classifier-free guidance ``w = guidance``.
    """

    def __init__(self, config: dict):
        super().__init__()
        from diffusers import UNet2DModel

        self.config = copy.deepcopy(config)
        self.unet = UNet2DModel(**self.config["unet"])
        time_embed_dim = 4 * self.config["unet"]["block_out_channels"][0]  # UNet2DModel's default width
        self.cond_encoder = ConditionEncoder(len(self.config["labels"]), self.config["cond_hidden"], time_embed_dim)

    @property
    def image_size(self) -> int:
        return int(self.config["unet"]["sample_size"])

    def _net(self, x: torch.Tensor, t, cond: Condition) -> torch.Tensor:
        if self.config.get("label_channels"):
            known = cond.known.float()
            maps = torch.cat([cond.labels.float() * known, known], dim=1)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, x.shape[-2], x.shape[-1]).to(x.dtype)], dim=1)
        return self.unet(x, t, class_labels=self.cond_encoder(cond)).sample

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float = 0.0) -> torch.Tensor:
        if len(cond) != x.shape[0]:
            raise ValueError(f"{len(cond)} conditions for a batch of {x.shape[0]} images")
        if guidance == 0.0:
            return self._net(x, t, cond)
        if guidance < 0:
            raise ValueError(f"guidance={guidance}: expected w >= 0 (0 = conditional model, no guidance)")
        # 1. one batch holding the conditional and the null-condition halves
        b = x.shape[0]
        t = t.expand(b) if torch.is_tensor(t) and t.ndim == 1 and t.shape[0] == 1 else t
        t2 = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim == 1 else t
        both = Condition.cat([cond, Condition.null(b, cond.n_labels, device=x.device)])
        out = self._net(torch.cat([x, x]), t2, both)
        # 2. ε̃ = (1 + w) ε_c − w ε_∅
        cond_out, null_out = out[:b], out[b:]
        return cond_out + guidance * (cond_out - null_out)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_json(config: dict) -> str:
    """Canonical JSON of a generator config (sorted keys, no whitespace)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))
