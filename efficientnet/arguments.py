"""What the command lines share: the user-error type and the architecture flags (``--arch`` with compound or
explicit scaling). ``python -m efficientnet`` (:mod:`efficientnet.cli`) and ``main_efficientnet.py`` use them.
Nothing here imports torch.
"""

from __future__ import annotations

import argparse

from .spec import ArchSpec, scaled_arch

__all__ = ["CLIError", "add_arch_arguments", "arch_from_args"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def add_arch_arguments(p: argparse.ArgumentParser, default: str = "b0") -> None:
    """``--arch`` plus compound (``--alpha --beta --gamma --phi``) or explicit (``--width --depth``) scaling."""
    p.add_argument("--arch", default=default, help="preset (b0..b7, lite0), spec string or JSON (default %(default)s)")
    g = p.add_argument_group("compound scaling of --arch (depth alpha^phi, width beta^phi, resolution gamma^phi)")
    g.add_argument("--alpha", type=float)
    g.add_argument("--beta", type=float)
    g.add_argument("--gamma", type=float)
    g.add_argument("--phi", type=float, default=1.0)
    e = p.add_argument_group("explicit scaling (instead of compound)")
    e.add_argument("--width", type=float, help="width multiplier")
    e.add_argument("--depth", type=float, help="depth multiplier")
    p.add_argument("--resolution", type=int, help="input resolution in pixels")


def arch_from_args(args: argparse.Namespace) -> ArchSpec:
    """The architecture the ``add_arch_arguments`` flags describe (see :func:`efficientnet.spec.scaled_arch`)."""
    return scaled_arch(args.arch, alpha=args.alpha, beta=args.beta, gamma=args.gamma, phi=args.phi,
                       width=args.width, depth=args.depth, resolution=args.resolution)
