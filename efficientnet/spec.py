"""The architecture value object: one frozen dataclass describes one EfficientNet.

An :class:`ArchSpec` flows unchanged from the tuner to the trial, into checkpoints and into reports.
It has a JSON-safe dict form (:meth:`ArchSpec.to_dict` / :meth:`ArchSpec.from_dict`) and a compact string form
(``str(spec)`` / :meth:`ArchSpec.parse`) that parses back exactly, e.g.::

    act=swish,stem=scaled,w=1.0,d=1.0,r=224,do=0.2,dc=0.2/ir_r1_k3_s1_e1_c16_se0.25-ir_r2_k3_s2_e6_c24_se0.25-...

Stage blocks use timm's block-string vocabulary: ``r`` repeats, ``k`` kernel, ``s`` stride, ``e`` expansion,
``c`` output channels, ``se`` squeeze-excitation ratio. Channels and repeats are the *unscaled* base values; the
width/depth multipliers scale them when the model is built (with efficientnet-pytorch's ``round_filters`` and
``round_repeats``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

__all__ = [
    "ACTIVATIONS",
    "KERNEL_SIZES",
    "EXPANSION_RATIOS",
    "SE_RATIO",
    "StageSpec",
    "StageChoice",
    "Compound",
    "ArchSpec",
    "SpecError",
    "PRESETS",
    "preset",
    "resolve_arch",
    "round_resolution",
    "scaled_arch",
]

ACTIVATIONS = ("swish", "relu6")
KERNEL_SIZES = (3, 5, 7)
EXPANSION_RATIOS = (1, 3, 4, 6)
SE_RATIO = 0.25
RESOLUTION_MULTIPLE = 4
MIN_RESOLUTION = 16


class SpecError(ValueError):
    """An architecture description that cannot be built; the message names the problem and the fix."""


@dataclass(frozen=True)
class StageSpec:
    """One MBConv stage: ``repeats`` blocks, the first with ``stride``, all with the same kernel and expansion."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int
    se: float = SE_RATIO  # 0.0 means no squeeze-excitation

    def __post_init__(self) -> None:
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise SpecError(f"stage repeats must be an integer >= 1, got {self.repeats!r}")
        if self.kernel not in KERNEL_SIZES:
            raise SpecError(f"unknown kernel size {self.kernel!r}: use one of {list(KERNEL_SIZES)}")
        if self.stride not in (1, 2):
            raise SpecError(f"stage stride must be 1 or 2, got {self.stride!r}")
        if self.expand not in EXPANSION_RATIOS:
            raise SpecError(f"unknown expansion ratio {self.expand!r}: use one of {list(EXPANSION_RATIOS)}")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise SpecError(f"stage channels must be a positive integer, got {self.channels!r}")
        if not 0.0 <= float(self.se) < 1.0:
            raise SpecError(f"squeeze-excitation ratio must be in [0, 1), got {self.se!r}")
        object.__setattr__(self, "se", float(self.se))

    def __str__(self) -> str:
        s = f"ir_r{self.repeats}_k{self.kernel}_s{self.stride}_e{self.expand}_c{self.channels}"
        return s + (f"_se{self.se!r}" if self.se > 0 else "")

    @classmethod
    def parse(cls, text: str) -> "StageSpec":
        """Parse a timm-style block string such as ``ir_r2_k3_s2_e6_c24_se0.25``."""
        parts = text.strip().split("_")
        if not parts or parts[0] != "ir":
            raise SpecError(f"block string {text!r} must start with 'ir_' (inverted residual), e.g. ir_r2_k3_s2_e6_c24")
        values: dict[str, Any] = {"se": 0.0}
        keys = {"r": "repeats", "k": "kernel", "s": "stride", "e": "expand", "c": "channels", "se": "se"}
        for part in parts[1:]:
            key = "se" if part.startswith("se") else part[:1]
            raw = part[len(key):]
            if key not in keys:
                raise SpecError(f"unknown field {part!r} in block string {text!r}; fields are r, k, s, e, c, se")
            try:
                values[keys[key]] = float(raw) if key == "se" else int(raw)
            except ValueError:
                raise SpecError(f"bad value {raw!r} for {keys[key]} in block string {text!r}") from None
        missing = {"repeats", "kernel", "stride", "expand", "channels"} - values.keys()
        if missing:
            raise SpecError(f"block string {text!r} lacks {sorted(missing)}")
        return cls(**values)


