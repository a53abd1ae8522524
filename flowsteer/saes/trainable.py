"""SAEs in training, one per site, behind one small interface the multi-site trainer drives.

* `SparseTopK`: a TopK SAE with an AuxK dead-latent loss whose forward and backward touch only
  the active latents (`flowsteer.saes.sparse`). Its loss equals sae-lens's `TopKTrainingSAE` with
  ``rescale_acts_by_decoder_norm=False``; the trainer keeps decoder rows at unit norm instead.
* `LensTrainable`: any sae-lens `TrainingSAE` (JumpReLU, standard ReLU + L1, ...) trained through
  its own ``training_forward_pass``.

Both export a plain sae-lens inference SAE (`TopKSAE`, `JumpReLUSAE`, `StandardSAE`) that works on
raw activations: the input scale used during training is folded into the weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Float
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainingSAE, TrainStepInput
from torch import Tensor, nn

from flowsteer.saes.sparse import decode, encode_at, sort_index


class SparseTopK(nn.Module):
    """A TopK SAE (``k`` of ``d_sae`` latents per token) with sparse gradients and AuxK.

    Parameters: ``W_enc_t`` [d_sae, d_in] (sae-lens's ``W_enc`` transposed), ``b_enc`` [d_sae],
    ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in].

    Args:
        selection_dtype: dtype of the dense encoder product that only *chooses* the top k
            latents (their values are recomputed exactly in float32). ``torch.bfloat16`` is several
            times faster where bf16 is native (`flowsteer.models.precision` decides for `train_saes`) and
            far slower where it is emulated; ``None`` selects in the weights' dtype.
        aux_coefficient: weight of the AuxK loss: the ``d_in // 2`` most active dead latents
            reconstruct the residual the live latents left (Gao et al. 2024; sae-lens's form).
    """

    architecture = "topk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        *,
        aux_coefficient: float = 1.0,
        selection_dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        if not 0 < k <= d_sae:
            raise ValueError(f"k must be in 1..d_sae={d_sae}, got {k}")
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.aux_coefficient = aux_coefficient
        self.selection_dtype = selection_dtype
        encoder = torch.empty(d_sae, d_in)
        bound = 1 / math.sqrt(d_in)
        encoder.uniform_(-bound, bound, generator=generator)
        self.W_enc_t = nn.Parameter(encoder.to(device))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, device=device))
        self.W_dec = nn.Parameter((encoder / encoder.norm(dim=-1, keepdim=True)).to(device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, device=device))

    def pre_activations(self, x: Float[Tensor, "b d"]) -> Float[Tensor, "b s"]:
        """Dense encoder pre-activations in the selection dtype (no gradient)."""
        with torch.no_grad():
            dtype = self.selection_dtype or self.W_enc_t.dtype
            xc = (x - self.b_dec).to(dtype)
            return torch.addmm(self.b_enc.to(dtype), xc, self.W_enc_t.to(dtype).T)

    def loss(self, x: Float[Tensor, "b d"], dead: Bool[Tensor, " s"] | None) -> tuple[Tensor, dict[str, Any]]:
        """MSE (summed over dims, mean over tokens) + AuxK; the stats hold ``fired`` latents and ``mse``."""
        pre = self.pre_activations(x)
        index = sort_index(pre.topk(self.k, dim=-1, sorted=False).indices)
        xc = x - self.b_dec
        values = encode_at(xc, self.W_enc_t, self.b_enc, index).relu()
        recon = decode(values, self.W_dec, index) + self.b_dec
        mse = (recon - x).pow(2).sum(-1).mean()
        loss = mse
        if dead is not None and self.aux_coefficient > 0 and (n_dead := int(dead.sum())) > 0:
            loss = loss + self._aux_loss(x, xc, recon, pre, dead, n_dead)
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[index[values > 0]] = True
        return loss, {"mse": mse.detach(), "fired": fired}

    def _aux_loss(self, x: Tensor, xc: Tensor, recon: Tensor, pre: Tensor, dead: Tensor, n_dead: int) -> Tensor:
        k_aux = x.shape[-1] // 2
        scale = min(n_dead / k_aux, 1.0)
        k_aux = min(k_aux, n_dead)
        dead_ids = dead.nonzero()[:, 0]
        chosen = pre[:, dead_ids].topk(k_aux, dim=-1, sorted=False).indices
        index = sort_index(dead_ids[chosen])
        values = encode_at(xc, self.W_enc_t, self.b_enc, index)
        residual = (x - recon).detach()
        aux_recon = decode(values, self.W_dec, index)
        return self.aux_coefficient * scale * (aux_recon - residual).pow(2).sum(-1).mean()

    @torch.no_grad()
    def before_step(self) -> None:
        """Remove the part of each decoder row's gradient that would change the row's norm."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec).sum(-1, keepdim=True)
            self.W_dec.grad -= along * self.W_dec

    @torch.no_grad()
    def after_step(self) -> None:
        """Put decoder rows back on the unit sphere."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def init_from_data(self, x: Float[Tensor, "n d"]) -> None:
        """Start the decoder bias at the data mean."""
        self.b_dec.copy_(x.mean(0))

    @torch.no_grad()
    def export(self, scale: float, metadata: SAEMetadata) -> TopKSAE:
        """The sae-lens inference `TopKSAE` for raw (unscaled) activations."""
        cfg = TopKSAEConfig(
            d_in=self.d_in,
            d_sae=self.d_sae,
            k=self.k,
            dtype="float32",
            device=str(self.W_dec.device),
            apply_b_dec_to_input=True,
            normalize_activations="none",
            rescale_acts_by_decoder_norm=False,
            metadata=metadata,
        )
        sae = TopKSAE(cfg)
        sae.load_state_dict(
            {
                "W_enc": self.W_enc_t.T.float().contiguous(),
                "b_enc": self.b_enc.float().clone(),
                "W_dec": self.W_dec.float().clone(),
                "b_dec": self.b_dec.float().clone(),
            }
        )
        sae.fold_activation_norm_scaling_factor(scale)
        return sae


class LensTrainable(nn.Module):
    """A sae-lens `TrainingSAE` (any architecture) trained with its own loss."""

    def __init__(self, sae: TrainingSAE):
        super().__init__()
        self.sae = sae
        self.architecture = sae.cfg.architecture()
        self.d_in, self.d_sae = sae.cfg.d_in, sae.cfg.d_sae
        self.step_index = 0
        self.coefficients = sae.get_coefficients()

    def _coefficient_values(self) -> dict[str, float]:
        values = {}
        for name, spec in self.coefficients.items():
            if isinstance(spec, (int, float)):
                values[name] = float(spec)
            else:
                warm = spec.warm_up_steps
                values[name] = spec.value * min(1.0, (self.step_index + 1) / warm) if warm else spec.value
        return values

    def loss(self, x: Float[Tensor, "b d"], dead: Bool[Tensor, " s"] | None) -> tuple[Tensor, dict[str, Any]]:
        self.sae.train()
        output = self.sae.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients=self._coefficient_values(),
                dead_neuron_mask=dead,
                n_training_steps=self.step_index,
                is_logging_step=False,
            )
        )
        fired = (output.feature_acts != 0).any(0)
        return output.loss, {"mse": output.losses["mse_loss"].detach(), "fired": fired}

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        self.step_index += 1

    @torch.no_grad()
    def init_from_data(self, x: Float[Tensor, "n d"]) -> None:
        self.sae.b_dec.copy_(x.mean(0))

    @torch.no_grad()
    def export(self, scale: float, metadata: SAEMetadata) -> SAE:
        """The sae-lens inference SAE of this architecture, for raw activations."""
        cfg = dict(self.sae.cfg.get_inference_sae_cfg_dict())
        cfg["metadata"] = {**cfg.get("metadata", {}), **metadata.to_dict()}
        sae = SAE.from_dict(cfg)
        state = {name: value.detach().clone() for name, value in self.sae.state_dict().items()}
        self.sae.process_state_dict_for_saving_inference(state)
        sae.load_state_dict(state)
        sae.fold_activation_norm_scaling_factor(scale)
        return sae.to(dtype=torch.float32)
