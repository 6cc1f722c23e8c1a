"""The transformer and recurrent baselines and the methods built for them, on tiny models: heads really gone
(narrower projections, fewer attention multiply-adds, the same function as the heads' outputs zeroed, a reload),
tokens really fewer (per block, exact on duplicate tokens thanks to proportional attention, close to the unmerged
model when trained, the same in ONNX Runtime), attention counted in MACs, a block's tokens distillable as a map, and
padding kept out of what a text model computes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.distillation import FeatureTap
from slimbench.baselines.transformers import HeadAttention, MergingBlock, SequenceEncoder
from slimbench.core.errors import ConfigError
from slimbench.deploy.counting import count_macs, serialized_sizes
from slimbench.deploy.onnx_export import OnnxModel, export_onnx
from slimbench.deploy.runtimes import load_artifact, stored_form
from slimbench.deploy.structure import describe
from slimbench.methods import build_method
from slimbench.methods.head_pruning import attention_layers, attention_macs
from slimbench.methods.step_pooling import recurrent_steps
from slimbench.methods.token_merging import tokens_per_block
from slimbench.tasks.base import InputSpec
from tests.conftest import method_context, train_tiny

TINY_VIT = {"dim": 32, "depth": 2, "heads": 4, "patch": 2}     # 8×8 digits: 16 patches + a class token
TINY_SEQUENCE = {"dim": 16, "depth": 2, "heads": 2}
TEXT = InputSpec(1, 12, 16, modality="text", token_vocab=50)


def vit(task, **params):  # noqa: ANN001, ANN201
    torch.manual_seed(0)
    return build_model("vit", task.spec, task.num_classes, {**TINY_VIT, **params}).eval()


def reloaded(model: nn.Module, fresh) -> nn.Module:  # noqa: ANN001
    """The model through the artifact path: stored form + layer structure, loaded back with `weights_only=True`."""
    data, _ = serialized_sizes(stored_form(model), describe(model))
    return load_artifact(data, fresh)


def attention_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each attention layer's input tokens (its block's first norm's output)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [block.norm1.register_forward_hook(lambda _m, _a, out, n=name: seen.__setitem__(n, out))
               for name, block in model.named_modules() if isinstance(block, MergingBlock)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def test_macs_count_the_attention_products(task):
    """CPU attention runs as one fused kernel torch has no formula for: the count must still hold QKᵀ and AV."""
    n, d, hidden = 17, 32, 64                                         # tokens, width, MLP width
    per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * hidden
    expected = 2 * per_block + 16 * (2 * 2 * d) + d * 10             # blocks, 2×2 patch embedding, head
    assert count_macs(vit(task), task.example_input(1)) == expected == 317_888


# -- prune.heads ---------------------------------------------------------------------------------------------

def test_head_pruning_cuts_heads_out_of_the_projections_and_halves_the_attention_work(task):
    model = vit(task)
    original = copy.deepcopy(model)
    x = task.example_input(8)
    attention_before = {n: count_macs(model.get_submodule(n).attn, t)
                        for n, t in attention_inputs(model, x[:1]).items()}
    macs_before = count_macs(model, x)
    method = build_method("prune.heads", {"fraction": 0.5, "finetune": False, "calibration_samples": 64})
    outcome = method.apply(model, method_context(task, model))
    pruned = outcome.model

    layers = attention_layers(pruned)
    assert [m.num_heads for m in layers.values()] and sum(m.num_heads for m in layers.values()) == 4   # of 8
    for m in layers.values():
        kept = m.num_heads * m.head_dim
        assert tuple(m.qkv.weight.shape) == (3 * kept, 32) and tuple(m.qkv.bias.shape) == (3 * kept,)
        assert tuple(m.proj.weight.shape) == (32, kept)
    assert outcome.achieved["heads_removed"] == 0.5 and outcome.compute == "physical"
    assert count_macs(pruned, x) < macs_before
    # attention multiply-adds (qkv, QKᵀ, AV, proj), each layer on the tokens it receives: at least the requested 2×
    attention_after = {n: count_macs(pruned.get_submodule(n).attn, t)
                       for n, t in attention_inputs(pruned, x[:1]).items()}
    ratio = sum(attention_before.values()) / sum(attention_after.values())
    assert ratio >= 2.0 and outcome.achieved["attention_macs_ratio"] == pytest.approx(ratio, rel=1e-3)
    assert attention_macs(original, x) == sum(attention_before.values())

    # removing a head is the same function as silencing its output: zero its columns of proj in the original
    removed = outcome.details["removed"]
    silenced = copy.deepcopy(original)
    for name, heads in removed.items():
        attn = silenced.get_submodule(name)
        with torch.no_grad():
            for h in heads:
                attn.proj.weight[:, h * attn.head_dim:(h + 1) * attn.head_dim] = 0
    with torch.no_grad():
        assert torch.allclose(pruned(x), silenced(x), atol=1e-5)
        assert not torch.allclose(pruned(x), original(x), atol=1e-3)

    back = reloaded(pruned, lambda: vit(task))
    assert [m.num_heads for m in attention_layers(back).values()] == [m.num_heads for m in layers.values()]
    with torch.no_grad():
        assert torch.allclose(back(x), pruned(x), atol=1e-6)


@pytest.mark.parametrize("importance", ["gradient", "output_norm"])
def test_the_importance_criterion_finds_the_heads_that_do_nothing(task, importance: str):
    """A planted case: heads 0 and 1 of the first layer barely write to its output; a quarter of all heads (2 of 8)
    removed by one ranking across layers must be exactly those two."""
    model = vit(task)
    first = attention_layers(model)["blocks.0.attn"]
    with torch.no_grad():
        first.proj.weight[:, : 2 * first.head_dim] *= 1e-4
    method = build_method("prune.heads", {"fraction": 0.25, "finetune": False, "calibration_samples": 64,
                                          "importance": importance})
    outcome = method.apply(model, method_context(task, model))
    assert outcome.details["removed"] == {"blocks.0.attn": [0, 1]}


def test_head_pruning_declares_models_without_removable_heads(task):
    gru = build_model("gru", task.spec, task.num_classes, {"hidden": 8})
    single = vit(task, heads=1)
    method = build_method("prune.heads")
    assert "no attention layer" in (method.not_applicable(gru) or "")
    assert "single head" in (method.not_applicable(single) or "")
    assert method.not_applicable(vit(task)) is None


# -- tokens.merge --------------------------------------------------------------------------------------------

def test_token_merging_gives_fewer_tokens_in_every_later_block_and_fewer_macs(task):
    model = vit(task, depth=3)
    x = task.example_input(4)
    macs = count_macs(model, x)
    outcome = build_method("tokens.merge", {"r": 3}).apply(model, method_context(task, model))
    assert tokens_per_block(outcome.model, x) == [17, 14, 11]          # r = 3 fewer after each block's attention
    assert outcome.details["tokens_per_block"] == {"before": [17, 17, 17], "after": [17, 14, 11]}
    assert count_macs(outcome.model, x) < macs and outcome.achieved["macs_ratio"] > 1.1
    # a block never merges the class token nor more pairs than it has
    assert tokens_per_block(build_method("tokens.merge", {"r": 50}).apply(
        vit(task, depth=3), method_context(task, model)).model, x) == [17, 9, 5]


def test_merging_duplicate_tokens_is_exact_with_proportional_attention(task):
    """Two identical tokens merged into one of size 2: with log(size) added to the attention logits every other
    token attends exactly as before, so the class token's output (and the logits) are unchanged."""
    model = vit(task)
    with torch.no_grad():
        model.pos_embed.zero_()      # identical patches stay identical tokens
    x = torch.randn(1, 1, 8, 8)
    x[..., 0:2, 2:4] = x[..., 0:2, 0:2]     # patches 0 and 1 (tokens 1 and 2): one in each set of the bipartite match
    merged = copy.deepcopy(model)
    merged.blocks[0].set_merge(1)
    assert tokens_per_block(merged, x) == [17, 16]
    unsized = copy.deepcopy(merged)
    for block in unsized.blocks:    # without proportional attention the merged token would weigh as one
        block.attn.attend = _without_size(block.attn.attend)
    with torch.no_grad():
        cls = model.forward_features(x)[:, 0]
        assert torch.allclose(merged.forward_features(x)[:, 0], cls, atol=1e-5)
        assert torch.allclose(merged(x), model(x), atol=1e-6)
        assert (unsized.forward_features(x)[:, 0] - cls).abs().max() > 1e-3