@dataclass(frozen=True)
class StageChoice:
    """A per-stage block choice the tuner may make; ``None`` keeps the base stage's value."""

    kernel: int | None = None
    expand: int | None = None
    se: bool | None = None
    repeats_delta: int = 0

    def apply(self, stage: StageSpec) -> StageSpec:
        """Return ``stage`` with this choice applied (repeats never drop below one)."""
        return replace(
            stage,
            kernel=stage.kernel if self.kernel is None else int(self.kernel),
            expand=stage.expand if self.expand is None else int(self.expand),
            se=stage.se if self.se is None else (SE_RATIO if self.se else 0.0),
            repeats=max(1, stage.repeats + int(self.repeats_delta)),
        )


@dataclass(frozen=True)
class Compound:
    """Compound-scaling coefficients: depth = alpha**phi, width = beta**phi, resolution = base * gamma**phi."""

    alpha: float
    beta: float
    gamma: float
    phi: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SpecError(f"compound coefficient {name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not math.isfinite(self.phi) or self.phi < 0:
            raise SpecError(f"compound exponent phi must be >= 0, got {self.phi!r}")
        object.__setattr__(self, "phi", float(self.phi))

    @property
    def product(self) -> float:
        """alpha * beta**2 * gamma**2, the FLOPs growth per unit of phi (the paper constrains it to about 2)."""
        return self.alpha * self.beta**2 * self.gamma**2


def round_resolution(value: float) -> int:
    """Round an input resolution to the nearest multiple of 4 (the B-family presets are all multiples of 4)."""
    return max(MIN_RESOLUTION, int(round(value / RESOLUTION_MULTIPLE)) * RESOLUTION_MULTIPLE)


# EfficientNet-B0's stage table (Tan & Le 2019, table 1), as in efficientnet-pytorch's `efficientnet()` block strings.
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(repeats=1, kernel=3, stride=1, expand=1, channels=16),
    StageSpec(repeats=2, kernel=3, stride=2, expand=6, channels=24),
    StageSpec(repeats=2, kernel=5, stride=2, expand=6, channels=40),
    StageSpec(repeats=3, kernel=3, stride=2, expand=6, channels=80),
    StageSpec(repeats=3, kernel=5, stride=1, expand=6, channels=112),
    StageSpec(repeats=4, kernel=5, stride=2, expand=6, channels=192),
    StageSpec(repeats=1, kernel=3, stride=1, expand=6, channels=320),
)


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to build one EfficientNet, and nothing about how it is trained.

    ``width``/``depth`` multiply the channels/repeats of ``stages``; ``resolution`` is the input size in pixels.
    ``compound`` records the coefficients the multipliers came from, when they came from compound scaling.
    ``stem='scaled'`` scales stem and head channels and every stage's repeats (B-family);
    ``stem='fixed'`` keeps the stem (32), head (1280) and first/last stage repeats as they are (EfficientNet-Lite).
    """

    stages: tuple[StageSpec, ...] = B0_STAGES
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    activation: str = "swish"
    stem: str = "scaled"
    dropout: float = 0.2
    drop_connect: float = 0.2
    compound: Compound | None = field(default=None)

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        if not stages:
            raise SpecError("an architecture needs at least one stage")
        if not all(isinstance(s, StageSpec) for s in stages):
            raise SpecError("stages must be StageSpec objects (use ArchSpec.from_dict for plain dicts)")
        object.__setattr__(self, "stages", stages)
        for name in ("width", "depth"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SpecError(f"{name} multiplier must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.resolution, float) and self.resolution.is_integer():
            object.__setattr__(self, "resolution", int(self.resolution))
        if not isinstance(self.resolution, int) or self.resolution < MIN_RESOLUTION:
            raise SpecError(f"resolution must be an integer >= {MIN_RESOLUTION} pixels, got {self.resolution!r}")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation {self.activation!r}: use one of {list(ACTIVATIONS)}")
        if self.stem not in ("scaled", "fixed"):
            raise SpecError(f"stem must be 'scaled' or 'fixed', got {self.stem!r}")
        for name in ("dropout", "drop_connect"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise SpecError(f"{name} must be in [0, 1), got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.compound is not None and not isinstance(self.compound, Compound):
            raise SpecError("compound must be a Compound or None")

    # ----------------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_compound(
        cls,
        alpha: float,
        beta: float,
        gamma: float,
        phi: float = 1.0,
        base: "ArchSpec | str" = "b0",
        base_resolution: int | None = None,
    ) -> "ArchSpec":
        """Scale ``base`` by compound coefficients: its depth times alpha**phi, its width times beta**phi and its
        resolution (or ``base_resolution``) times gamma**phi. Presets b0/lite0 have width = depth = 1, so for them
        the multipliers are exactly alpha**phi and beta**phi; a smaller base (say width 0.25) gives a smaller family.
        """
        base_spec = resolve_arch(base) if isinstance(base, str) else base
        c = Compound(alpha, beta, gamma, phi)
        res0 = base_spec.resolution if base_resolution is None else base_resolution
        return replace(
            base_spec,
            depth=round(base_spec.depth * c.alpha**c.phi, 6),
            width=round(base_spec.width * c.beta**c.phi, 6),
            resolution=round_resolution(res0 * c.gamma**c.phi),
            compound=c,
        )

    def with_stage_choices(self, choices: Mapping[int, StageChoice] | Iterable[StageChoice | None]) -> "ArchSpec":
        """Apply per-stage block choices (a mapping stage index -> choice, or one choice per stage)."""
        items = choices.items() if isinstance(choices, Mapping) else enumerate(choices)
        stages = list(self.stages)
        for index, choice in items:
            if choice is None:
                continue
            if not 0 <= int(index) < len(stages):
                raise SpecError(f"stage index {index} out of range: this architecture has {len(stages)} stages")
            stages[int(index)] = choice.apply(stages[int(index)])
        return replace(self, stages=tuple(stages))

    def replace(self, **changes: Any) -> "ArchSpec":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def num_blocks(self) -> int:
        """Number of MBConv blocks after depth scaling."""
        return sum(self.stage_repeats())

    def stage_repeats(self) -> list[int]:
        """Repeats of each stage after depth scaling (efficientnet-pytorch's ``round_repeats``: ceil)."""
        out = []
        for i, s in enumerate(self.stages):
            fixed = self.stem == "fixed" and i in (0, len(self.stages) - 1)
            out.append(s.repeats if fixed else int(math.ceil(self.depth * s.repeats)))
        return out

    # ------------------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal spec."""
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        d["compound"] = None if self.compound is None else asdict(self.compound)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchSpec":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the key."""
        if not isinstance(data, Mapping):
            raise SpecError(f"an architecture dict is needed, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown architecture field(s) {sorted(unknown)}; known fields are {sorted(known)}")
        kwargs = dict(data)
        if "stages" in kwargs:
            kwargs["stages"] = tuple(
                s if isinstance(s, StageSpec) else StageSpec(**s) for s in kwargs["stages"]
            )
        if kwargs.get("compound") is not None and not isinstance(kwargs["compound"], Compound):
            kwargs["compound"] = Compound(**kwargs["compound"])
        try:
            return cls(**kwargs)
        except TypeError as exc:  # e.g. a stage dict with an unknown key
            raise SpecError(f"bad architecture dict: {exc}") from None

    def __str__(self) -> str:
        head = [
            f"act={self.activation}",
            f"stem={self.stem}",
            f"w={self.width!r}",
            f"d={self.depth!r}",
            f"r={self.resolution}",
            f"do={self.dropout!r}",
            f"dc={self.drop_connect!r}",
        ]
        if self.compound is not None:
            c = self.compound
            head += [f"a={c.alpha!r}", f"b={c.beta!r}", f"g={c.gamma!r}", f"phi={c.phi!r}"]
        return ",".join(head) + "/" + "-".join(str(s) for s in self.stages)

    @classmethod
    def parse(cls, text: str) -> "ArchSpec":
        """Parse the compact form produced by ``str(spec)``."""
        if "/" not in text:
            raise SpecError(
                f"architecture string {text!r} has no '/': expected 'act=...,w=...,r=.../ir_r1_k3_...-ir_...' "
                "or a preset name such as b0 or lite0"
            )
        head, blocks = text.strip().split("/", 1)
        names = {"act": "activation", "stem": "stem", "w": "width", "d": "depth", "r": "resolution",
                 "do": "dropout", "dc": "drop_connect"}
        kwargs: dict[str, Any] = {}
        coeffs: dict[str, float] = {}
        for item in filter(None, head.split(",")):
            key, sep, raw = item.partition("=")
            if not sep:
                raise SpecError(f"bad item {item!r} in architecture string: expected key=value")
            try:
                if key in ("act", "stem"):
                    kwargs[names[key]] = raw
                elif key == "r":
                    kwargs["resolution"] = int(raw)
                elif key in names:
                    kwargs[names[key]] = float(raw)
                elif key in ("a", "b", "g", "phi"):
                    coeffs[{"a": "alpha", "b": "beta", "g": "gamma", "phi": "phi"}[key]] = float(raw)
                else:
                    raise SpecError(f"unknown key {key!r} in architecture string; keys are {sorted(names)} + a,b,g,phi")
            except ValueError as exc:
                if isinstance(exc, SpecError):
                    raise
                raise SpecError(f"bad value {raw!r} for {key!r} in architecture string") from None
        if coeffs:
            if set(coeffs) != {"alpha", "beta", "gamma", "phi"}:
                raise SpecError("architecture string must give all of a, b, g, phi or none of them")
            kwargs["compound"] = Compound(**coeffs)
        kwargs["stages"] = tuple(StageSpec.parse(b) for b in blocks.split("-") if b)
        return cls(**kwargs)


# Paper values (width, depth, resolution, dropout) for B0..B7; drop-connect 0.2 for all.
_B_FAMILY = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}

