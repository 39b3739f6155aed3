"""Decoding (chapter 7): parity with `transformers`' generate, cache vs no cache, the logits processors,
seeded sampling, end-of-text stopping and bad input."""
import warnings

import pytest
import torch
import transformers
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from scratchformers.generation import (apply_temperature, check_prompt, check_sampling_args, generate,
                                       next_token_logits, process_logits, sample_token, top_k_filter, top_p_filter)
from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# Tiny random GPT-2s. A larger initializer_range than GPT-2's 0.02 spreads the logits, so the greedy
# choice is never decided by a float-rounding-sized gap and the continuations are not one repeated token.
HF_CONFIGS = {
    "2 layers x 32": dict(vocab_size=97, n_positions=48, n_embd=32, n_layer=2, n_head=4),
    "3 layers x 48, n_inner 80": dict(vocab_size=130, n_positions=40, n_embd=48, n_layer=3, n_head=3, n_inner=80),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module", params=list(HF_CONFIGS))
def pair(request, tmp_path_factory):
    "The same random weights as a `transformers` GPT-2 and as ours."
    torch.manual_seed(len(request.param))
    config = transformers.GPT2Config(**HF_CONFIGS[request.param], initializer_range=0.1,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return hf, GPT2LMHeadModel.from_pretrained(path)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                      initializer_range=0.1)).eval()


def _prompts(vocab_size, B=3, T=5, seed=0):
    return torch.randint(1, vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def _hf_generate(hf, prompts, n, **kw):
    return hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n, **kw)


def _explain(a, b):
    "Where two id tensors first differ, for assertion messages."
    if a.shape != b.shape:
        return f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    rows, cols = (a != b).nonzero(as_tuple=True)
    return f"first difference at row {int(rows[0])}, position {int(cols[0])}" if len(rows) else "identical"


# --- parity with transformers ------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_matches_transformers(pair, use_cache):
    hf, ours = pair
    prompts = _prompts(hf.config.vocab_size)
    n = hf.config.n_positions - prompts.shape[1]  # fill the whole context
    theirs = _hf_generate(hf, prompts, n, do_sample=False, eos_token_id=None)
    mine = generate(ours, prompts, n, use_cache=use_cache)
    assert mine.shape == (3, hf.config.n_positions)
    assert torch.equal(theirs, mine), _explain(theirs, mine)


