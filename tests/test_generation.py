"""Decoding (chapter 7): parity with `transformers`' generate (left-padded batches included), cache vs no
cache, the logits processors, seeded sampling, end-of-text stopping, the text helpers and bad input."""
import warnings

import pytest
import torch
import transformers
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from scratchformers.bert import BertConfig, BertForPreTraining
from scratchformers.generation import (FROM_CONFIG, apply_temperature, check_attention_mask, check_prompt,
                                       check_sampling_args, fill_mask, generate, generate_text, left_pad,
                                       next_token_logits, positions_from_mask, process_logits, sample_token,
                                       top_k_filter, top_p_filter)
from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel
from scratchformers.tokenization import GPT2_EOS, train_bytelevel_bpe, train_wordpiece

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
    return GPT2LMHeadModel(GPT2Config.tiny(vocab_size=50, initializer_range=0.1,
                                           eos_token_id=None)).eval()


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
    mine = generate(ours, prompts, n, use_cache=use_cache, eos_token_id=None)
    assert mine.shape == (3, hf.config.n_positions)
    assert torch.equal(theirs, mine), _explain(theirs, mine)


def test_greedy_with_eos_matches_transformers(pair):
    hf, ours = pair
    prompts = _prompts(hf.config.vocab_size, B=4, seed=1)
    free = generate(ours, prompts, 25, eos_token_id=None)
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
    mine = generate(ours, prompts, 20, do_sample=True, eos_token_id=None, **kw)
    assert torch.equal(theirs, mine), _explain(theirs, mine)


def test_generate_drives_a_transformers_model_too(pair):
    # generate needs only model(ids, past_key_values=, use_cache=) -> .logits, .past_key_values
    hf, _ = pair
    prompts = _prompts(hf.config.vocab_size, B=2, seed=4)
    theirs = _hf_generate(hf, prompts, 12, do_sample=False, eos_token_id=None)
    assert torch.equal(generate(hf, prompts, 12, eos_token_id=None), theirs)
    assert torch.equal(generate(hf, prompts, 12, use_cache=False, eos_token_id=None), theirs)


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
    model = GPT2LMHeadModel(GPT2Config.tiny(vocab_size=50, resid_pdrop=0.5, embd_pdrop=0.5,
                                            attn_pdrop=0.5, eos_token_id=None)).train()
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


# --- left-padded batches (issue 12) --------------------------------------------------------------


def _padded_batch(vocab_size, lengths=(5, 2, 8), seed=0):
    "Three prompts of different lengths, left-padded with 0: input_ids and attention_mask (3, 8)."
    g = torch.Generator().manual_seed(seed)
    return left_pad([torch.randint(1, vocab_size, (n,), generator=g).tolist() for n in lengths], 0)


SETTINGS = {
    "greedy": dict(do_sample=False),
    "sampling t=0.7 k=20 p=0.9": dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9),
    "sampling t=1.3 p=0.8": dict(do_sample=True, temperature=1.3, top_p=0.8),
    "sampling, 2 per prompt": dict(do_sample=True, top_k=10, num_return_sequences=2),
}


@pytest.mark.parametrize("whose", ["ours", "transformers'"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_left_padded_batch_matches_transformers(pair, whose, setting):
    # eos and pad come from the config on both sides (both 0); sampling draws from the global RNG.
    hf, ours = pair
    model = ours if whose == "ours" else hf
    ids, mask = _padded_batch(hf.config.vocab_size)
    kw = SETTINGS[setting]
    torch.manual_seed(11)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=25, **(dict(top_k=None) | kw))
    torch.manual_seed(11)
    mine = generate(model, ids, 25, attention_mask=mask, **kw)
    assert torch.equal(theirs, mine), _explain(theirs, mine)
    assert mine.shape[0] == 3 * kw.get("num_return_sequences", 1)


@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_greedy_with_eos_and_pad_matches_transformers(pair, use_cache):
    hf, ours = pair
    ids, mask = _padded_batch(hf.config.vocab_size, seed=3)
    free = generate(ours, ids, 25, attention_mask=mask, eos_token_id=None)
    eos = int(free[1, 8 + 4])  # a token that row 1 emits at its 5th step
    pad = (eos + 1) % hf.config.vocab_size  # a pad different from eos shows where rows were padded
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=25, do_sample=False, eos_token_id=eos,
                         pad_token_id=pad)
    for model in (ours, hf):
        mine = generate(model, ids, 25, attention_mask=mask, eos_token_id=eos, pad_token_id=pad,
                        use_cache=use_cache)
        assert torch.equal(theirs, mine), _explain(theirs, mine)
    first = 8 + int((free[1, 8:] == eos).nonzero()[0])  # where row 1 first emits it
    assert mine[1, first] == eos and (mine[1, first + 1:] == pad).all()


