"""SmilesGPT: cached decoding matches full forward, seeded sampling, likelihoods, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import molgen as mg
from molgen.errors import ConfigError, InputError
from molgen.models.gpt import GPTConfig, KVCache, SmilesGPT
from molgen.tokenize import SmilesTokenizer

torch.set_num_threads(1)


def tiny(tok, **kw) -> SmilesGPT:
    torch.manual_seed(0)
    model = SmilesGPT(GPTConfig(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=32, block_size=64, **kw))
    model.tokenizer = tok
    return model.eval()


@pytest.fixture(scope="module")
def tok(real_smiles):
    return SmilesTokenizer.from_smiles(real_smiles)


def _incremental_logits(model, ids, condition=None):
    """Logits from feeding one token at a time through the KV cache."""
    cache = KVCache(model.config, ids.size(0), ids.size(1), ids.device, model.wte.weight.dtype)
    hs = [model._hidden(ids[:, :1], condition, cache, 0)]
    for t in range(1, ids.size(1)):
        hs.append(model._hidden(ids[:, t : t + 1], condition, cache, t))
    return model.lm_head(torch.cat(hs, 1))


@pytest.mark.parametrize("cond_dim, n_kv_head", [(0, None), (3, None), (0, 1), (3, 1)])
def test_cached_and_uncached_decoding_give_the_same_logits(tok, real_smiles, cond_dim, n_kv_head):
    model = tiny(tok, cond_dim=cond_dim, n_kv_head=n_kv_head)
    ids = torch.as_tensor(tok.encode_batch(real_smiles))
    cond = torch.randn(len(ids), 3) if cond_dim else None
    full, _ = model(ids, condition=cond)
    torch.testing.assert_close(_incremental_logits(model, ids, cond), full, atol=1e-5, rtol=1e-4)


def test_generate_with_and_without_cache_samples_the_same(tok):
    model = tiny(tok)
    a = model.generate(16, generator=torch.Generator().manual_seed(3))
    b = model.generate(16, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_same_seed_same_molecules(tok):
    model = tiny(tok)
    first, again, other = mg.sample(model, 50, seed=7), mg.sample(model, 50, seed=7), mg.sample(model, 50, seed=8)
    assert first["smiles"].tolist() == again["smiles"].tolist()
    assert first["smiles"].tolist() != other["smiles"].tolist()
    assert list(first.columns) == ["smiles", "valid", "log_likelihood"]


def test_workers_and_start_batch_do_not_change_the_molecules(tok):
    import pandas as pd

    model = tiny(tok)
    one = mg.sample(model, 40, seed=7, batch_size=8, workers=1)
    assert one.equals(mg.sample(model, 40, seed=7, batch_size=8, workers=2))
    continued = pd.concat([mg.sample(model, 16, seed=7, batch_size=8), mg.sample(model, 24, seed=7, batch_size=8, start_batch=2)])
    assert continued.reset_index(drop=True).equals(one)
    with pytest.raises(InputError, match="workers must be"):
        mg.sample(model, 4, workers=0)
    with pytest.raises(InputError, match="batch_size must be a whole number >= 1"):
        mg.sample(model, 4, batch_size=0)


def test_rows_stop_at_their_own_end_token(tok):
    model = tiny(tok)
    ids, logp, finished = model.generate(64, generator=torch.Generator().manual_seed(0))
    ends = []
    for row, done in zip(ids.tolist(), finished.tolist(), strict=True):
        if done:
            end = row.index(tok.eos_id)
            assert all(t == tok.pad_id for t in row[end + 1 :])
            assert tok.pad_id not in row[:end]
            ends.append(end)
        else:  # ran to the context without an end: every position written
            assert tok.eos_id not in row and tok.pad_id not in row
    assert len(ends) >= 32 and len(set(ends)) >= 10  # most rows end, each at its own length


def test_sampled_logp_is_the_model_likelihood(tok):
    model = tiny(tok)
    ids, logp, finished = model.generate(40, temperature=0.7, top_k=10, generator=torch.Generator().manual_seed(1))
    assert finished.sum() >= 10
    smiles = [tok.decode(row) for row, done in zip(ids.tolist(), finished, strict=True) if done]
    # logp is measured at temperature 1 without filtering, so it must equal an independent scoring
    np.testing.assert_allclose(logp[finished].numpy(), model.log_likelihood(smiles), rtol=1e-4, atol=1e-3)


def test_bf16_sampling_is_seeded_and_its_logp_close_to_the_float32_likelihood(tok, real_smiles, monkeypatch):
    import importlib

    sampling = importlib.import_module("molgen.sample")  # the module: molgen.sample is also mg.sample, the function

    model = tiny(tok).train()  # briefly trained, so that sampled molecules end
    ids = torch.as_tensor(tok.encode_batch(real_smiles))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        model(ids[:, :-1], ids[:, 1:])[1].backward()
        opt.step()
    model.eval()
    bf16, again, fp32 = (mg.sample(model, 64, seed=2, precision=p) for p in ("bf16", "bf16", "fp32"))
    assert bf16.smiles.tolist() == again.smiles.tolist()
    ended = bf16[bf16.valid]
    assert len(ended) >= 10 and fp32.valid.sum() >= 10
    exact = model.log_likelihood(ended.smiles.tolist())
    np.testing.assert_allclose(ended.log_likelihood.to_numpy(), exact, atol=0.1)
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16"):
        mg.sample(model, 2, precision="fp16")
    assert sampling.native_bf16("cuda") and not sampling.native_bf16("meta")
    sampling._cpu_flags.cache_clear()
    monkeypatch.setattr(sampling.Path, "read_text", lambda self: "processor : 0\nflags : fpu avx512f avx512_bf16 sse\n")
    assert sampling.native_bf16("cpu")
    monkeypatch.setattr(sampling.Path, "read_text", lambda self: "flags : fpu avx2\n")
    sampling._cpu_flags.cache_clear()
    assert not sampling.native_bf16("cpu")
    sampling._cpu_flags.cache_clear()


def test_top_k_one_is_greedy(tok):
    model = tiny(tok)
    greedy = model.generate(4, temperature=0.0)[0]
    top1 = model.generate(4, top_k=1, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(greedy, top1)


def test_top_p_keeps_only_the_nucleus():
    from molgen.models.gpt import _sample_next

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    draws = {int(_sample_next(logits, 1.0, None, 0.8, torch.Generator().manual_seed(s))) for s in range(200)}
    assert draws == {0, 1}


def test_loss_decreases_when_training_on_real_molecules(tok, real_smiles):
    model = tiny(tok).train()
    ids = torch.as_tensor(tok.encode_batch(real_smiles))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resize_vocab_appends_mean_rows_and_keeps_old_ones(tok):
    model = tiny(tok)
    old = model.wte.weight.detach().clone()
    model.resize_vocab(len(tok) + 2)
    assert model.lm_head.weight is model.wte.weight
    torch.testing.assert_close(model.wte.weight[: len(old)], old)
    torch.testing.assert_close(model.wte.weight[-1], old.mean(0))
    with pytest.raises(ConfigError, match="shrink"):
        model.resize_vocab(3)


def test_conditional_model_needs_and_uses_its_condition(tok):
    model = tiny(tok, cond_dim=2)
    with pytest.raises(ValueError, match="conditional"):
        mg.sample(model, 2)
    ids = torch.as_tensor(tok.encode_batch(["CCO"]))
    a, _ = model(ids, condition=torch.tensor([[0.0, 0.0]]))
    b, _ = model(ids, condition=torch.tensor([[5.0, -5.0]]))
    assert not torch.allclose(a, b)
    # sampling passes the condition to the model: it changes the draws' likelihoods, which are the
    # model's likelihoods under that condition and not under another
    one, other, again = (mg.sample(model, 32, condition=c, seed=0) for c in ([1.0, 2.0], [5.0, -5.0], [1.0, 2.0]))
    assert one.equals(again) and len(one) == 32
    assert not np.allclose(one.log_likelihood, other.log_likelihood)
    ended = one[one.valid]
    assert len(ended) >= 3
    under = {c: model.log_likelihood(ended.smiles.tolist(), condition=list(c)) for c in ((1.0, 2.0), (5.0, -5.0))}
    np.testing.assert_allclose(ended.log_likelihood, under[(1.0, 2.0)], rtol=1e-4, atol=1e-3)
    assert not np.allclose(ended.log_likelihood, under[(5.0, -5.0)], rtol=1e-4, atol=1e-3)


def test_sample_without_tokenizer_is_a_clear_error(tok):
    model = tiny(tok)
    model.tokenizer = None
    with pytest.raises(ConfigError, match="no tokenizer"):
        mg.sample(model, 1)


def test_bad_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="multiple of n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="must divide n_head"):
        GPTConfig(n_embd=32, n_head=4, n_kv_head=3)


def test_shared_key_value_heads_shrink_the_cache_and_match_repeated_full_heads(tok, real_smiles):
    """One key/value head for two query heads is the same function as two heads holding copies of it."""
    shared = tiny(tok, n_kv_head=1)
    full = tiny(tok)
    state = shared.state_dict()
    C, D = 32, 16
    for i in range(2):  # c_attn rows: [q (C), k (D), v (D)] -> [q, k, k, v, v] for two full heads
        for part in ("weight", "bias"):
            w = state[f"blocks.{i}.attn.c_attn.{part}"]
            q, k, v = w.split((C, D, D))
            state[f"blocks.{i}.attn.c_attn.{part}"] = torch.cat([q, k, k, v, v])
    full.load_state_dict(state)
    ids = torch.as_tensor(tok.encode_batch(real_smiles))
    torch.testing.assert_close(shared(ids)[0], full(ids)[0], atol=1e-5, rtol=1e-4)
    assert KVCache(shared.config, 4, 10, "cpu", torch.float32).k[0].shape == (4, 1, 10, D)
    assert mg.sample(shared, 20, seed=1)["smiles"].tolist() == mg.sample(shared, 20, seed=1)["smiles"].tolist()


@pytest.mark.gpu
def test_cuda_bf16_sampling_is_seeded_and_matches_the_uncached_path(tok):
    model = tiny(tok).to("cuda")
    a, b = mg.sample(model, 64, seed=4, device="cuda"), mg.sample(model, 64, seed=4, device="cuda")
    assert a["smiles"].tolist() == b["smiles"].tolist()
    ids = torch.as_tensor(tok.encode_batch(["CC(=O)Oc1ccccc1C(=O)O", "CCO"]), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        full, _ = model(ids)
        inc = _incremental_logits(model, ids)
    torch.testing.assert_close(inc.float(), full.float(), atol=5e-2, rtol=5e-2)