def _without_size(attend):  # noqa: ANN001, ANN202
    return lambda x, key_mask=None, size=None: attend(x, key_mask, None)


def test_merged_model_stays_close_exports_to_onnx_and_reloads_merged(task):
    model = train_tiny(task, lambda: build_model("vit", task.spec, task.num_classes, TINY_VIT), epochs=10)
    x, y = task.test.x, task.test.y
    with torch.no_grad():
        logits = model(x)
    outcome = build_method("tokens.merge", {"r": 1}).apply(copy.deepcopy(model), method_context(task, model))
    merged = outcome.model
    with torch.no_grad():
        merged_logits = merged(x)
    agree = (merged_logits.argmax(1) == logits.argmax(1)).float().mean().item()
    accuracy, merged_accuracy = ((z.argmax(1) == y).float().mean().item() for z in (logits, merged_logits))
    assert accuracy > 0.7                  # a model that learned something (chance: 0.1)
    assert agree >= 0.9 and merged_accuracy >= accuracy - 0.05 and not torch.equal(merged_logits, logits)

    onnx = OnnxModel(export_onnx(merged, x[:2]), float_model=merged, threads=1)
    with torch.no_grad():
        assert torch.allclose(onnx(x[:64]), merged_logits[:64], atol=1e-4)

    back = reloaded(merged, lambda: build_model("vit", task.spec, task.num_classes, TINY_VIT))
    assert [b.r for b in back.blocks] == [1, 1]
    assert tokens_per_block(back, x) == tokens_per_block(merged, x) == [17, 16]
    with torch.no_grad():
        assert torch.allclose(back(x[:16]), merged_logits[:16], atol=1e-6)