def test_padded_rows_decode_as_if_alone(pair):
    _, ours = pair
    seqs = [[5, 9, 14], [7], [3, 3, 8, 2, 6]]
    ids, mask = left_pad(seqs, pad_token_id=0)
    batch = generate(ours, ids, 15, attention_mask=mask, eos_token_id=None)
    for row, seq in zip(batch, seqs):
        alone = generate(ours, torch.tensor([seq]), 15, eos_token_id=None)[0]
        assert torch.equal(row[-len(alone):], alone), _explain(row[-len(alone):], alone)


def test_model_generate_method_is_generate(pair):
    # GPT2LMHeadModel.generate (helper "models") is a thin method over scratchformers.generation.generate
    hf, ours = pair
    ids, mask = _padded_batch(hf.config.vocab_size, seed=5)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=10), theirs)


def test_left_pad_and_positions_follow_transformers():
    ids, mask = left_pad([[4, 5, 6], [7], [8, 9]], pad_token_id=2)
    assert ids.tolist() == [[4, 5, 6], [2, 2, 7], [2, 8, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert positions_from_mask(mask).tolist() == [[0, 1, 2], [1, 1, 0], [1, 0, 1]]
    holes = torch.tensor([[0, 1, 0, 1, 1]])  # transformers' own formula, holes in the middle included
    expected = holes.long().cumsum(-1) - 1
    expected.masked_fill_(holes == 0, 1)
    assert torch.equal(positions_from_mask(holes.bool()), expected)
    with pytest.raises(ValueError, match="no empty"):
        left_pad([[1], []], 0)


def test_an_all_ones_mask_changes_nothing(tiny):
    prompts = _prompts(50)
    assert torch.equal(generate(tiny, prompts, 8, attention_mask=torch.ones_like(prompts, dtype=torch.bool)),
                       generate(tiny, prompts, 8))


@pytest.mark.parametrize("mask, error, match", [
    (torch.ones(3, 4, dtype=torch.long), ValueError, r"attention_mask has shape \(3, 4\) but input_ids \(3, 5\)"),
    (torch.ones(5, dtype=torch.long), ValueError, "attention_mask has shape"),
    (torch.full((3, 5), 2), ValueError, "only 0"),
    (torch.tensor([[1, 1, 1, 1, 0]] * 3), ValueError, "on the left"),
    ([[1] * 5] * 3, TypeError, "torch.Tensor"),
])
def test_bad_attention_mask_is_refused(tiny, mask, error, match):
    with pytest.raises(error, match=match):
        generate(tiny, _prompts(50), 3, attention_mask=mask)
    if isinstance(mask, torch.Tensor) and mask.shape == (3, 5):
        with pytest.raises(error, match=match):
            check_attention_mask(mask, _prompts(50))


# --- num_return_sequences ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, 1.5, "2"])
def test_bad_num_return_sequences_is_refused(tiny, n):
    with pytest.raises(ValueError, match="num_return_sequences must be an integer >= 1"):
        generate(tiny, _prompts(50), 3, do_sample=True, num_return_sequences=n)


def test_num_return_sequences_repeats_each_prompt(tiny):
    prompts = _prompts(50, B=2)
    out = generate(tiny, prompts, 10, do_sample=True, num_return_sequences=3,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 15)
    assert torch.equal(out[:, :5], prompts.repeat_interleave(3, dim=0))
    assert len({tuple(r) for r in out[:3, 5:].tolist()}) > 1, "three samples of one prompt all equal"
    with pytest.raises(ValueError, match="do_sample=True"):
        generate(tiny, prompts, 3, num_return_sequences=2)


# --- defaults from the config, eos/pad ids (issues 11, 12) ---------------------------------------


def test_eos_and_pad_default_to_the_config(tmp_path):
    torch.manual_seed(3)
    config = transformers.GPT2Config(vocab_size=40, n_positions=40, n_embd=32, n_layer=2, n_head=4,
                                     initializer_range=0.1, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    ours = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, mask = _padded_batch(40, seed=1)
    free = generate(ours, ids, 25, attention_mask=mask)  # the config has no eos: no stopping
    assert free.shape[1] == 8 + 25
    eos = int(free[0, 8 + 3])
    ours.config.eos_token_id = hf.generation_config.eos_token_id = eos
    hf.generation_config.pad_token_id = pad = (eos + 7) % 40
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=25, do_sample=False)
    assert torch.equal(generate(hf, ids, 25, attention_mask=mask), theirs)  # eos and pad from HF's config
    mine = generate(ours, ids, 25, attention_mask=mask)  # our config has no pad: it is eos
    assert torch.equal(mine, generate(ours, ids, 25, attention_mask=mask, eos_token_id=eos, pad_token_id=eos))
    assert mine[0, 8 + 3] == eos and (mine[0, 8 + 4:] == eos).all()
    assert torch.equal(generate(ours, ids, 25, attention_mask=mask, eos_token_id=None), free)  # None: off
    assert repr(FROM_CONFIG) == "FROM_CONFIG"


def test_an_eos_outside_the_vocabulary_is_refused_but_loads(tmp_path):
    model = GPT2LMHeadModel(GPT2Config.tiny(vocab_size=50))
    assert model.config.eos_token_id == 50256  # GPT-2's id, which this vocabulary lacks
    model.save_pretrained(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path)  # loading keeps working
    with pytest.raises(ValueError, match=r"model.config.eos_token_id=50256 is not a token id .*\[0, 50\)"):
        generate(loaded, _prompts(50), 3)
    with pytest.raises(ValueError, match=r"^eos_token_id=60 is not a token id"):
        generate(loaded, _prompts(50), 3, eos_token_id=60)
    with pytest.raises(ValueError, match="pad_token_id=-2"):
        generate(loaded, _prompts(50), 3, eos_token_id=1, pad_token_id=-2)
    assert generate(loaded, _prompts(50), 3, eos_token_id=None).shape == (3, 8)
    assert generate(loaded, _prompts(50), 3, eos_token_id=7).shape[0] == 3


def test_temperature_zero_is_fine_for_greedy(tiny):
    prompts = _prompts(50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no noise either
        assert torch.equal(generate(tiny, prompts, 6, temperature=0), generate(tiny, prompts, 6))
        assert torch.equal(generate(tiny, prompts, 6, temperature=0.0, do_sample=False), generate(tiny, prompts, 6))
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny, prompts, 6, temperature=-1)


def test_no_warning_when_pad_defaults_to_eos(pair):
    _, ours = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(ours, *_padded_batch(ours.config.vocab_size)[:1], 4,
                 attention_mask=_padded_batch(ours.config.vocab_size)[1])


# --- what generate refuses to drive (issue 11) ---------------------------------------------------


class _NoLogits(torch.nn.Module):
    "Takes the arguments of a causal LM but returns a plain tensor."
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=8, n_layer=1, n_head=1, eos_token_id=None)

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False, position_ids=None):
        return torch.zeros(*input_ids.shape, 50)


