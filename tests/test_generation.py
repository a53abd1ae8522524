"""generate_with_patches on the tiny model: stock parity, KV-cache positions, seeds, fast paths."""

from __future__ import annotations

import torch

from flowsteer import tiny_model
from flowsteer.models.decode import uses_fast_decode
from flowsteer.models.fastpath import uses_forward_layouts
from flowsteer.patching import (
    AddVector,
    EffectLog,
    Function,
    Patch,
    encode,
    generate_with_patches,
    run_with_patches,
)
from flowsteer.patching.generate import sample_next

PROMPTS = ["Once upon a time", "Hi", "The quick brown fox jumps"]


def stock_greedy(model, prompts, n):
    tokens = model.generate(
        prompts, max_new_tokens=n, do_sample=False, verbose=False, stop_at_eos=False, return_type="tokens"
    )
    return tokens[:, -n:].tolist()


def test_greedy_generation_equals_stock_transformerlens(tiny):
    assert uses_fast_decode(tiny) and uses_forward_layouts(tiny)
    generated = generate_with_patches(tiny, PROMPTS, max_new_tokens=12, stop_at_eos=False)
    assert generated.tokens == stock_greedy(tiny, PROMPTS, 12)
    single = generate_with_patches(tiny, PROMPTS[1], max_new_tokens=12, stop_at_eos=False)
    assert single.tokens[0] == stock_greedy(tiny, PROMPTS[1], 12)[0]


def test_patched_generation_equals_recomputing_without_a_cache(tiny):
    """With a KV cache each step sees one new column; the patch must still hit the right positions."""
    vector = torch.randn(64) * 4
    patches = [
        Patch("1/res", AddVector(vector), "generated"),
        Patch("0/mlp", AddVector(-vector), [-1]),
        Patch("2/att", AddVector(vector / 2), "prompt"),
    ]
    n = 8
    cached = generate_with_patches(tiny, PROMPTS, patches, max_new_tokens=n, stop_at_eos=False).tokens
    batch = encode(tiny, PROMPTS)
    tokens, mask = batch.tokens, batch.attention_mask
    lengths = batch.prompt_lengths
    for _ in range(n):
        # positions beyond each prompt count as generated: rebuild a batch whose prompt lengths are
        # the original ones by running with explicit per-step masks through a Function patch.
        def shifted(intervention, where):
            def fn(activation, context):
                positions = context.positions
                if where == "generated":
                    keep = positions >= lengths[:, None]
                elif where == "prompt":
                    keep = (positions >= 0) & (positions < lengths[:, None])
                else:
                    keep = positions == (lengths[:, None] - 1)
                return torch.where(keep[..., None], intervention(activation, context), activation)

            return Function(fn)

        manual = [Patch(p.site, shifted(p.intervention, p.positions if isinstance(p.positions, str) else "last"))
                  for p in patches]
        from flowsteer.patching import TokenBatch

        logits = run_with_patches(tiny, TokenBatch(tokens, mask), manual)
        next_token = logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], 1)
        mask = torch.cat([mask, torch.ones_like(next_token)], 1)
    assert cached == tokens[:, -n:].tolist()


def test_patch_changes_generation_and_steps_see_one_new_column(tiny):
    steps = []

    def spy(activation, context):
        steps.append((context.step, tuple(activation.shape[:2])))
        return activation

    plain = generate_with_patches(tiny, PROMPTS, max_new_tokens=5, stop_at_eos=False)
    generate_with_patches(tiny, PROMPTS, [Patch("0/res", spy)], max_new_tokens=5, stop_at_eos=False)
    width = encode(tiny, PROMPTS).tokens.shape[1]
    assert steps == [(0, (3, width))] + [(k, (3, 1)) for k in range(1, 5)]
    steered = generate_with_patches(
        tiny, PROMPTS, [Patch("1/res", AddVector(torch.randn(64) * 20))], max_new_tokens=5, stop_at_eos=False
    )
    assert steered.tokens != plain.tokens