def test_token_merging_declares_padded_text_and_models_without_blocks():
    method = build_method("tokens.merge")
    assert "padding" in (method.not_applicable(build_model("text-encoder", TEXT, 2, TINY_SEQUENCE)) or "")
    assert "no transformer blocks" in (method.not_applicable(build_model("gru", TEXT, 2, {"hidden": 8})) or "")
    assert method.not_applicable(build_model("kwt", InputSpec(1, 8, 12), 3, TINY_SEQUENCE)) is None


# -- distillation from tokens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["hint", "attention"])
def test_feature_distillation_reads_a_blocks_tokens_as_a_map(task, kind: str):
    """A block's `[B, N, D]` tokens are tapped as a `[B, D, N, 1]` map: a hint from a wider teacher learns a width
    projection (1×1 conv), attention transfer compares token activity; both fine-tune the student."""
    teacher, student = vit(task, dim=48), vit(task).train()
    tap = FeatureTap(student, "blocks.1", "student")
    with torch.no_grad():
        student(task.example_input(3))
    assert tuple(tap.take().shape) == (3, 32, 17, 1)
    tap.remove()
    before = copy.deepcopy(student.state_dict())
    method = build_method("distill.feature", {"kind": kind, "layers": ["blocks.1"]})
    outcome = method.apply(student, method_context(task, teacher))
    after = outcome.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("blocks.1"))


# -- padding on text ------------------------------------------------------------------------------------------

def _text_batch() -> torch.Tensor:
    torch.manual_seed(1)
    tokens = torch.randint(1, 50, (3, 12))
    tokens[0, 5:] = 0
    tokens[1, 9:] = 0
    return tokens


def test_text_encoder_keeps_padding_out_of_attention_and_pooling():
    """Padding tokens differ only by their position embeddings: changing those leaves every text's logits as they
    were, unless the padding mask is off."""
    torch.manual_seed(0)
    model = build_model("text-encoder", TEXT, 2, TINY_SEQUENCE).eval()
    encoder = next(m for m in model.modules() if isinstance(m, SequenceEncoder))
    tokens = _text_batch()[:1]          # 5 words, 7 padding
    with torch.no_grad():
        before = model(tokens)
        encoder.pos_embed[:, 5:] += torch.randn(1, 7, 16)
        assert torch.allclose(model(tokens), before, atol=1e-6)
        encoder.mask_padding = False
        assert not torch.allclose(model(tokens), before, atol=1e-3)