def test_greedy_with_eos_matches_transformers(pair):
    hf, ours = pair
    prompts = _prompts(hf.config.vocab_size, B=4, seed=1)
    free = generate(ours, prompts, 25)
    eos = int(free[2, 5 + 6])  # a token that row 2 emits at its 7th step
    theirs = _hf_generate(hf, prompts, 25, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    mine = generate(ours, prompts, 25, eos_token_id=eos)
    assert torch.equal(theirs, mine), _explain(theirs, mine)


@pytest.mark.parametrize("kw", [dict(temperature=0.7, top_k=20, top_p=0.9), dict(top_p=0.5), dict(top_k=3),
                                dict(temperature=1.5)])
def test_sampling_matches_transformers_with_the_same_seed(pair, kw):
    # Both draw with torch.multinomial from the global RNG; the same processed distribution and the
    # same seed must give the same tokens.
    hf, ours = pair
    prompts = _prompts(hf.config.vocab_size, B=2, seed=2)
    hf_kw = dict(top_k=0, top_p=1.0, temperature=1.0) | kw  # transformers' default top_k is 50: switch it off
    torch.manual_seed(123)
    theirs = _hf_generate(hf, prompts, 20, do_sample=True, eos_token_id=None, **hf_kw)
    torch.manual_seed(123)
    mine = generate(ours, prompts, 20, do_sample=True, **kw)
    assert torch.equal(theirs, mine), _explain(theirs, mine)


def test_generate_drives_a_transformers_model_too(pair):
    # generate needs only model(ids, past_key_values=, use_cache=) -> .logits, .past_key_values
    hf, _ = pair
    prompts = _prompts(hf.config.vocab_size, B=2, seed=4)
    theirs = _hf_generate(hf, prompts, 12, do_sample=False, eos_token_id=None)
    assert torch.equal(generate(hf, prompts, 12), theirs)
    assert torch.equal(generate(hf, prompts, 12, use_cache=False), theirs)


# --- the cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 7])
def test_cached_and_uncached_greedy_agree(tiny, T):
    prompts = _prompts(50, B=2, T=T, seed=T)
    n = tiny.config.n_positions - T
    a, b = generate(tiny, prompts, n), generate(tiny, prompts, n, use_cache=False)
    assert torch.equal(a, b), _explain(a, b)


def test_cached_logits_equal_full_recomputation(tiny):
    ids = _prompts(50, B=2, T=3)
    with torch.no_grad():
        logits, past = next_token_logits(tiny, ids)
        for _ in range(10):
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            logits, past = next_token_logits(tiny, ids, past)
            full = tiny(ids).logits[:, -1]
            assert torch.allclose(logits, full, atol=1e-5), (logits - full).abs().max()
    assert past[0][0].shape[2] == ids.shape[1]


# --- logits processors -------------------------------------------------------------------------


def _random_logits(seed, B=8, V=200):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * torch.rand(B, 1, generator=g) * 6  # from flat to peaked rows


@pytest.mark.parametrize("k", [1, 2, 17, 199, 200, 500])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = _random_logits(k)
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    expected = torch.zeros_like(kept).scatter(-1, logits.topk(min(k, 200)).indices, True)
    assert torch.equal(kept, expected)
    assert torch.equal(out[kept], logits[kept])  # kept logits are unchanged
    assert torch.equal(kept, torch.isfinite(TopKLogitsWarper(k)(None, logits.clone())))


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert int(torch.isfinite(top_k_filter(logits, 2)).sum()) == 2


@pytest.mark.parametrize("p", [1e-9, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_top_p_set_reaches_p_is_minimal_and_never_empty(p):
    for seed in range(5):
        logits = _random_logits(seed)
        kept = torch.isfinite(top_p_filter(logits, p))
        probs = logits.softmax(-1)
        mass = (probs * kept).sum(-1)
        smallest_kept = probs.masked_fill(~kept, 2.0).min(-1).values
        largest_dropped = probs.masked_fill(kept, -1.0).max(-1).values
        assert (kept.sum(-1) >= 1).all(), "an empty set"
        assert (mass >= p - 1e-6).all(), f"mass {mass.min():.6f} < p={p}"
        assert (mass - smallest_kept < p + 1e-6).all(), "not minimal: dropping the least likely kept token still reaches p"
        assert (largest_dropped <= smallest_kept).all(), "kept a token less likely than a dropped one"
        if p < 1.0:
            assert torch.equal(kept, torch.isfinite(TopPLogitsWarper(p)(None, logits.clone())))


def test_top_p_extremes():
    logits = torch.tensor([[0.0, 5.0, 1.0, -2.0]])
    assert torch.isfinite(top_p_filter(logits, 1e-9)).tolist() == [[False, True, False, False]]  # just the argmax
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
    peaked = torch.tensor([[20.0, 0.0, 0.0]])  # one token holds nearly all the mass
    assert torch.isfinite(top_p_filter(peaked, 0.99)).tolist() == [[True, False, False]]
    after_top_k = top_k_filter(_random_logits(9), 5)  # -inf entries are fine and stay out
    assert (torch.isfinite(top_p_filter(after_top_k, 0.95)).sum(-1) <= 5).all()


def test_temperature_divides_logits():
    logits = _random_logits(3)
    assert torch.allclose(apply_temperature(logits, 0.5), logits * 2)
    assert apply_temperature(logits, 1.0) is logits
    entropy = lambda lg: -(lg.softmax(-1) * lg.log_softmax(-1)).sum(-1)  # noqa: E731
    assert (entropy(apply_temperature(logits, 0.5)) < entropy(logits)).all()
    assert (entropy(apply_temperature(logits, 2.0)) > entropy(logits)).all()


def test_processors_compose_in_transformers_order():
    logits = _random_logits(4)
    expected = logits.clone()
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(30), TopPLogitsWarper(0.8)):
        expected = warper(None, expected)
    ours = process_logits(logits, temperature=0.7, top_k=30, top_p=0.8)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(expected))
    assert torch.allclose(ours.softmax(-1), expected.softmax(-1), atol=1e-6)


def test_sample_token_follows_the_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0, float("-inf"), 0.5]).expand(40_000, 5)
    draws = sample_token(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert freq[3] == 0, "drew a token of probability zero"
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.01), freq


# --- seeds, end-of-text, modes -----------------------------------------------------------------


def test_same_seed_same_samples_and_global_rng_untouched(tiny):
    prompts = _prompts(50)
    draw = lambda seed: generate(tiny, prompts, 15, do_sample=True, top_p=0.95,  # noqa: E731
                                 generator=torch.Generator().manual_seed(seed))
    state = torch.get_rng_state()
    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(torch.get_rng_state(), state), "a seeded generator must not consume the global RNG"
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_eos_stops_each_row_and_pads_with_eos(tiny):
    prompts = _prompts(50, B=4, seed=5)
    seeded = lambda **kw: generate(tiny, prompts, 24, do_sample=True, temperature=2.0,  # noqa: E731
                                   generator=torch.Generator().manual_seed(7), **kw)
    free = seeded()[:, 5:]
    eos = int(free[1, 3])
    out = seeded(eos_token_id=eos)
    new = out[:, 5:]
    assert torch.equal(out[:, :5], prompts)
    stops = []
    for row, got in zip(free, new):
        hits = (row == eos).nonzero()
        end = int(hits[0]) + 1 if len(hits) else len(row)
        stops.append(end)
        assert torch.equal(got[:end], row[:end]), "a row changed before it stopped"
        assert (got[end:] == eos).all(), "a finished row must be padded with eos_token_id"
    assert new.shape[1] == max(stops), "the loop must end when every row has finished"