@pytest.mark.parametrize("make, use_cache, match", [
    (lambda: BertForPreTraining(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32)), True, "BertForPreTraining.forward takes no "
                                                                           "past_key_values"),
    (lambda: BertForPreTraining(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32)), False, "without next-token .logits"),
    (lambda: transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)), True,
     "BertForPreTraining is not a causal language model"),
    (lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)), False,
     "BertForMaskedLM is not a causal language model"),
    (lambda: torch.nn.Linear(4, 4), True, "Linear.forward takes no past_key_values"),
    (lambda: _NoLogits(), False, "returned Tensor without next-token .logits"),
    (lambda: "gpt2", True, "must be an nn.Module, got str"),
])
def test_a_model_that_is_not_a_causal_lm_is_refused(make, use_cache, match):
    with pytest.raises(TypeError, match=match) as info:
        generate(make(), _prompts(50), 3, use_cache=use_cache, eos_token_id=None)
    assert "\n" not in str(info.value) and "fill_mask" in str(info.value) or "nn.Module" in str(info.value)


def test_nan_logits_stop_with_an_error(tiny):
    broken = GPT2LMHeadModel(tiny.config)
    broken.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    for kw in (dict(), dict(do_sample=True), dict(use_cache=False)):
        with pytest.raises(FloatingPointError, match=r"NaN at decoding step 1 \(rows \[0, 1, 2\]\)"):
            generate(broken, _prompts(50), 5, **kw)

    class NanLater(torch.nn.Module):  # healthy for two steps, then NaN in one row
        config = tiny.config

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, input_ids, **kw):
            out = tiny(input_ids, **kw)
            self.calls += 1
            if self.calls == 3:
                out.logits[1] = float("nan")
            return out

    with pytest.raises(FloatingPointError, match=r"step 3 \(rows \[1\]\)"):
        generate(NanLater(), _prompts(50), 5)


