"""SAE-feature edits as interventions: rescale or clamp chosen features, keeping what the SAE misses.

`RescaleFeatures` implements the feature-flow papers' rescaling (arXiv 2502.03032, §4.2)

    h <- h + (r - 1) * sum_i a_i(h) v_i

for chosen features i of one SAE, where a_i(h) is the feature's activation on the current
activation h and v_i its decoder direction. r = 0 removes the features (deactivation), r > 1
amplifies them, r < 0 flips them. The edit adds the *change* it makes to the SAE's output, so the
SAE's reconstruction error (h - x̂) passes through untouched: h is never replaced by x̂.
`ClampFeatures` sets the features' activations to fixed values the same way (h + (c - a(h)) v).

Any sae_lens SAE works (TopK, JumpReLU, Standard, ...): activations come from ``sae.encode`` and
the per-unit output of each feature from ``sae.decode`` (so decoders that rescale by their norms
are handled); see `check_sae` for the SAE settings that cannot be supported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from flowsteer.patching.interventions import Activation, Context, Intervention, finite_tensor


def check_sae(sae: nn.Module, d_model: int | None = None) -> None:
    """Raise a clear error unless ``sae`` maps a ``[..., d_in]`` activation to features and back
    with a fixed linear decoder (what feature matching and feature edits assume)."""
    cfg = getattr(sae, "cfg", None)
    if cfg is None or not hasattr(sae, "W_dec") or not hasattr(sae, "encode"):
        raise TypeError(f"expected a sae_lens SAE (with cfg, W_dec, encode, decode), got {type(sae).__name__}")
    if getattr(cfg, "normalize_activations", "none") != "none":
        raise ValueError(
            f"SAE normalises its input at run time (normalize_activations={cfg.normalize_activations!r}); "
            "fold the normalisation into its weights first, e.g. sae.fold_activation_norm_scaling_factor(c)"
        )
    if getattr(cfg, "reshape_activations", "none") != "none":
        raise ValueError("SAEs on per-head activations (reshape_activations='hook_z') are not supported here")
    if d_model is not None and cfg.d_in != d_model:
        raise ValueError(f"SAE has d_in={cfg.d_in} but the activation has d={d_model}; use the SAE of this site")


@torch.no_grad()
def decoder_directions(sae: nn.Module, features: Tensor | None = None) -> Float[Tensor, "n d"]:
    """Each feature's contribution to the SAE output per unit of activation (``decode(e_i) - decode(0)``).

    Equals ``W_dec[i]`` for plain decoders and ``W_dec[i] / ||W_dec[i]||`` for TopK SAEs that rescale
    activations by decoder norms. ``features`` (indices) selects rows; default all.
    """
    check_sae(sae)
    n_features = sae.cfg.d_sae
    index = torch.arange(n_features) if features is None else torch.as_tensor(features, dtype=torch.long)
    if bool(((index < 0) | (index >= n_features)).any()):
        raise IndexError(f"feature indices must lie in 0..{n_features - 1} for this SAE")
    zero = sae.decode(torch.zeros(1, n_features, dtype=sae.W_dec.dtype, device=sae.W_dec.device))
    rows = []
    for chunk in index.split(1024):  # one-hot blocks keep memory at 1024 x d_sae
        one_hot = torch.zeros(len(chunk), n_features, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
        one_hot[torch.arange(len(chunk)), chunk.to(one_hot.device)] = 1.0
        rows.append(sae.decode(one_hot) - zero)
    return torch.cat(rows)


class FeatureEdit(Intervention):
    """Base of edits ``h + sum_i c_i(a(h)) v_i`` of chosen features of one SAE (error term kept).

    Subclasses say how the coefficient ``c_i`` follows from the features' activations ``a_i(h)`` and
    a per-feature parameter (`change`). The parameter is one float, ``[n]`` (one per feature) or
    ``[batch, n]`` (one per batch row and feature), so many different edits of one prompt run as
    one batch.
    """

    parameter_name = "value"

    def __init__(self, sae: nn.Module, features: Sequence[int] | Tensor, parameter: float | Tensor):
        super().__init__()
        check_sae(sae)
        index = torch.as_tensor(features, dtype=torch.long).flatten()
        if len(index) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one feature index")
        what = f"{type(self).__name__}'s {self.parameter_name}"
        parameter = finite_tensor(torch.as_tensor(parameter, dtype=torch.float32), what)
        if parameter.ndim > 2 or (parameter.ndim >= 1 and parameter.shape[-1] != len(index)):
            raise ValueError(
                f"{self.parameter_name} has shape {tuple(parameter.shape)}; use a float, [{len(index)}] or "
                f"[batch, {len(index)}]"
            )
        self.sae = sae
        self.register_buffer("features", index)
        self.register_buffer(self.parameter_name, parameter)
        self.register_buffer("directions", decoder_directions(sae, index).detach().clone())

    @property
    def parameter(self) -> Tensor:
        return getattr(self, self.parameter_name)

    @property
    def width(self) -> int:
        return self.directions.shape[-1]

    def change(self, amounts: Float[Tensor, "m n"], parameter: Tensor) -> Float[Tensor, "m n"]:
        """The coefficients c of the chosen decoder directions, from activations and parameter."""
        raise NotImplementedError

    def amounts(self, activation: Float[Tensor, "... d"]) -> Float[Tensor, "... n"]:
        """The chosen features' activations a_i(h)."""
        with torch.no_grad():
            acts = self.sae.encode(activation.to(self.directions.device, self.directions.dtype))
        return acts[..., self.features.to(acts.device)].to(activation.device)

    def forward(self, activation: Activation, context: Context) -> Activation:
        parameter = self.parameter.to(activation.device)
        if parameter.ndim == 2 and parameter.shape[0] != activation.shape[0]:
            raise ValueError(
                f"{type(self).__name__} at {context.site}: {self.parameter_name} has {parameter.shape[0]} rows "
                f"but the batch has {activation.shape[0]}"
            )
        directions = self.directions.to(activation.device)
        if context.mask is None:  # every column: one dense edit
            parameter = parameter[:, None, :] if parameter.ndim == 2 else parameter
            delta = self.change(self.amounts(activation), parameter) @ directions
            return activation + delta.to(activation.dtype)
        rows, cols = context.mask.nonzero(as_tuple=True)  # only the edited columns are encoded
        parameter = parameter[rows] if parameter.ndim == 2 else parameter
        picked = activation[rows, cols]
        delta = self.change(self.amounts(picked), parameter) @ directions
        edited = activation.clone()
        edited[rows, cols] = picked + delta.to(activation.dtype)
        return edited

    def extra_repr(self) -> str:
        shape = tuple(self.parameter.shape) or float(self.parameter)
        return f"features={len(self.features)}, {self.parameter_name}={shape}"


