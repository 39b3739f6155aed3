"""Chapter 3 (scratchformers.attention): the written-out attention equals PyTorch's fused kernel."""
import pytest
import torch
import torch.nn.functional as F

from scratchformers.attention import (ATTN_IMPLEMENTATIONS, MultiHeadAttention, attend, attention_weights, causal_mask,
                                      eager_attention, merge_heads, padding_mask, sdpa_attention, split_heads)

TOL = 1e-6  # fp32


def _qkv(B=3, nh=5, T_q=9, T_k=9, hs=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, nh, T, hs, generator=g) for T in (T_q, T_k, T_k))


def _lengths_mask(lengths, T, left=False):
    "A (B, T) attention_mask with `lengths` real tokens, padded on the right (or left)."
    am = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            am[i, T - n:] = 1
        else:
            am[i, :n] = 1
    return am


def _maxdiff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("B,nh,T,hs", [(1, 1, 1, 1), (2, 3, 7, 10), (3, 5, 13, 6), (2, 12, 33, 64)])
@pytest.mark.parametrize("kind", ["none", "padding", "causal", "causal+padding"])
def test_eager_equals_torch_sdpa(B, nh, T, hs, kind):
    q, k, v = _qkv(B, nh, T, T, hs)
    # right padding: every query keeps at least one key (fully masked rows are tested separately)
    pad = padding_mask(_lengths_mask([max(1, T - i * 3) for i in range(B)], T))
    mask = {"none": None, "padding": pad, "causal": causal_mask(T, T), "causal+padding": pad & causal_mask(T, T)}[kind]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert _maxdiff(eager_attention(q, k, v, mask), ref) <= TOL
    assert _maxdiff(sdpa_attention(q, k, v, mask), ref) <= TOL
    for impl in ATTN_IMPLEMENTATIONS:
        assert _maxdiff(attend(q, k, v, mask, implementation=impl), ref) <= TOL, impl


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
def test_is_causal_flag_equals_explicit_mask(impl):
    q, k, v = _qkv(T_q=8, T_k=8)
    pad = padding_mask(_lengths_mask([8, 5, 2], 8))
    for m in (None, pad):
        explicit = m & causal_mask(8, 8) if m is not None else causal_mask(8, 8)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=explicit)
        assert _maxdiff(attend(q, k, v, m, is_causal=True, implementation=impl), ref) <= TOL


def test_causal_mask_with_cache_offset():
    m = causal_mask(3, 7)
    assert m.shape == (3, 7) and m.dtype == torch.bool
    assert torch.equal(m, causal_mask(7, 7)[4:])
    assert torch.equal(causal_mask(1, 5), torch.ones(1, 5, dtype=torch.bool))
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("T_q", [1, 3, 9])
def test_queries_at_the_end_match_full_causal_attention(impl, T_q):
    q, k, v = _qkv(T_q=9, T_k=9)
    full = attend(q, k, v, is_causal=True, implementation=impl)
    part = attend(q[:, :, -T_q:], k, v, is_causal=True, implementation=impl)
    assert _maxdiff(part, full[:, :, -T_q:]) <= TOL


def test_padding_mask_shape_and_values():
    am = torch.tensor([[1, 1, 0], [1, 0, 0]])
    m = padding_mask(am)
    assert m.shape == (2, 1, 1, 3) and m.dtype == torch.bool
    assert m[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]


def test_split_merge_heads_round_trip():
    x = torch.randn(2, 5, 21)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 7)
    assert torch.equal(h[:, 2], x[..., 14:21])
    assert torch.equal(merge_heads(h), x)


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
def test_fully_masked_rows_are_finite(impl):
    # left padding + causal: the padding queries see no key at all
    T = 6
    q, k, v = _qkv(B=2, T_q=T, T_k=T)
    q.requires_grad_()
    mask = padding_mask(_lengths_mask([6, 3], T, left=True)) & causal_mask(T, T)
    assert not mask[1, 0, 0].any()  # row 0 of sequence 1 is fully masked
    out = attend(q, k, v, mask, implementation=impl)
    assert torch.isfinite(out).all()
    # like Hugging Face's eager path (finfo.min fill): an even average of the values
    assert torch.allclose(out[1, :, 0], v[1].mean(1), atol=TOL)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    # every other row is unaffected by the fill
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert _maxdiff(out[:, :, 3:], ref[:, :, 3:]) <= TOL and _maxdiff(out[0], ref[0]) <= TOL