def test_gru_words_never_see_the_padding_after_them():
    """A forward GRU reads the words before the padding and the text wrapper pools its outputs over the words only:
    whatever the padding's embedding is, the logits stay; the plain mean over every step would move."""
    torch.manual_seed(0)
    model = build_model("gru", TEXT, 2, {"hidden": 8}).eval()
    tokens = _text_batch()
    embedding = model[0].embedding
    with torch.no_grad():
        before = model(tokens)
        plain = model[1](model[0](tokens))
        embedding.weight[0] = torch.randn(16)
        assert torch.allclose(model(tokens), before, atol=1e-6)
        assert not torch.allclose(model[1](model[0](tokens))[:2], plain[:2], atol=1e-3)


def test_gru_stride_halves_the_time_steps_and_the_recurrent_work():
    spec = InputSpec(1, 32, 50, modality="audio")
    full, strided = (build_model("gru", spec, 3, {"hidden": 16, "stride": s}).eval() for s in (1, 2))
    x = torch.randn(1, *spec.input_shape)
    steps = []
    hook = strided.features.gru.register_forward_hook(lambda _m, args, _o: steps.append(args[0].shape[1]))
    ratio = count_macs(full, x) / count_macs(strided, x)
    hook.remove()
    assert steps == [25] and ratio == pytest.approx(2.0, rel=0.01)
    with pytest.raises(ConfigError, match="stride 64 exceeds the 50 steps"):
        build_model("gru", spec, 3, {"stride": 64})


def test_step_pooling_gives_a_trained_gru_stride_times_fewer_steps_and_fine_tunes_it(task):
    """steps.pool on a trained GRU: the recurrence runs over half the steps, the work halves, the fine-tune ran, and
    the model equals one built with `stride: 2` carrying the same weights (the pooling is the model's own kind)."""
    baseline = train_tiny(task, lambda: build_model("gru", task.spec, task.num_classes, {"hidden": 16}), epochs=3)
    fits: list[int] = []
    out = build_method("steps.pool", {"stride": 2}).apply(
        copy.deepcopy(baseline), method_context(task, baseline, on_fit=lambda: fits.append(1)))
    x = task.val.x[:1]
    assert recurrent_steps(baseline, x) == [task.spec.width] and recurrent_steps(out.model, x) == [
        math.ceil(task.spec.width / 2)]
    assert out.achieved["step_ratio"] == pytest.approx(task.spec.width / math.ceil(task.spec.width / 2))
    assert out.achieved["macs_ratio"] > 1.5 and fits == [1]
    strided = build_model("gru", task.spec, task.num_classes, {"hidden": 16, "stride": 2})
    strided.load_state_dict(out.model.state_dict())
    torch.testing.assert_close(strided.eval()(task.val.x[:8]), out.model.eval()(task.val.x[:8]))
    accuracy = (out.model(task.val.x).argmax(1) == task.val.y).float().mean()
    assert accuracy > 0.5, accuracy   # the fine-tuned GRU still reads the digits (chance is 0.1)
    method = build_method("steps.pool", {"stride": 2})
    assert "no recurrence" in (method.not_applicable(build_model("vit", task.spec, task.num_classes, TINY_VIT)) or "")
    assert "already averages" in (method.not_applicable(strided) or "")
    with pytest.raises(ConfigError, match="stride"):
        build_method("steps.pool", {"stride": 1})


# -- every model on every embedded input layout -------------------------------------------------------------------

LAYOUTS = {"image": InputSpec(1, 28, 28), "speech": InputSpec(1, 32, 51, modality="audio"), "text": TEXT}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["vit", "kwt", "text-encoder", "gru"])
def test_each_sequence_model_builds_trains_and_exports_for_each_input_layout(name: str, layout: str):
    spec = LAYOUTS[layout]
    params = {"hidden": 8} if name == "gru" else TINY_SEQUENCE
    if name in ("vit", "kwt") and layout == "text":
        with pytest.raises(ConfigError, match="text tasks take 'text-encoder'"):
            build_model(name, spec, 3, params)
        return
    torch.manual_seed(0)
    model = build_model(name, spec, 3, params)
    x = _text_batch() if spec.token_vocab else torch.randn(3, *spec.input_shape)
    model.train()
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        eager = model(x)
    assert count_macs(model, x) > 0
    if name != "gru" or layout == "image":   # a GRU exports through torch.export (seconds): once is enough
        onnx = OnnxModel(export_onnx(model, x), float_model=model, threads=1)
        assert torch.allclose(onnx(x), eager, atol=1e-4)
    assert any(isinstance(m, (HeadAttention, nn.GRU)) for m in model.modules())
