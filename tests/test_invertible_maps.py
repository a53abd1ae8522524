"""Bijections on random tensors: exact inverses, log-dets against autograd, the i-ResNet Lipschitz bound."""

from __future__ import annotations

import pytest
import torch

from flowsteer.invertible import (
    ActNorm,
    AffineCoupling,
    Composition,
    Identity,
    IResBlock,
    Orthogonal,
    Permutation,
    build_bijection,
    coupling_flow,
    data_init,
    iresnet_map,
    orthogonal_map,
    refresh_spectral_norms,
)

D = 6


def bijections(d: int = D):
    torch.manual_seed(0)
    actnorm = ActNorm(d)
    data_init(actnorm, torch.randn(50, d) * 3 + 1)
    coupling = AffineCoupling(d, hidden=16)
    with torch.no_grad():  # a fresh coupling is the identity: give it a real scale and shift
        coupling.conditioner[-1].weight.normal_(0, 0.5)
    return {
        "identity": Identity(d),
        "actnorm": actnorm,
        "orthogonal": Orthogonal(d),
        "permutation": Permutation(d, seed=3),
        "coupling": coupling,
        "iresnet": IResBlock(d, hidden=16, activation="lipswish"),
        "composition": Composition([ActNorm(d), IResBlock(d, hidden=8), AffineCoupling(d, 8), Permutation(d)]),
    }


@pytest.mark.parametrize("name", list(bijections()))
def test_inverse_is_exact(name):
    bijection = bijections()[name].double().eval()
    x = torch.randn(40, D, dtype=torch.float64) * 5
    with torch.no_grad():
        z = bijection(x)
        back = bijection.inverse(z)
    relative = (back - x).norm(dim=-1) / x.norm(dim=-1)
    assert relative.max() < 1e-10, float(relative.max())
    if name not in ("identity",):
        assert not torch.allclose(z, x), "a bijection under test should not be the identity"


@pytest.mark.parametrize("name", list(bijections()))
def test_log_det_matches_autograd_jacobian(name):
    bijection = bijections()[name].double().eval()
    x = torch.randn(5, D, dtype=torch.float64)
    _, log_det = bijection.forward_and_log_det(x)
    for row, value in zip(x, log_det, strict=True):
        jacobian = torch.autograd.functional.jacobian(bijection, row)
        assert torch.allclose(value, torch.linalg.slogdet(jacobian).logabsdet, atol=1e-8)


def test_iresnet_series_log_det_estimates_the_exact_one():
    block = IResBlock(D, hidden=16).double().eval()
    x = torch.randn(3, D, dtype=torch.float64)
    exact = block.exact_log_det(x)
    series = block.series_log_det(x, terms=20, samples=3000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(series, exact, atol=0.03), (series, exact)


@pytest.mark.parametrize("activation", ["elu", "lipswish"])
def test_iresnet_lipschitz_bound_holds_via_spectral_norms_and_empirically(activation):
    torch.manual_seed(1)
    block = IResBlock(16, hidden=32, n_hidden=2, coeff=0.7, activation=activation).double()
    for _ in range(20):  # weights move as in training; one power iteration per step tracks them
        with torch.no_grad():
            for p in block.parameters():
                p.add_(0.05 * torch.randn_like(p))
        block.train()(torch.randn(4, 16, dtype=torch.float64))
    refresh_spectral_norms(block)
    block.eval()
    bound = block.lipschitz_bound()
    assert bound <= 0.7 * (1 + 1e-6), bound
    x, y = torch.randn(2, 2000, 16, dtype=torch.float64)
    with torch.no_grad():
        ratios = (block.residual(x) - block.residual(y)).norm(dim=-1) / (x - y).norm(dim=-1)
    assert ratios.max() <= bound
    jacobian = torch.autograd.functional.jacobian(block.residual, x[0])
    assert torch.linalg.matrix_norm(jacobian, ord=2) <= bound + 1e-9


def test_iresnet_inverse_reports_residual_and_warns_when_capped():
    block = IResBlock(D, hidden=16, coeff=0.9, max_iter=2).double().eval()
    y = torch.randn(10, D, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="raise max_iter"):
        block.inverse(y)
    report = block.last_inverse
    assert report.iterations == 2 and not report.converged and report.residual > 1e-12
    block.max_iter = 200
    block.inverse(y)
    assert block.last_inverse.converged and block.last_inverse.residual <= 1e-12


def test_iresnet_inverse_has_exact_implicit_gradients():
    block = IResBlock(4, hidden=8).double().eval()
    y = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block.inverse, (y,))
    weight = block.net[0].parametrizations.weight.original

    def loss():
        return block.inverse(y.detach()).pow(3).sum()

    (grad,) = torch.autograd.grad(loss(), weight)
    eps = 1e-6
    with torch.no_grad():
        weight[1, 2] += eps
        up = loss().item()
        weight[1, 2] -= 2 * eps
        down = loss().item()
        weight[1, 2] += eps
    assert abs((up - down) / (2 * eps) - grad[1, 2].item()) < 1e-6


def test_actnorm_data_init_standardises():
    x = torch.randn(500, D) * torch.arange(1, D + 1) + 7
    actnorm = data_init(ActNorm(D), x)
    z = actnorm(x)
    assert torch.allclose(z.mean(0), torch.zeros(D), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(D), atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        ActNorm(D).data_init(torch.randn(1, D))


def test_data_init_sees_each_layer_input():
    flow = Composition([ActNorm(D), Permutation(D, seed=1), ActNorm(D)])
    data_init(flow, torch.randn(200, D) * 4 - 2)
    second = flow.layers[2]
    assert bool(second.initialized)
    assert torch.allclose(second.log_scale, torch.zeros(D), atol=1e-4)  # its input was already standardised


@pytest.mark.parametrize(
    ("factory", "kwargs"), [(iresnet_map, {"hidden": 8}), (coupling_flow, {"hidden": 8}), (orthogonal_map, {})]
)
def test_config_rebuilds_the_same_map(factory, kwargs):
    original = factory(D, seed=4, **kwargs)
    data_init(original, torch.randn(30, D))
    rebuilt = build_bijection(original.config()).to(torch.float64)
    rebuilt.load_state_dict(original.state_dict())
    original.eval(), rebuilt.eval()
    x = torch.randn(7, D, dtype=torch.float64)
    assert torch.equal(original(x), rebuilt(x))
    assert factory(D, seed=4, **kwargs).config() == original.config()


def test_factories_are_seeded_and_float64_by_default():
    a, b, c = coupling_flow(D, seed=1), coupling_flow(D, seed=1), coupling_flow(D, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.layers[2].order, c.layers[2].order)
    assert next(a.parameters()).dtype == torch.float64


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match=r"coeff must be in \(0, 1\)"):
        IResBlock(D, coeff=1.0)
    with pytest.raises(ValueError, match="share d"):
        Composition([Identity(3), Identity(4)])
    with pytest.raises(ValueError, match="maps vectors of size 6"):
        Identity(D)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="not orthogonal"):
        Orthogonal(3, weight=torch.ones(3, 3))
    with pytest.raises(ValueError, match="unknown bijection type"):
        build_bijection({"type": "Nope"})
