"""GRVQ behaviour: equivalence with a plain RVQ loop, group independence, exact decode,
variable bitrate, EMA learning, dead-code replacement, dropout and health statistics."""

from __future__ import annotations

import pytest
import torch

from codec.quantization import GroupResidualVQ, VectorQuantizer, codebook_stats
from tests.unit.quantization.two_ranks import on_two_ranks


def make_quantizer(**kwargs) -> GroupResidualVQ:
    settings = dict(dim=16, groups=1, layers=3, codebook_size=32, rule="gradient", kmeans_init=False)
    settings.update(kwargs)
    return GroupResidualVQ(**settings)


def plain_residual_vq(latent: torch.Tensor, codebooks: list[torch.Tensor]) -> torch.Tensor:
    """The textbook RVQ loop: nearest code by Euclidean distance, subtract, repeat."""
    residual = latent.transpose(1, 2)  # [B, T, D]
    codes = []
    for book in codebooks:
        index = torch.cdist(residual, book.expand(residual.shape[0], -1, -1)).argmin(-1)
        codes.append(index)
        residual = residual - book[index]
    return torch.stack(codes, dim=1)


def test_single_group_equals_plain_residual_vq() -> None:
    quantizer = make_quantizer().eval()
    latent = torch.randn(3, 16, 20)
    books = [quantizer.codebook(0, layer).codebook_vectors() for layer in range(3)]
    expected = plain_residual_vq(latent, books)
    assert torch.equal(quantizer(latent).codes, expected)
    assert torch.equal(quantizer.encode(latent), expected)


def test_perturbing_one_group_changes_only_its_codes() -> None:
    quantizer = make_quantizer(dim=24, groups=3, layers=2).eval()
    latent = torch.randn(2, 24, 30)
    codes = quantizer.encode(latent)
    perturbed = latent.clone()
    perturbed[:, 8:16] += 3.0 * torch.randn(2, 8, 30)  # group 1's channels
    new_codes = quantizer.encode(perturbed)
    group_of_code = torch.arange(6) // 2
    changed = (codes != new_codes).flatten(0).view(2, 6, 30).any(dim=2).any(dim=0)
    assert changed[group_of_code == 1].all()
    assert not changed[group_of_code != 1].any()


@pytest.mark.parametrize(
    "rule,codebook_dim,l2", [("gradient", None, False), ("ema", None, False), ("gradient", 4, True)]
)
def test_decode_equals_eval_forward_exactly(rule: str, codebook_dim: int | None, l2: bool) -> None:
    quantizer = make_quantizer(dim=16, groups=2, layers=3, rule=rule, codebook_dim=codebook_dim, l2_normalize=l2).eval()
    latent = torch.randn(2, 16, 25)
    out = quantizer(latent)
    assert out.codes.shape == (2, 6, 25)
    assert torch.equal(quantizer.decode(out.codes), out.quantized)


def test_decoding_fewer_layers_gives_coarser_latent() -> None:
    quantizer = make_quantizer(dim=16, groups=2, layers=3).eval()
    latent = torch.randn(2, 16, 40)
    errors = []
    for n in (1, 2, 3):
        codes = quantizer.encode(latent, n_layers=n)
        assert codes.shape == (2, 2 * n, 40)
        decoded = quantizer.decode(codes)
        assert torch.equal(decoded, quantizer(latent, n_layers=n).quantized)
        errors.append(float((latent - decoded).pow(2).mean().detach()))
    full = quantizer.encode(latent)
    # Codes of the first n layers are a prefix of each group's full codes.
    assert torch.equal(quantizer.encode(latent, n_layers=2), full.view(2, 2, 3, 40)[:, :, :2].reshape(2, 4, 40))
    assert errors[0] > errors[2]
    with pytest.raises(ValueError, match="n_layers=4"):
        quantizer.encode(latent, n_layers=4)


