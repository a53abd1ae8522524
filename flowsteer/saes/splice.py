"""`SAEReconstruction`: an intervention that replaces an activation with an SAE's reconstruction."""

from __future__ import annotations

from sae_lens import SAE

from flowsteer.patching.interventions import Activation, Context, Intervention


class SAEReconstruction(Intervention):
    """``h -> decode(encode(h))``: splice an SAE into the model at a patch's site.

    Use it in a `flowsteer.Patch` (e.g. ``positions=range(1, n)`` to leave the attention sink alone).
    """

    def __init__(self, sae: SAE):
        super().__init__()
        self.sae = sae

    @property
    def width(self) -> int:
        return self.sae.cfg.d_in

    def forward(self, activation: Activation, context: Context) -> Activation:
        return self.sae.decode(self.sae.encode(activation)).to(activation.dtype)

    def extra_repr(self) -> str:
        return f"{self.sae.cfg.architecture()} d_sae={self.sae.cfg.d_sae}"
