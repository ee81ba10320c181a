"""SimVQ, residual FSQ, BSQ/LFQ and the rotation trick: what each promises, on the built object,
and codebooks that stay identical across two gloo ranks under DDP."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from codec.quantization import GroupResidualVQ
from codec.quantization.bsq import BinarySphericalQuantizer
from codec.quantization.fsq import FiniteScalarQuantizer
from codec.quantization.grvq import rotate_onto
from tests.unit.quantization.two_ranks import on_two_ranks


def test_the_rotation_trick_gives_the_code_and_rotates_the_gradient() -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 6, requires_grad=True)
    q = torch.randn(5, 6)
    out = rotate_onto(z, q)
    assert torch.allclose(out, q, atol=1e-5)
    # Per vector the Jacobian is lambda * R with R a rotation taking z's direction onto q's.
    jacobian = torch.autograd.functional.jacobian(lambda v: rotate_onto(v, q[0]), z[0].detach())
    scale = q[0].norm() / z[0].norm()
    rotation = jacobian / scale
    assert torch.allclose(rotation @ rotation.T, torch.eye(6), atol=1e-5)
    assert torch.allclose(rotation @ (z[0] / z[0].norm()), q[0] / q[0].norm(), atol=1e-5)
    assert torch.det(rotation) > 0  # a rotation, not a reflection


def test_rotation_and_straight_through_differ_only_in_the_gradient() -> None:
    torch.manual_seed(1)
    latent = torch.randn(2, 8, 10)
    results = {}
    for estimator in ("ste", "rotation"):
        torch.manual_seed(2)
        quantizer = GroupResidualVQ(8, 2, 2, 16, rule="gradient", kmeans_init=False, gradient_estimator=estimator)
        x = latent.clone().requires_grad_(True)
        out = quantizer.train()(x)
        out.quantized.pow(2).sum().backward()
        results[estimator] = (out.quantized.detach(), x.grad)
    assert torch.allclose(results["ste"][0], results["rotation"][0], atol=1e-5)
    assert not torch.allclose(results["ste"][1], results["rotation"][1], atol=1e-3)
    with pytest.raises(ValueError, match="gradient_estimator"):
        GroupResidualVQ(8, gradient_estimator="straight")


def test_simvq_learns_one_map_and_moves_every_code() -> None:
    torch.manual_seed(3)
    quantizer = GroupResidualVQ(8, 1, 2, 32, rule="simvq", kmeans_init=False, dead_code_threshold=0.0).train()
    book = quantizer.codebook(0, 0)
    basis = book.embed.clone()
    before = book.codebook_vectors().detach().clone()
    assert [name for name, _ in book.named_parameters()] == ["code_map.weight"]
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        out = quantizer(torch.randn(4, 8, 12) * 3)
        out.losses["total"].backward()
        optimizer.step()
    after = book.codebook_vectors().detach()
    assert torch.equal(book.embed, basis), "the random basis is frozen"
    moved = (after - before).norm(dim=1)
    assert bool((moved > 1e-4).all()), "every code moves with the map, used or not"
    assert quantizer.facts()["rule"] == "simvq"
    with pytest.raises(ValueError, match="kmeans_init=false"):
        GroupResidualVQ(8, rule="simvq", kmeans_init=True)


def test_residual_fsq_adds_exact_bits_and_each_layer_refines() -> None:
    torch.manual_seed(4)
    quantizer = FiniteScalarQuantizer(16, levels=[5, 5, 5], groups=2, layers=4).eval()
    assert quantizer.bits_per_frame() == pytest.approx(2 * 4 * math.log2(125))
    assert quantizer.bits_per_frame(n_layers=2) == pytest.approx(2 * 2 * math.log2(125))
    latent = torch.randn(3, 16, 9)
    codes = quantizer.encode(latent)
    assert codes.shape == (3, 8, 9) and 0 <= int(codes.min()) and int(codes.max()) < 125
    decoded = {n: quantizer.decode(quantizer.encode(latent, n_layers=n)) for n in (1, 2, 3, 4)}
    for n, value in decoded.items():
        assert torch.allclose(value, quantizer(latent, n_layers=n).quantized, atol=1e-5)
    # Each layer refines what the ones before it left: the distance to the full depth shrinks.
    gaps = [float((decoded[n] - decoded[4]).abs().mean()) for n in (1, 2, 3)]
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps
    one_layer = FiniteScalarQuantizer(16, levels=[5, 5, 5], groups=2, layers=1)
    one_layer.load_state_dict(quantizer.state_dict())
    assert torch.equal(one_layer.eval().encode(latent), quantizer.encode(latent, n_layers=1))


@pytest.mark.parametrize("spherical", [True, False])
def test_binary_codes_are_exact_and_spread_by_the_entropy_term(spherical: bool) -> None:
    torch.manual_seed(5)
    quantizer = BinarySphericalQuantizer(16, bits=6, groups=2, spherical=spherical)
    assert quantizer.bits_per_frame() == 12.0 and quantizer.codebook_shapes() == [(64, 6), (64, 6)]
    latent = torch.randn(4, 16, 25)
    codes = quantizer.eval().encode(latent)
    assert codes.shape == (4, 2, 25) and 0 <= int(codes.min()) and int(codes.max()) < 64
    assert torch.allclose(quantizer.decode(codes), quantizer(latent).quantized, atol=1e-5)
    # Minimising the entropy term from a collapsed start spreads the batch over more codes.
    collapsed = latent * 0.1 + 1.0
    before = len(quantizer.encode(collapsed).unique())
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=0.05)
    quantizer.train()
    for _ in range(100):
        optimizer.zero_grad()
        out = quantizer(collapsed)
        out.losses["entropy"].backward()
        optimizer.step()
    after = len(quantizer.eval().encode(collapsed).unique())
    assert after > 4 * before, (before, after)


DDP_QUANTIZERS = {
    "simvq": lambda: GroupResidualVQ(8, 1, 2, 16, rule="simvq", kmeans_init=False, dead_code_threshold=0.0),
    # EMA codebooks with a factorized lookup: their projections give DDP parameters to reduce.
    "ema": lambda: GroupResidualVQ(8, 2, 2, 16, codebook_dim=2, rule="ema", kmeans_init=True, dead_code_threshold=0.5),
    "bsq": lambda: BinarySphericalQuantizer(8, bits=4, groups=2),
}


def _every_quantizer_under_ddp(rank: int) -> dict:
    return {name: _train_under_ddp(make, rank) for name, make in DDP_QUANTIZERS.items()}


def _train_under_ddp(make, rank: int) -> dict:
    torch.manual_seed(100 + rank)  # different initial draws, data and local randomness per rank
    model = DistributedDataParallel(make().train())  # rank 0's weights and buffers reach every rank
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        out = model(torch.randn(4, 8, 12) + rank)
        (out.losses["total"] + out.quantized.pow(2).mean()).backward()
        optimizer.step()
    return {k: v.detach().cpu().numpy().copy() for k, v in model.module.state_dict().items()}


def test_two_gloo_ranks_keep_identical_codebooks_under_ddp() -> None:
    states = on_two_ranks(_every_quantizer_under_ddp)
    for name in DDP_QUANTIZERS:
        for key in states[0][name]:
            assert (states[0][name][key] == states[1][name][key]).all(), f"{name}: {key} differs across ranks"
    simvq_map = states[0]["simvq"]["codebooks.0.code_map.weight"]
    assert simvq_map.shape == (8, 8)