def test_sampling_is_seeded(tiny):
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.3, top_p=0.9, stop_at_eos=False)
    a = generate_with_patches(tiny, PROMPTS, seed=7, **kwargs)
    b = generate_with_patches(tiny, PROMPTS, seed=7, **kwargs)
    c = generate_with_patches(tiny, PROMPTS, seed=8, **kwargs)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]]).repeat(200, 1)
    gen = torch.Generator().manual_seed(0)
    top_k = sample_next(logits, do_sample=True, top_k=2, generator=gen)
    assert set(top_k.tolist()) <= {0, 1}
    top_p = sample_next(logits, do_sample=True, top_p=0.5, generator=gen)
    assert set(top_p.tolist()) == {0}


def test_stop_at_eos_cuts_each_sequence_at_its_own_first_stop_token(tiny):
    n = 8
    plain = generate_with_patches(tiny, PROMPTS, max_new_tokens=n, stop_at_eos=False).tokens
    stops = [plain[0][2], plain[1][5]]  # two "EOS" ids the model does emit: rows stop at different steps
    out = generate_with_patches(tiny, PROMPTS, max_new_tokens=n, eos_token_id=stops)
    expected = [row[: next((i for i, t in enumerate(row) if t in stops), n)] for row in plain]
    assert out.tokens == expected
    assert len(out.tokens[0]) <= 2 and len({len(row) for row in out.tokens}) > 1
    assert out.texts == [tiny.tokenizer.decode(row, skip_special_tokens=True) for row in expected]


def test_batch_size_splits_without_changing_greedy_output(tiny):
    whole = generate_with_patches(tiny, PROMPTS, max_new_tokens=6, stop_at_eos=False)
    split = generate_with_patches(tiny, PROMPTS, max_new_tokens=6, stop_at_eos=False, batch_size=1)
    assert whole.tokens == split.tokens


def test_effects_are_recorded_for_every_generated_token(tiny):
    log = EffectLog()
    generate_with_patches(
        tiny, PROMPTS, [Patch("1/res", AddVector(torch.ones(64)), "generated")], max_new_tokens=4,
        stop_at_eos=False, record=log,
    )
    summary = log.effects[0].summary()
    assert summary["tokens_changed"] == 3 * 3  # steps 1..3 feed generated tokens; step 0 is the prompt
    assert summary["mean_delta_norm"] == torch.ones(64).norm().item()


def test_weight_layouts_keep_outputs_bit_identical_and_edits_take_effect():
    fast, stock = tiny_model(seed=3), tiny_model(seed=3)
    for module in stock.modules():
        for param in module._parameters.values():
            if param is not None:
                param.data = param.data.contiguous()
    assert uses_forward_layouts(fast) and not uses_forward_layouts(stock)
    tokens = encode(fast, PROMPTS)
    assert torch.equal(run_with_patches(fast, tokens), run_with_patches(stock, tokens))
    with torch.no_grad():
        fast.blocks[1].mlp.W_in.mul_(2.0)
        stock.blocks[1].mlp.W_in.mul_(2.0)
    assert torch.equal(run_with_patches(fast, tokens), run_with_patches(stock, tokens))


def test_rotated_key_hook_sees_the_stock_values(tiny):
    seen = {"fast": [], "stock": []}

    def spy(name):
        return lambda tensor, hook: seen[name].append(tensor.clone())

    with tiny.hooks(fwd_hooks=[("blocks.1.attn.hook_rot_k", spy("fast"))]):
        generate_with_patches(tiny, PROMPTS, max_new_tokens=4, stop_at_eos=False)
    with tiny.hooks(fwd_hooks=[("blocks.1.attn.hook_rot_k", spy("stock"))]):
        tiny.generate(PROMPTS, max_new_tokens=4, do_sample=False, verbose=False, stop_at_eos=False)
    assert len(seen["fast"]) == len(seen["stock"]) == 4
    for fast, stock in zip(seen["fast"], seen["stock"], strict=True):
        assert fast.shape == stock.shape
        assert torch.allclose(fast, stock, atol=1e-6)