# --- the text layer: generate_text and fill_mask --------------------------------------------------

TEXTS = ["the movie was great and the acting was good", "the film was bad and the story was boring",
         "i loved the music and the actors", "a long movie with a weak story", "great acting, bad plot"] * 20


@pytest.fixture(scope="module")
def bpe():
    return train_bytelevel_bpe(TEXTS, vocab_size=300, show_progress=False)


@pytest.fixture(scope="module")
def lm(bpe):
    torch.manual_seed(1)
    eos = bpe.token_to_id(GPT2_EOS)
    return GPT2LMHeadModel(GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                                      n_head=2, initializer_range=0.2, eos_token_id=eos, bos_token_id=eos)).eval()


def test_generate_text_batches_left_padded_and_stops_at_eos(lm, bpe):
    prompts = ["the movie", "a", "i loved the music and"]
    eos = lm.config.eos_token_id
    texts = generate_text(lm, bpe, prompts, 20)
    alone = [generate_text(lm, bpe, p, 20)[0] for p in prompts]
    assert texts == alone
    for prompt, text in zip(prompts, texts):  # by hand: eos first, then the prompt's ids
        ids = torch.tensor([[eos] + bpe.encode(prompt).ids])
        row = generate(lm, ids, 20)[0, ids.shape[1]:].tolist()
        row = row[:row.index(eos)] if eos in row else row
        assert text == prompt + bpe.decode(row)
    continuations = generate_text(lm, bpe, prompts, 20, full_text=False)
    assert [p + c for p, c in zip(prompts, continuations)] == texts


def test_generate_text_cuts_at_the_first_eos(lm, bpe):
    prompt = "the film was"
    ids = torch.tensor([bpe.encode(prompt).ids])
    free = generate(lm, ids, 15, eos_token_id=None)[0, ids.shape[1]:].tolist()
    stop = free[4]  # declare the 5th new token the end of the text
    text = generate_text(lm, bpe, prompt, 15, eos_token_id=stop, full_text=False, prepend_eos=False)
    assert text == [bpe.decode(free[:free.index(stop)])]


def test_generate_text_samples_with_a_seed_and_takes_hf_tokenizers(lm, bpe):
    draw = lambda tok: generate_text(lm, tok, ["the", "a long"], 12, do_sample=True,  # noqa: E731
                                     num_return_sequences=2, generator=torch.Generator().manual_seed(0))
    a = draw(bpe)
    assert len(a) == 4 and a[0].startswith("the") and a[2].startswith("a long")
    assert draw(transformers.PreTrainedTokenizerFast(tokenizer_object=bpe)) == a


