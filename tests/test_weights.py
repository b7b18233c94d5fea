"""Builder, pretrained Lite0 weights and weight inheritance, on real tensors."""

from __future__ import annotations

import warnings

import pytest
import torch
from efficientnet_pytorch import EfficientNet

from efficientnet import ArchSpec, StageChoice, WeightsError, build_model, inherit_weights, load_weights, preset
from efficientnet.builder import stage_of_blocks
from efficientnet.preprocess import eval_transform

TINY = preset("b0").replace(width=0.25, depth=0.5, resolution=32)


def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm affine parameters, then statistics from real forward passes (a freshly initialised
    model's activations otherwise shrink to nothing, and every input would give the same logits)."""
    g = torch.Generator().manual_seed(0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 32, 32, generator=g))
    return model.eval()


def test_b_family_matches_efficientnet_pytorch_itself():
    ours = build_model(preset("b3"), 1000)
    theirs = EfficientNet.from_name("efficientnet-b3")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert isinstance(ours, EfficientNet)


def test_lite0_weights_load_with_every_key_accounted_for():
    state, spec = load_weights("lite0")
    assert spec == preset("lite0")
    model = build_model(spec, 1000, weights="lite0")
    report = model.inheritance
    assert report.exact and report.fraction == 1.0
    assert len(report.copied) == len(state) == len(model.state_dict())
    n_params = sum(p.numel() for p in model.parameters())
    assert 4.6e6 < n_params < 4.7e6
    assert isinstance(model._swish, torch.nn.ReLU6) and isinstance(model._blocks[3]._swish, torch.nn.ReLU6)


def test_lite0_classifies_real_photos_sensibly(sample_photos):
    from PIL import Image

    model = build_model(preset("lite0"), 1000, weights="lite0").eval()
    transform = eval_transform(model.spec)
    with torch.inference_mode():
        top5 = {
            name: model(transform(Image.open(path)).unsqueeze(0)).softmax(-1)[0].topk(5).indices.tolist()
            for name, path in sample_photos.items()
        }
    # ImageNet ids: 698 palace, 442 bell cote, 832 stupa, 668 mosque, 483 castle (the photo is a temple in China);
    # 985 daisy, 738 pot (flowerpot), 716 picket fence, 992 agaric, 947 mushroom, 996 hen-of-the-woods.
    assert set(top5["china"]) & {698, 442, 832, 668, 483}
    assert 985 in top5["flower"]


def test_new_class_count_reinitialises_only_the_head():
    model = build_model(preset("lite0"), 10, weights="lite0")
    report = model.inheritance
    assert report.skipped == ["_fc.weight", "_fc.bias"]
    assert not report.new and not report.adapted and set(report.unused) == {"_fc.weight", "_fc.bias"}
    assert model._fc.out_features == 10
    assert 0.7 < report.fraction < 1.0


@pytest.mark.parametrize(
    "grow",
    [
        lambda s: s.replace(depth=s.depth * 2.5),
        lambda s: s.with_stage_choices({1: StageChoice(repeats_delta=2), 4: StageChoice(repeats_delta=1)}),
    ],
    ids=["depth-multiplier", "repeats-choice"],
)
def test_deeper_child_computes_exactly_the_parents_function(grow):
    torch.manual_seed(0)
    parent = _calibrated(build_model(TINY, 10))
    child_spec = grow(TINY)
    assert child_spec.num_blocks > TINY.num_blocks
    child = build_model(child_spec, 10, weights={"model": parent.state_dict(), "spec": TINY.to_dict()}).eval()
    report = child.inheritance
    assert report.identity_blocks and len(report.identity_blocks) == child_spec.num_blocks - TINY.num_blocks
    assert report.fraction > 0.8 and not report.new and not report.skipped and not report.unused
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = parent(x)
        assert logits.std(0).mean() > 1e-3  # the logits depend on the input
        torch.testing.assert_close(child(x), logits, rtol=1e-5, atol=1e-5)


def test_identity_blocks_are_what_makes_depth_function_preserving():
    torch.manual_seed(0)
    parent = _calibrated(build_model(TINY, 10))
    child = build_model(TINY.replace(depth=1.0), 10).eval()
    assert TINY.replace(depth=1.0).num_blocks > TINY.num_blocks
    report = inherit_weights(child, parent.state_dict(), TINY)
    first_new = report.identity_blocks[0]
    child._blocks[first_new]._bn2.weight.data.fill_(1.0)  # undo the zeroing of one extra block
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(child(x), parent(x), atol=1e-3)


def _first_block_of_stage(spec: ArchSpec, stage: int) -> int:
    return [s for s, _ in stage_of_blocks(spec)].index(stage)


def test_wider_narrower_and_kernel_changes_are_adapted_and_reported():
    torch.manual_seed(0)
    parent = build_model(TINY, 10)
    child_spec = TINY.replace(width=0.5).with_stage_choices({2: StageChoice(kernel=3), 3: StageChoice(kernel=5)})
    child = build_model(child_spec, 10)
    report = inherit_weights(child, parent.state_dict(), TINY)
    assert report.adapted and 0.0 < report.fraction < 1.0 and not report.unused

    def depthwise(model, spec, stage):
        return model._blocks[_first_block_of_stage(spec, stage)]._depthwise_conv.weight

    # stage 3 grew its kernel 3 -> 5 and got wider: the parent's 3x3 sits in the centre, the ring is zero
    wc, wp = depthwise(child, child_spec, 3), depthwise(parent, TINY, 3)
    assert wc.shape[0] > wp.shape[0] and wc.shape[-1] == 5 and wp.shape[-1] == 3
    c = wp.shape[0]
    torch.testing.assert_close(wc[:c, :, 1:4, 1:4], wp)
    assert torch.count_nonzero(wc[:c, :, 0, :]) == 0 and torch.count_nonzero(wc[:c, :, :, 4]) == 0
    # stage 2 shrank its kernel 5 -> 3: the centre is kept
    wc, wp = depthwise(child, child_spec, 2), depthwise(parent, TINY, 2)
    torch.testing.assert_close(wc[: wp.shape[0]], wp[:, :, 1:4, 1:4])


def test_weights_from_a_file_are_loaded_safely_and_their_spec_inferred(tmp_path):
    model = build_model(preset("b0"), 1000)
    path = tmp_path / "b0.pth"
    torch.save(model.state_dict(), path)
    state, spec = load_weights(str(path))
    assert spec == preset("b0")
    again = build_model(preset("b0"), 1000, weights=str(path))
    assert again.inheritance.exact


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "does not exist"),
        (b"not a checkpoint at all", "cannot read weights file"),
        ("pickle", "cannot read weights file"),
        ({"foo": [1, 2]}, "holds no state dict of tensors"),
    ],
)
def test_bad_weights_files_raise_one_clear_line(tmp_path, content, words):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "pickle":
        import pickle

        path.write_bytes(pickle.dumps(object()))
    elif content is not None:
        torch.save(content, path)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(WeightsError) as info:
        warnings.simplefilter("always")
        load_weights(str(path))
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not caught, [str(w.message) for w in caught]  # the one line, nothing printed before it


def test_weights_of_an_unknown_architecture_ask_for_its_spec(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(build_model(TINY, 10).state_dict(), path)
    with pytest.raises(WeightsError, match="cannot tell which architecture"):
        load_weights(str(path))
    model = build_model(TINY, 10, weights=str(path), weights_spec=TINY)
    assert model.inheritance.exact
