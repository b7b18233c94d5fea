"""One stride-2 depthwise layer with TensorFlow's asymmetric "same" padding, done each exact way, against
torchvision's symmetric layer: where the last few percent of the CPU step gap to torchvision come from.

TF pads a stride-2 layer at an even input size more at the bottom/right (3x3 on 64 px: 0 before, 1 after), the
padding efficientnet-pytorch's pretrained weights were trained with; torchvision pads 1 on each side (other windows,
so another function of the same weights). The exact ways, forward and backward, channels_last:

* ``crop (negative padding)``: the project's ``CroppedConv2d``: symmetric padding by enough (a 33 x 33 output),
  then the first row and column dropped by negative padding, whose gradient keeps channels_last;
* ``crop (slice)``: the same crop by slicing (the project's earlier form), whose gradient is NCHW;
* ``zero-padded kernel``: the kernel padded with a zero row and column (4 x 4), symmetric padding, no crop;
* ``pad the input``: ``F.pad`` of the input, then an unpadded convolution (efficientnet-pytorch's own way).

    python bench/stride2_depthwise.py                       # B0's first stride-2 layer at 128 px, batch 32
    python bench/stride2_depthwise.py --channels 144 --size 32 --kernel 5

Rounds alternate between the variants and each one's best round counts. Prints milliseconds per forward +
backward and the ratio to torchvision's layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from efficientnet_pytorch.utils import Conv2dStaticSamePadding
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efficientnet.layers import fold_same_padding  # noqa: E402

BASELINE = "torchvision (symmetric)"


def variants(channels: int, size: int, kernel: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each exact form of the TF-padded layer, and torchvision's symmetric one, sharing one weight."""
    library = Conv2dStaticSamePadding(channels, channels, kernel, stride=2, groups=channels, bias=False,
                                      image_size=size).to(memory_format=torch.channels_last)
    cropped = fold_same_padding(library)
    weight = library.weight
    (left, right, top, bottom) = library.static_padding.padding
    if (right - left, bottom - top) != (1, 1):
        raise SystemExit(f"error: TF pads {kernel}x{kernel} stride 2 at {size} px symmetrically; use an even --size")
    skip = cropped.skip
    out_size = (size + top + bottom - kernel) // 2 + 1

    def crop_by_slice(x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, weight, stride=2, padding=cropped.padding, groups=channels)
        out = y[:, :, skip[0]:skip[0] + out_size, skip[1]:skip[1] + out_size]
        return out.contiguous(memory_format=torch.channels_last)

    def zero_padded_kernel(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(weight, (right - left, 0, bottom - top, 0))  # the extra tap before each window is zero
        return F.conv2d(x, padded, stride=2, padding=(bottom, right), groups=channels)

    return {
        BASELINE: lambda x: F.conv2d(x, weight, stride=2, padding=kernel // 2, groups=channels),
        "crop (negative padding)": cropped,
        "crop (slice)": crop_by_slice,
        "zero-padded kernel": zero_padded_kernel,
        "pad the input": library,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--size", type=int, default=64, help="input height and width (even: asymmetric padding)")
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="forward + backward passes per round")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x0 = torch.randn(args.batch_size, args.channels, args.size, args.size).contiguous(
        memory_format=torch.channels_last)
    layers = variants(args.channels, args.size, args.kernel)
    with torch.no_grad():
        reference = layers["pad the input"](x0)
        for name, layer in layers.items():
            if name != BASELINE:
                torch.testing.assert_close(layer(x0), reference, rtol=1e-4, atol=1e-4, msg=name)
    best = {name: float("inf") for name in layers}
    for _ in range(args.rounds):
        for name, layer in layers.items():
            x = x0.clone().requires_grad_()
            start = time.perf_counter()
            for _ in range(args.steps):
                out = layer(x)
                out.backward(torch.ones_like(out))
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    print(f"depthwise {args.kernel}x{args.kernel} stride 2, {args.channels} channels, {args.size} px, batch "
          f"{args.batch_size}, channels_last, {torch.get_num_threads()} CPU threads, forward + backward:")
    for name, seconds in best.items():
        print(f"  {name:26s} {seconds * 1000:8.2f} ms  {seconds / best[BASELINE]:.2f}x torchvision's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