class RescaleFeatures(FeatureEdit):
    """``h + sum_i (r_i - 1) a_i(h) v_i`` for the chosen features of one SAE (error term kept).

    Args:
        sae: a sae_lens SAE trained on this patch's site.
        features: feature indices (n of them).
        factor: r, one float for all, a tensor ``[n]`` (one per feature) or ``[batch, n]`` (one per
            batch row and feature; r = 1 leaves that feature alone in that row), so many different
            edits of one prompt run as one batch.
    """

    parameter_name = "factor"

    def __init__(self, sae: nn.Module, features: Sequence[int] | Tensor, factor: float | Tensor = 0.0):
        super().__init__(sae, features, factor)

    def change(self, amounts: Tensor, parameter: Tensor) -> Tensor:
        return (parameter - 1.0) * amounts


class ClampFeatures(FeatureEdit):
    """``h + sum_i (c_i - a_i(h)) v_i``: the chosen features' activations set to ``value`` (Templeton
    et al. 2024's clamping), everything the SAE misses kept.

    Args:
        sae: a sae_lens SAE trained on this patch's site.
        features: feature indices (n of them).
        value: the activation c to clamp to: a float, ``[n]`` or ``[batch, n]``.
    """

    parameter_name = "value"

    def __init__(self, sae: nn.Module, features: Sequence[int] | Tensor, value: float | Tensor):
        super().__init__(sae, features, value)

    def change(self, amounts: Tensor, parameter: Tensor) -> Tensor:
        return parameter - amounts
