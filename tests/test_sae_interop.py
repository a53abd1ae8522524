"""SAELens interop, both ways, checked on outputs: `encode` and `decode` agree to 1e-5 on random inputs.

flowsteer -> sae-lens: an SAE as flowsteer trains it (`SparseTopK`, or a sae-lens training SAE behind
`LensTrainable`), on inputs scaled by the training scale, exported, saved in a bank and read back by
``sae_lens.SAE.load_from_disk``. The reference is the trainer's own arithmetic on the scaled input.

sae-lens -> flowsteer: sae-lens SAEs built in this process with random weights (every parameter non-zero,
decoder rows not of unit norm, TopK's decoder-norm rescaling on), saved with ``save_model`` and read by
`SAEBank.load`. The reference is each architecture's formula written out below, not sae-lens's code.
"""

from __future__ import annotations

import pytest
import torch
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata

from flowsteer.saes import SAEBank, SparseTopK
from flowsteer.saes.sparse import decode as sparse_decode
from flowsteer.saes.sparse import encode_at, sort_index
from flowsteer.saes.trainable import LensTrainable
from flowsteer.sites import Site

D, S, K = 24, 96, 5
SCALE = 0.37  # the input scale training used: exports must fold it into the weights
TOL = dict(atol=1e-5, rtol=1e-5)


def inputs(seed: int, n: int = 64) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 3.0


def round_trip_through_sae_lens(sae: SAE, site: Site, tmp_path) -> SAE:
    path = SAEBank({site: sae}).save(tmp_path / "bank")
    return SAE.load_from_disk(path / site.hook_name)


def test_flowsteer_topk_read_by_sae_lens_encodes_and_decodes_as_trained(tmp_path):
    gen = torch.Generator().manual_seed(0)
    trainer = SparseTopK(D, S, K, generator=gen)
    with torch.no_grad():
        trainer.b_enc.normal_(0, 0.3, generator=gen)
        trainer.b_dec.normal_(0, 0.5, generator=gen)
    site = Site(1)
    loaded = round_trip_through_sae_lens(trainer.export(SCALE, SAEMetadata(hook_name=site.hook_name)), site, tmp_path)
    assert isinstance(loaded, TopKSAE) and loaded.cfg.k == K and not loaded.cfg.rescale_acts_by_decoder_norm

    x = inputs(1)
    with torch.no_grad():  # the trainer's own forward pass, on the scaled input it was trained on
        scaled = x * SCALE
        index = sort_index(trainer.pre_activations(scaled).topk(K, dim=-1).indices)
        values = encode_at(scaled - trainer.b_dec, trainer.W_enc_t, trainer.b_enc, index).relu()
        expected_acts = torch.zeros(len(x), S).scatter(1, index, values)
        expected_recon = (sparse_decode(values, trainer.W_dec, index) + trainer.b_dec) / SCALE
        acts = loaded.encode(x)
        torch.testing.assert_close(acts, expected_acts, **TOL)
        torch.testing.assert_close(loaded.decode(acts), expected_recon, **TOL)
        assert int((acts > 0).sum(-1).max()) == K


def test_flowsteer_jumprelu_read_by_sae_lens_keeps_its_threshold(tmp_path):
    torch.manual_seed(0)
    training = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=D, d_sae=S, jumprelu_init_threshold=0.5))
    with torch.no_grad():
        training.b_enc.normal_(0, 0.3)
        training.b_dec.normal_(0, 0.5)
        training.W_dec.mul_(1.7)
        training.threshold.copy_(torch.rand(S) * 0.8 + 0.1)  # a different threshold per latent
    site = Site(2, "mlp_out")
    exported = LensTrainable(training).export(SCALE, SAEMetadata(hook_name=site.hook_name))
    loaded = round_trip_through_sae_lens(exported, site, tmp_path)
    assert isinstance(loaded, JumpReLUSAE)

    x = inputs(2)
    with torch.no_grad():
        training.eval()
        expected_acts = training.encode(x * SCALE)
        acts = loaded.encode(x)
        assert 0 < int((acts > 0).sum()) < acts.numel()  # the threshold cuts some latents, not all
        torch.testing.assert_close(acts, expected_acts, **TOL)
        torch.testing.assert_close(loaded.decode(acts), training.decode(expected_acts) / SCALE, **TOL)


def _randomise(sae: SAE, seed: int) -> SAE:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                param.copy_(torch.rand(param.shape, generator=gen) * 0.8 + 0.1)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * (0.5 if name.startswith("b_") else 1.0))
    return sae.eval()


def _expected(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature activations and the decode of them, from the architecture's formula."""
    W_enc, b_enc, W_dec, b_dec = (getattr(sae, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    pre = (x - b_dec) @ W_enc + b_enc
    norms = W_dec.norm(dim=-1)
    if isinstance(sae, TopKSAE):
        pre = pre * norms if sae.cfg.rescale_acts_by_decoder_norm else pre
        top = pre.topk(sae.cfg.k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        weights = acts / norms if sae.cfg.rescale_acts_by_decoder_norm else acts
        return acts, weights @ W_dec + b_dec
    acts = pre.relu()
    if isinstance(sae, JumpReLUSAE):
        acts = acts * (pre > sae.threshold.detach())
    return acts, acts @ W_dec + b_dec


SAE_LENS_SAES = {
    "topk_rescaled": lambda: TopKSAE(TopKSAEConfig(d_in=D, d_sae=S, k=K, rescale_acts_by_decoder_norm=True)),
    "topk": lambda: TopKSAE(TopKSAEConfig(d_in=D, d_sae=S, k=K)),
    "standard": lambda: StandardSAE(StandardSAEConfig(d_in=D, d_sae=S)),
    "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=S)),
}


@pytest.mark.parametrize("name", list(SAE_LENS_SAES))
def test_sae_lens_sae_loaded_by_flowsteer_encodes_and_decodes_the_same(name, tmp_path):
    original = _randomise(SAE_LENS_SAES[name](), seed=len(name))
    original.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    original.save_model(tmp_path / "saes" / name)
    bank = SAEBank.load(tmp_path / "saes")
    assert bank.sites == [Site(3)]
    ours = bank["3/res"]
    assert type(ours) is type(original) and ours.cfg.to_dict() == original.cfg.to_dict()  # k, rescaling, ...
    assert ours.state_dict().keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = inputs(3)
    with torch.no_grad():
        expected_acts, expected_recon = _expected(original, x)
        assert 0 < int((expected_acts > 0).sum()) < expected_acts.numel()
        for sae in (original, ours):
            acts = sae.encode(x)
            torch.testing.assert_close(acts, expected_acts, **TOL)
            torch.testing.assert_close(sae.decode(acts), expected_recon, **TOL)