@pytest.mark.parametrize("tok, prompts, error, match", [
    ("bpe", [], TypeError, "non-empty list of strings"),
    ("bpe", ["ok", 3], TypeError, "non-empty list of strings"),
    ("bpe", 7, TypeError, "non-empty list of strings"),
    ("vocab", ["the"], TypeError, "tokenizers.Tokenizer"),
])
def test_generate_text_refuses_bad_input(lm, bpe, tok, prompts, error, match):
    with pytest.raises(error, match=match):
        generate_text(lm, bpe if tok == "bpe" else bpe.get_vocab(), prompts, 5)


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece(TEXTS, vocab_size=300, min_frequency=1, show_progress=False)


@pytest.fixture(scope="module")
def berts(wordpiece, tmp_path_factory):
    "A tiny random BERT as ours and as transformers' (same weights)."
    torch.manual_seed(2)
    ours = BertForPreTraining(BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, initializer_range=0.2)).eval()
    path = tmp_path_factory.mktemp("bert")
    ours.save_pretrained(path)
    return ours, transformers.BertForPreTraining.from_pretrained(path).eval()


def test_fill_mask_gives_the_top_k_of_each_mask(berts, wordpiece):
    ours, hf = berts
    text = "the [MASK] was great and the [MASK] was good"
    got = fill_mask(ours, wordpiece, text, top_k=4)
    assert len(got) == 2 and all(len(g) == 4 for g in got)
    enc = wordpiece.encode(text)
    where = [i for i, t in enumerate(enc.ids) if t == wordpiece.token_to_id("[MASK]")]
    with torch.no_grad():
        probs = hf(torch.tensor([enc.ids])).prediction_logits[0, where].softmax(-1)  # transformers' model
    for guesses, p in zip(got, probs):
        top = p.topk(4)
        assert [t for t, _ in guesses] == [wordpiece.id_to_token(i) for i in top.indices.tolist()]
        assert torch.allclose(torch.tensor([q for _, q in guesses]), top.values, atol=1e-5)
    theirs = fill_mask(hf, wordpiece, text, top_k=4)  # transformers' model through the same helper
    assert [[t for t, _ in g] for g in theirs] == [[t for t, _ in g] for g in got]


def test_fill_mask_on_a_transformers_masked_lm(berts, wordpiece, tmp_path):
    ours, _ = berts
    ours.save_pretrained(tmp_path)
    mlm = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()  # .logits instead of .prediction_logits
    text = "i loved the [MASK]"
    assert [t for t, _ in fill_mask(mlm, wordpiece, text)[0]] == [t for t, _ in fill_mask(ours, wordpiece, text)[0]]


def test_fill_mask_restores_training_mode(berts, wordpiece):
    ours, _ = berts
    ours.train()
    try:
        a = fill_mask(ours, wordpiece, "the [MASK]")
        assert ours.training and a == fill_mask(ours, wordpiece, "the [MASK]")  # dropout was off
    finally:
        ours.eval()


@pytest.mark.parametrize("model, tok, text, top_k, error, match", [
    ("bert", "wordpiece", "no mask here", 5, ValueError, "no \\[MASK\\]"),
    ("bert", "wordpiece", "the [MASK]", 0, ValueError, "top_k"),
    ("bert", "wordpiece", 5, 5, TypeError, "text must be a string"),
    ("bert", "bpe", "the [MASK]", 5, ValueError, "no \\[MASK\\] token"),
    ("gpt2", "wordpiece", "the [MASK]", 5, TypeError, "GPT2LMHeadModel is not a masked language model"),
    ("bert", "wordpiece", "the [MASK] " + "word " * 600, 5, ValueError, "reads at most 512"),
])
def test_fill_mask_refuses_bad_input(berts, wordpiece, bpe, lm, model, tok, text, top_k, error, match):
    models = {"bert": berts[0], "gpt2": lm}
    with pytest.raises(error, match=match):
        fill_mask(models[model], {"wordpiece": wordpiece, "bpe": bpe}[tok], text, top_k=top_k)