def test_all_rows_stopping_at_once_ends_the_loop(tiny):
    prompts = _prompts(50, B=3, seed=6)
    first = generate(tiny, prompts, 1)[:, -1]
    same = prompts[:1].expand(3, -1).contiguous()  # three copies of one prompt stop together
    out = generate(tiny, same, 20, eos_token_id=int(first[0]))
    assert out.shape == (3, prompts.shape[1] + 1)


def test_max_new_tokens_zero_returns_the_prompt(tiny):
    prompts = _prompts(50)
    out = generate(tiny, prompts, 0)
    assert torch.equal(out, prompts) and out.data_ptr() != prompts.data_ptr()


def test_output_is_an_ordinary_tensor(tiny):
    prompts = _prompts(50).int()
    out = generate(tiny, prompts, 3)
    assert not out.is_inference() and out.dtype == torch.int32 and out.device == prompts.device
    emb = torch.nn.Embedding(50, 4)
    emb(out.long()).sum().backward()  # usable in a training step afterwards


def test_training_mode_is_restored_even_on_error(tiny):
    tiny.train()
    try:
        generate(tiny, _prompts(50), 2)
        assert tiny.training
        with pytest.raises(ValueError):
            generate(tiny, _prompts(50), 2, eos_token_id=-1)
        assert tiny.training

        class Broken(torch.nn.Module):
            config = tiny.config

            def forward(self, *a, **k):
                raise RuntimeError("boom")

        broken = Broken().train()
        with pytest.raises(RuntimeError, match="boom"):
            generate(broken, _prompts(50), 2)
        assert broken.training
    finally:
        tiny.eval()


def test_dropout_is_off_while_decoding():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                       resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)).train()
    prompts = _prompts(50)
    assert torch.equal(generate(model, prompts, 10), generate(model, prompts, 10))


def test_greedy_warns_about_ignored_sampling_options(tiny):
    with pytest.warns(UserWarning, match="do_sample=True"):
        generate(tiny, _prompts(50), 2, top_k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(tiny, _prompts(50), 2, do_sample=True, top_k=5)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("change, error, match", [
    (dict(input_ids=torch.tensor([1, 2, 3])), ValueError, r"2-D .*ids\[None\]"),
    (dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, "at least one token"),
    (dict(input_ids=torch.zeros(0, 3, dtype=torch.long)), ValueError, "at least one prompt"),
    (dict(input_ids=torch.ones(1, 3)), TypeError, "integer torch.Tensor"),
    (dict(input_ids=[[1, 2, 3]]), TypeError, "integer torch.Tensor"),
    (dict(input_ids=torch.ones(1, 40, dtype=torch.long), max_new_tokens=0), ValueError, "n_positions=32; shorten"),
    (dict(max_new_tokens=30), ValueError, "at most 29 new tokens"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=2.5), ValueError, "max_new_tokens"),
    (dict(input_ids=torch.tensor([[1, 50]])), ValueError, "vocabulary"),
    (dict(input_ids=torch.tensor([[1, -1]])), ValueError, "vocabulary"),
    (dict(do_sample=True, temperature=0), ValueError, "do_sample=False"),
    (dict(do_sample=True, temperature=-1.0), ValueError, "temperature"),
    (dict(do_sample=True, temperature=float("inf")), ValueError, "temperature"),
    (dict(do_sample=True, top_k=0), ValueError, "top_k"),
    (dict(do_sample=True, top_k=2.0), ValueError, "top_k"),
    (dict(do_sample=True, top_p=0.0), ValueError, "top_p"),
    (dict(do_sample=True, top_p=1.5), ValueError, "top_p"),
    (dict(eos_token_id=50), ValueError, "eos_token_id"),
    (dict(eos_token_id="2"), ValueError, "eos_token_id"),
    (dict(generator=0), TypeError, "torch.Generator"),
])
def test_bad_input_is_refused_clearly(tiny, change, error, match):
    args = dict(input_ids=torch.ones(1, 3, dtype=torch.long), max_new_tokens=5) | change
    with pytest.raises(error, match=match):
        generate(tiny, **args)


def test_checks_can_be_called_alone():
    check_prompt(torch.ones(2, 4, dtype=torch.long), 4, n_positions=8, vocab_size=10)  # exactly fills the context
    with pytest.raises(ValueError, match="more than the model's context"):
        check_prompt(torch.ones(2, 4, dtype=torch.long), 5, n_positions=8)
    check_sampling_args(0.5, 1, 1.0)
    with pytest.raises(ValueError):
        check_sampling_args(True, None, None)
