"""Per-row sampling of the batcher: hand-worked draws, and the same filtering as transformers' warpers."""

from __future__ import annotations

import pytest
import torch

from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.sampling import RowSettings, filtered_logits, next_tokens


def settings(*rows: tuple[float, int, float]) -> RowSettings:
    """Rows of (temperature, top_k, top_p)."""
    return RowSettings.stack([SamplingOptions(t, p, k) for t, k, p in rows])


def test_inverse_cdf_draws_by_hand():
    # probabilities 0.5 / 0.3 / 0.2 -> CDF 0.5 / 0.8 / 1.0: u in [0, 0.5) -> 0, [0.5, 0.8) -> 1, [0.8, 1) -> 2
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().repeat(5, 1)
    plain = settings(*[(1.0, 0, 1.0)] * 5)
    uniforms = torch.tensor([0.0, 0.49, 0.5, 0.79, 0.95])
    assert next_tokens(logits, plain, uniforms).tolist() == [0, 0, 1, 1, 2]


def test_temperature_top_k_and_top_p_by_hand():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().repeat(3, 1)
    # top_k 2 keeps 0.5 / 0.3 -> 0.625 / 0.375; top_p 0.5 keeps only the first (mass before it is 0)
    rows = settings((1.0, 2, 1.0), (1.0, 0, 0.5), (0.5, 0, 1.0))
    probs = filtered_logits(logits, rows).softmax(-1)
    assert probs[0].tolist() == pytest.approx([0.625, 0.375, 0.0])
    assert probs[1].tolist() == pytest.approx([1.0, 0.0, 0.0])
    # temperature 0.5 squares the probabilities: 0.25 / 0.09 / 0.04 over 0.38
    assert probs[2].tolist() == pytest.approx([0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38])
    assert next_tokens(logits, rows, torch.tensor([0.7, 0.99, 0.9])).tolist() == [1, 0, 2]  # CDF .66 / .89 / 1


def test_greedy_rows_take_the_argmax_whatever_the_uniform():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    rows = settings((0.0, 20, 0.95), (0.0, 0, 1.0), (1.0, 1, 1.0), (1.5, 1, 0.3), (1.0, 0, 1e-6), (0.0, 0, 0.5))
    for u in (0.0, 0.3, 0.999):
        assert next_tokens(logits, rows, torch.full((6,), u)).tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 20, 0.95), (0.7, 0, 0.9), (1.3, 5, 1.0), (1.0, 0, 0.5)]
)
def test_filtering_matches_transformers_warpers(temperature, top_k, top_p):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(4, 300) * 3
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = filtered_logits(logits, settings(*[(temperature, top_k, top_p)] * 4))
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    assert torch.allclose(got.softmax(-1), expected.softmax(-1), atol=1e-6)


def test_rows_do_not_affect_each_other():
    torch.manual_seed(2)
    logits = torch.randn(3, 100)
    mixed = settings((1.0, 20, 0.95), (0.0, 0, 1.0), (0.6, 3, 0.8))
    alone = [
        filtered_logits(logits[i : i + 1], settings(row))
        for i, row in enumerate([(1.0, 20, 0.95), (0.0, 0, 1.0), (0.6, 3, 0.8)])
    ]
    assert torch.equal(filtered_logits(logits, mixed), torch.cat(alone))


def test_drawn_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    rows = settings((0.8, 3, 0.9))
    expected = filtered_logits(logits, rows).softmax(-1)[0]
    n = 4000
    uniforms = (torch.arange(n) + 0.5) / n  # evenly spread: the counts are exactly the CDF's steps
    drawn = next_tokens(logits.repeat(n, 1), RowSettings.stack([SamplingOptions(0.8, 0.9, 3)] * n), uniforms)
    counts = torch.bincount(drawn, minlength=5).float() / n
    assert counts.tolist() == pytest.approx(expected.tolist(), abs=1e-3)
    assert counts[3:].sum() == 0  # outside the top-k / top-p set