def test_fully_masked_rows_same_in_both_implementations():
    q, k, v = _qkv(B=2, T_q=6, T_k=6)
    mask = padding_mask(torch.zeros(2, 6, dtype=torch.long))  # nothing may be attended anywhere
    a, b = (attend(q, k, v, mask, implementation=i) for i in ATTN_IMPLEMENTATIONS)
    assert torch.isfinite(a).all() and _maxdiff(a, b) <= TOL


def test_dropout_only_when_asked():
    q, k, v = _qkv()
    torch.manual_seed(0)
    a = eager_attention(q, k, v, dropout_p=0.5)
    b = eager_attention(q, k, v, dropout_p=0.5)
    assert not torch.equal(a, b)  # random
    assert torch.equal(eager_attention(q, k, v), eager_attention(q, k, v))


def test_multihead_attention_dropout_only_in_training():
    mha = MultiHeadAttention(24, 4, attn_pdrop=0.5, resid_pdrop=0.5)
    x = torch.randn(2, 5, 24)
    mha.eval()
    assert torch.equal(mha(x)[0], mha(x)[0])
    mha.train()
    assert not torch.equal(mha(x)[0], mha(x)[0])


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
def test_multihead_attention_cache(impl):
    torch.manual_seed(0)
    mha = MultiHeadAttention(30, 5, implementation=impl).eval()
    x = torch.randn(2, 8, 30)
    full, (k, v), w = mha(x, is_causal=True)
    assert k.shape == v.shape == (2, 5, 8, 6) and w is None
    y1, past, _ = mha(x[:, :5], is_causal=True)
    y2, past, _ = mha(x[:, 5:], is_causal=True, past_key_value=past)
    assert past[0].shape == (2, 5, 8, 6)
    assert _maxdiff(torch.cat([y1, y2], 1), full) <= TOL


def test_multihead_attention_implementations_agree():
    torch.manual_seed(0)
    mha = MultiHeadAttention(36, 6).eval()
    x = torch.randn(3, 7, 36)
    m = padding_mask(_lengths_mask([7, 4, 1], 7))
    outs = []
    for impl in ATTN_IMPLEMENTATIONS:
        mha.implementation = impl
        outs.append(mha(x, m, is_causal=True)[0])
    assert _maxdiff(*outs) <= TOL


def test_bad_input():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        MultiHeadAttention(12, 4, implementation="flash")
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention implementation"):
        attend(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="more queries than keys"):
        causal_mask(5, 4)
    with pytest.raises(ValueError, match="not a multiple"):
        split_heads(torch.randn(1, 2, 10), 4)
    with pytest.raises(ValueError, match="shape"):
        padding_mask(torch.ones(4))


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "causal+padding"])
def test_attention_weights_times_values_is_attention(kind):
    q, k, v = _qkv(T_q=9, T_k=9)
    m = padding_mask(_lengths_mask([9, 5, 1], 9)) if kind.endswith("padding") else None  # no fully masked row
    w = attention_weights(q, k, m, is_causal=kind.startswith("causal"))
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=TOL)
    if kind.startswith("causal"):
        assert (w[..., ~causal_mask(9, 9)] == 0).all()
    ref = attend(q, k, v, m, is_causal=kind.startswith("causal"), implementation="sdpa")
    assert _maxdiff(w @ v, ref) <= TOL


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
def test_multihead_attention_returns_weights_with_cache(impl):
    torch.manual_seed(0)
    mha = MultiHeadAttention(30, 5, implementation=impl).eval()
    x = torch.randn(2, 8, 30)
    full, _, w_full = mha(x, is_causal=True, output_attentions=True)
    ref, _, none = mha(x, is_causal=True)
    assert none is None and _maxdiff(full, ref) <= TOL
    assert w_full.shape == (2, 5, 8, 8)
    _, past, _ = mha(x[:, :5], is_causal=True)
    y2, _, w2 = mha(x[:, 5:], is_causal=True, past_key_value=past, output_attentions=True)
    assert w2.shape == (2, 5, 3, 8)  # the 3 new queries against all 8 keys
    assert _maxdiff(w2, w_full[:, :, 5:]) <= TOL and _maxdiff(y2, full[:, 5:]) <= TOL
