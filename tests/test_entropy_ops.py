"""Chunked entropies from logits: full-vocabulary and SIREN's nucleus entropy, against slow references
(loops over positions and vocabulary), hand-computed values, edge cases, and chunking invariance."""

import math

import pytest
import torch

from trainers.entropy.ops import linear_quantile, nucleus_entropy, token_entropy

from _entropy_batches import full_entropy_reference, loop_over_positions, nucleus_entropy_reference


@pytest.fixture
def random_logits():
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)[:, None, None]
    return torch.randn(4, 5, 13, generator=generator, dtype=torch.float64) * scale


def test_token_entropy_matches_loop_reference(random_logits):
    expected = loop_over_positions(full_entropy_reference, random_logits)
    torch.testing.assert_close(token_entropy(random_logits, chunk_size=7), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("top_p,top_k", [(0.8, 10000), (0.95, 10000), (0.5, 10000), (0.9, 4), (0.99, 13), (0.3, 2)])
def test_nucleus_entropy_matches_loop_reference(random_logits, top_p, top_k):
    # (top_p = 1.0 is left out: whether the last token "crosses" 1.0 depends on float rounding.)
    expected = loop_over_positions(lambda row: nucleus_entropy_reference(row, top_p, top_k), random_logits)
    got = nucleus_entropy(random_logits, top_p=top_p, top_k=top_k, chunk_size=6)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_nucleus_entropy_gradient_matches_loop_reference(random_logits):
    weights = torch.randn(random_logits.shape[:-1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = random_logits.clone().requires_grad_(True)
    (nucleus_entropy(fast, 0.8, 10000, chunk_size=3) * weights).sum().backward()
    slow = random_logits.clone().requires_grad_(True)
    (loop_over_positions(lambda row: nucleus_entropy_reference(row, 0.8, 10000), slow) * weights).sum().backward()
    torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-8, atol=1e-10)
    assert fast.grad.abs().sum() > 0


def test_nucleus_entropy_hand_computed():
    # p = (0.5, 0.3, 0.2): cumulative 0.5, 0.8, 1.0.
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    # top_p = 0.9: the crossing token is the third (c = 1.0 >= 0.9) -> nucleus {0.5, 0.3} -> q = (0.625, 0.375)
    expected = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
    assert nucleus_entropy(logits, top_p=0.9).item() == pytest.approx(expected, abs=1e-9)
    # top_p = 0.6: the second token crosses (0.8 >= 0.6) -> nucleus {0.5} alone -> H = 0
    assert nucleus_entropy(logits, top_p=0.6).item() == pytest.approx(0.0, abs=1e-9)
    # top_k = 1 caps the search: the top-K mass never reaches 0.9, so all K tokens form the nucleus -> H = 0
    assert nucleus_entropy(logits, top_p=0.9, top_k=1).item() == pytest.approx(0.0, abs=1e-9)
    # top_k = 2, top_p = 0.95: mass 0.8 never reaches 0.95 -> the two tokens form the nucleus
    assert nucleus_entropy(logits, top_p=0.95, top_k=2).item() == pytest.approx(expected, abs=1e-9)


def test_top1_probability_at_least_top_p_gives_zero_nucleus_entropy_and_zero_gradient():
    logits = torch.tensor([[6.0, 0.0, 0.0, 0.0], [0.0, 0.2, 0.1, 0.3]], dtype=torch.float64, requires_grad=True)
    top1 = torch.softmax(logits, -1).max(-1).values
    assert top1[0] >= 0.95 and top1[1] < 0.95
    entropy = nucleus_entropy(logits, top_p=0.95)
    assert entropy[0].item() == 0.0
    assert entropy[1].item() > 0.0
    entropy[0].backward()
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("function", ["token", "nucleus"])
def test_chunking_gives_identical_values_and_gradients(function):
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(3, 7, 29, generator=generator) * 2.0
    weights = torch.randn(3, 7, generator=generator)

    def run(chunk_size):
        logits = base.clone().requires_grad_(True)
        if function == "token":
            values = token_entropy(logits, chunk_size=chunk_size)
        else:
            values = nucleus_entropy(logits, top_p=0.8, top_k=20, chunk_size=chunk_size)
        (values * weights).sum().backward()
        return values.detach(), logits.grad

    reference_values, reference_grad = run(10_000)
    for chunk_size in (1, 3):
        values, grad = run(chunk_size)
        torch.testing.assert_close(values, reference_values, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad, reference_grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(token_entropy(base, 1) if function == "token" else nucleus_entropy(base, 0.8, 20, 1),
                                   reference_values, rtol=1e-6, atol=1e-6)


def test_bfloat16_logits_are_computed_in_float32():
    logits = torch.randn(2, 3, 17, generator=torch.Generator().manual_seed(4))
    got = token_entropy(logits.bfloat16(), chunk_size=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, token_entropy(logits.bfloat16().float()), rtol=0, atol=0)


def test_invalid_arguments_name_the_argument():
    logits = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="top_p"):
        nucleus_entropy(logits, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        nucleus_entropy(logits, top_p=1.5)
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(logits, chunk_size=0)


def test_linear_quantile_matches_torch_quantile_on_both_paths():
    values = torch.randn(1_000_003, generator=torch.Generator().manual_seed(5))
    for q in (0.0, 0.2, 0.8, 0.999):
        expected = torch.quantile(values[:1000], q)
        assert linear_quantile(values[:1000], q).item() == pytest.approx(expected.item(), abs=1e-6)
        ordered = values.double().sort().values
        position = q * (values.numel() - 1)
        low = int(position)
        high = min(low + 1, values.numel() - 1)
        by_hand = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
        assert linear_quantile(values, q).item() == pytest.approx(by_hand.item(), abs=1e-5)


def test_fused_logprobs_and_entropy_equal_the_separate_functions():
    import torch
    from trainers.entropy.ops import token_entropy, token_logprobs, token_logprobs_and_entropy

    g = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 5, 11, generator=g) * 3
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    for chunk_size in (1, 4, 1024):
        logp, entropy = token_logprobs_and_entropy(logits, tokens, chunk_size)
        assert torch.allclose(logp, token_logprobs(logits, tokens, chunk_size), atol=1e-6)
        assert torch.allclose(entropy, token_entropy(logits, chunk_size), atol=1e-6)


def test_minus_infinity_logits_give_finite_entropies_and_gradients():
    """Top-k masking or banned ids put -inf in the logits: those entries have p = 0 and add nothing
    (0 log 0 = 0) to the entropy or its gradient, instead of turning them into NaN."""
    from trainers.entropy.ops import token_logprobs, token_logprobs_and_entropy

    generator = torch.Generator().manual_seed(4)
    finite = torch.randn(3, 4, 9, generator=generator, dtype=torch.float64)
    banned = torch.zeros_like(finite, dtype=torch.bool)
    banned[..., 6:] = True                      # three banned ids everywhere
    banned[0, 1, 1:6] = True                    # and a position where only id 0 is left (H = 0)
    logits = finite.masked_fill(banned, float("-inf"))
    expected = torch.stack([full_entropy_reference(row[~mask]) if (~mask).sum() > 1 else row.new_zeros(())
                            for row, mask in zip(finite.reshape(-1, 9), banned.reshape(-1, 9))]).reshape(3, 4)
    leaf = logits.clone().requires_grad_(True)
    entropy = token_entropy(leaf, chunk_size=5)
    torch.testing.assert_close(entropy.detach(), expected, rtol=1e-10, atol=1e-12)
    entropy.sum().backward()
    assert torch.isfinite(leaf.grad).all() and (leaf.grad[banned] == 0).all()
    tokens = torch.zeros(3, 4, dtype=torch.long)   # id 0 is never banned
    logp, fused_entropy = token_logprobs_and_entropy(logits, tokens, chunk_size=5)
    torch.testing.assert_close(fused_entropy, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logp, token_logprobs(logits, tokens, chunk_size=5), check_dtype=False)
    assert torch.isfinite(logp).all()
    assert torch.isfinite(nucleus_entropy(logits, top_p=0.8, top_k=9, chunk_size=5)).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_token_logprobs_values_and_gradients_match_autograd_reference(dtype):
    """The chunked log-prob (which rebuilds each chunk's softmax in the backward pass instead of keeping
    float32 copies) against plain autograd through log_softmax in float64."""
    from trainers.entropy.ops import token_logprobs

    g = torch.Generator().manual_seed(11)
    base = torch.randn(3, 7, 13, generator=g, dtype=torch.float64) * 3
    base[0, 0, 5] = float("-inf")                       # a banned id that is never sampled
    tokens = torch.randint(0, 5, (3, 7), generator=g)
    upstream = torch.randn(3, 7, generator=g, dtype=torch.float64)
    reference_leaf = base.to(dtype).double().requires_grad_(True)
    expected = torch.log_softmax(reference_leaf, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (expected * upstream).sum().backward()
    tolerance = {torch.float64: 1e-6, torch.float32: 1e-6, torch.bfloat16: 1e-5}[dtype]
    for chunk_size in (1, 4, 1024):
        leaf = base.to(dtype).requires_grad_(True)
        logp = token_logprobs(leaf, tokens, chunk_size)
        assert logp.dtype == torch.float32
        torch.testing.assert_close(logp.double(), expected.detach(), rtol=tolerance, atol=tolerance)
        (logp * upstream.float()).sum().backward()
        assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad).all()
        torch.testing.assert_close(leaf.grad.double(), reference_leaf.grad,
                                   rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-2 if dtype == torch.bfloat16 else 1e-6)


def _bytes_saved_for_backward(fn, logits):
    """Bytes autograd keeps for the backward pass of ``fn(logits)``, not counting ``logits`` itself (kept
    by the model anyway)."""
    saved = []

    def pack(tensor):
        if tensor.data_ptr() != logits.data_ptr():
            saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(logits)
    return sum(saved)


@pytest.mark.parametrize("name", ["token_logprobs", "token_entropy", "nucleus_entropy"])
def test_with_grad_only_the_logits_are_kept_for_backward_not_float32_blocks(name):
    """bf16 logits [n, V] with grad: autograd keeps the logits and O(n) numbers per position, never a float32
    [chunk, V] block per chunk (at 152k vocabulary x 3k tokens those blocks would be twice the logits)."""
    from trainers.entropy.ops import token_logprobs

    n, vocab = 12, 50
    logits = torch.randn(n, vocab).bfloat16().requires_grad_(True)
    tokens = torch.randint(0, vocab, (n,))
    fn = {"token_logprobs": lambda x: token_logprobs(x, tokens, chunk_size=4),
          "token_entropy": lambda x: token_entropy(x, chunk_size=4),
          "nucleus_entropy": lambda x: nucleus_entropy(x, 0.8, 10, chunk_size=4)}[name]
    assert _bytes_saved_for_backward(fn, logits) <= 2 * n * 8