def test_ema_with_kmeans_init_lowers_quantization_error() -> None:
    torch.manual_seed(1)
    codebook = VectorQuantizer(8, codebook_size=16, rule="ema", kmeans_init=True, kmeans_iters=5, decay=0.8)
    centers = 4 * torch.randn(16, 8)
    points = centers[torch.randint(0, 16, (400,))] + 0.1 * torch.randn(400, 8)
    batch = points.T.reshape(1, 8, 400)

    def error() -> float:
        codebook.eval()
        with torch.no_grad():
            out = codebook(batch)
        codebook.train()
        return float((out.quantized - batch).pow(2).mean())

    codebook.train()
    codebook(batch)  # first batch: k-means initialisation
    assert bool(codebook.initialized)
    errors = [error()]
    for _ in range(10):
        codebook(batch)
        errors.append(error())
    assert errors[-1] < errors[0]
    assert errors[-1] < 0.5 * float(batch.pow(2).mean())


def test_unused_code_is_replaced_by_a_batch_vector() -> None:
    codebook = VectorQuantizer(4, codebook_size=8, rule="ema", kmeans_init=False, dead_code_threshold=0.5, decay=0.5)
    batch = torch.randn(1, 4, 64)
    with torch.no_grad():
        codebook.embed[3] = 1e3  # far from every input: never chosen
    codebook.train()
    for _ in range(4):
        codebook(batch)
    vectors = batch[0].T
    distance = torch.cdist(codebook.embed[3:4], vectors).min()
    assert float(codebook.embed[3].abs().max()) < 100
    assert float(distance) < 5.0


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("rule", ["ema", "gradient"])
def test_every_residual_layer_commitment_reaches_the_latent(groups: int, rule: str) -> None:
    """Paper eq. 4: each layer's commitment loss trains the encoder (it was 0 for layers 2..L
    when each layer's output was straight-through and subtracted from the residual)."""
    quantizer = make_quantizer(
        dim=16, groups=groups, layers=3, rule=rule, kmeans_init=True, dead_code_threshold=0.0
    ).train()
    quantizer(torch.randn(4, 16, 20))  # k-means initialisation
    latent = torch.randn(4, 16, 20, requires_grad=True)
    per_codebook = quantizer(latent).losses["commitment_per_codebook"]
    assert per_codebook.shape == (groups * 3,)
    for index in range(groups * 3):
        (gradient,) = torch.autograd.grad(per_codebook[index], latent, retain_graph=True)
        group = index // 3
        group_slice = slice(group * 16 // groups, (group + 1) * 16 // groups)
        assert float(gradient[:, group_slice].norm()) > 1e-4, (
            f"codebook {index} sends no gradient to its group's latent"
        )


@pytest.mark.parametrize("groups", [1, 2])
def test_training_forward_values_match_the_plain_loop(groups: int) -> None:
    """Codes and the decoded latent of a training step equal the textbook loop's for fixed codebooks;
    the decoder's gradient reaches the latent once (one straight-through estimate for the sum)."""
    quantizer = make_quantizer(dim=16, groups=groups, layers=3, rule="gradient", dead_code_threshold=0.0).train()
    latent = torch.randn(2, 16, 12, requires_grad=True)
    out = quantizer(latent)
    width = 16 // groups
    expected_codes, expected_latent = [], []
    for group in range(groups):
        books = [quantizer.codebook(group, layer).codebook_vectors().detach() for layer in range(3)]
        codes = plain_residual_vq(latent[:, group * width : (group + 1) * width].detach(), books)
        expected_codes.append(codes)
        expected_latent.append(sum(books[layer][codes[:, layer]] for layer in range(3)).transpose(1, 2))
    assert torch.equal(out.codes, torch.cat(expected_codes, dim=1))
    assert torch.allclose(out.quantized, torch.cat(expected_latent, dim=1), atol=1e-6)
    assert torch.equal(
        quantizer.eval().decode(out.codes), torch.cat(expected_latent, dim=1).to(out.quantized.dtype)
    ) or torch.allclose(quantizer.decode(out.codes), torch.cat(expected_latent, dim=1), atol=1e-6)
    out.quantized.sum().backward()
    assert torch.allclose(latent.grad, torch.ones_like(latent))


def test_gradient_rule_learns_codebook_and_reports_losses() -> None:
    quantizer = make_quantizer(dim=8, layers=2, kmeans_init=True)
    quantizer.train()
    latent = torch.randn(4, 8, 10, requires_grad=True)
    out = quantizer(latent)
    assert {"commitment", "codebook", "total"} <= set(out.losses)
    out.losses["total"].backward()
    assert quantizer.codebook(0, 0).embed.grad is not None
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    assert torch.allclose(
        out.losses["total"], out.losses["codebook"] + quantizer.commitment_weight * out.losses["commitment"]
    )


def test_straight_through_passes_gradient_to_encoder() -> None:
    quantizer = make_quantizer(dim=8, layers=2).train()
    latent = torch.randn(2, 8, 5, requires_grad=True)
    quantizer(latent).quantized.sum().backward()
    assert torch.allclose(latent.grad, torch.ones_like(latent))


def test_per_item_quantizer_dropout_masks_layers() -> None:
    torch.manual_seed(0)
    quantizer = make_quantizer(dim=8, layers=4, dropout_prob=1.0, dropout_mode="item").train()
    out = quantizer(torch.randn(16, 8, 6))
    active = (out.codes >= 0).all(dim=2)  # [B, L]
    counts = active.sum(dim=1)
    assert (counts >= 1).all() and (counts <= 4).all()
    assert len(set(counts.tolist())) > 1  # items differ
    # Active layers are always a prefix.
    for row, count in zip(active, counts):
        assert row[:count].all() and not row[count:].any()
    quantizer.eval()
    assert (quantizer(torch.randn(2, 8, 6)).codes >= 0).all()


def test_per_batch_quantizer_dropout_uses_one_count() -> None:
    quantizer = make_quantizer(dim=8, layers=4, dropout_prob=1.0, dropout_mode="batch").train()
    out = quantizer(torch.randn(8, 8, 6))
    counts = (out.codes >= 0).all(dim=2).sum(dim=1)
    assert len(set(counts.tolist())) == 1


def test_codebook_stats() -> None:
    codes = torch.tensor([[[0, 1, 2, 3], [0, 0, 0, 0]]])  # codebook 0 uniform over 4, codebook 1 one code
    stats = codebook_stats(codes, codebook_size=8)
    assert torch.allclose(stats["usage"], torch.tensor([0.5, 0.125]))
    assert torch.allclose(stats["perplexity"], torch.tensor([4.0, 1.0]))
    assert torch.equal(stats["dead_codes"], torch.tensor([4.0, 7.0]))
    assert torch.allclose(stats["entropy_bits"], torch.tensor([2.0, 0.0]))


def test_invalid_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="groups=3 does not divide dim=16"):
        GroupResidualVQ(dim=16, groups=3)
    with pytest.raises(ValueError, match="codebook_dim=12"):
        GroupResidualVQ(dim=16, groups=2, codebook_dim=12)
    with pytest.raises(ValueError, match="dropout_mode='sometimes'"):
        GroupResidualVQ(dim=16, dropout_mode="sometimes")