PRESETS: dict[str, ArchSpec] = {
    name: ArchSpec(width=w, depth=d, resolution=r, dropout=do) for name, (w, d, r, do) in _B_FAMILY.items()
}
# EfficientNet-Lite0: no squeeze-excitation, ReLU6, stem and head not scaled.
PRESETS["lite0"] = ArchSpec(
    stages=tuple(replace(s, se=0.0) for s in B0_STAGES), activation="relu6", stem="fixed", dropout=0.2
)


def preset(name: str) -> ArchSpec:
    """A named preset: ``b0`` ... ``b7`` or ``lite0`` (``efficientnet-b0`` style names work too)."""
    key = name.strip().lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
    if key not in PRESETS:
        raise SpecError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[key]


def resolve_arch(text: str) -> ArchSpec:
    """A preset name, a compact architecture string, or a JSON dict -> :class:`ArchSpec`."""
    text = text.strip()
    if text.startswith("{"):
        import json

        try:
            return ArchSpec.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SpecError(f"architecture JSON does not parse: {exc}") from None
    if "/" in text:
        return ArchSpec.parse(text)
    return preset(text)


def scaled_arch(
    arch: str | ArchSpec,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    phi: float = 1.0,
    width: float | None = None,
    depth: float | None = None,
    resolution: int | None = None,
) -> ArchSpec:
    """``arch`` (a preset, spec string, JSON or :class:`ArchSpec`) compound-scaled by alpha/beta/gamma (a missing one
    is 1.0) at ``resolution``, or else with explicit ``width``/``depth``/``resolution``. Giving both kinds of scaling
    is a :class:`SpecError`."""
    spec = arch if isinstance(arch, ArchSpec) else resolve_arch(arch)
    compound = (alpha, beta, gamma)
    if any(v is not None for v in compound):
        if width is not None or depth is not None:
            raise SpecError("give either --alpha/--beta/--gamma or --width/--depth, not both")
        a, b, g = (1.0 if v is None else float(v) for v in compound)
        return ArchSpec.from_compound(a, b, g, phi, base=spec, base_resolution=resolution)
    changes = {k: v for k, v in (("width", width), ("depth", depth), ("resolution", resolution)) if v is not None}
    return spec.replace(**changes) if changes else spec