def _ema_on_rank(rank: int) -> dict:
    torch.manual_seed(100 + rank)  # different data and different local randomness per rank
    quantizer = GroupResidualVQ(
        dim=8, groups=2, layers=2, codebook_size=16, rule="ema", kmeans_init=True, dead_code_threshold=0.5
    ).train()
    for _ in range(5):
        quantizer(torch.randn(4, 8, 12) + rank)
    return {k: v.detach().cpu().numpy().copy() for k, v in quantizer.state_dict().items()}


def test_ema_codebooks_stay_identical_across_ranks() -> None:
    states = on_two_ranks(_ema_on_rank)
    for key in states[0]:
        assert (states[0][key] == states[1][key]).all(), key


def test_codes_that_stay_unused_are_redrawn_spread_out_not_in_waves() -> None:
    """The worst case for dead-code replacement: a collapsed latent (a few distinct vectors) that
    can never use most codes. Each unused code is re-drawn at most once per grace period, at
    random phases, so no step re-draws more than a few percent of the codebook after the first."""
    torch.manual_seed(0)
    codebook = VectorQuantizer(8, codebook_size=256, rule="ema", kmeans_init=True, dead_code_threshold=0.4).train()
    centres = torch.randn(3, 8)
    fractions = []
    for _ in range(300):
        batch = centres[torch.randint(0, 3, (100,))] + 0.01 * torch.randn(100, 8)
        fractions.append(float(codebook(batch.T.unsqueeze(0)).replaced) / 256)
    assert max(fractions[50:]) < 0.05, max(fractions[50:])
    assert sum(fractions[50:]) > 0  # dead codes are still re-drawn, just not all at once
