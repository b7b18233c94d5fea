"""ArchSpec: presets, compound scaling, block choices, round trips and validation."""

from __future__ import annotations

import json

import pytest

from efficientnet.spec import (
    PRESETS,
    ArchSpec,
    Compound,
    SpecError,
    StageChoice,
    StageSpec,
    preset,
    resolve_arch,
    round_resolution,
)


def test_b0_stage_table_matches_the_paper():
    b0 = preset("b0")
    assert [(s.expand, s.kernel, s.stride, s.channels, s.repeats) for s in b0.stages] == [
        (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
    ]
    assert all(s.se == 0.25 for s in b0.stages)
    assert (b0.width, b0.depth, b0.resolution, b0.activation, b0.stem) == (1.0, 1.0, 224, "swish", "scaled")


def test_presets_carry_the_papers_scaling():
    table = {name: (p.width, p.depth, p.resolution, p.dropout) for name, p in PRESETS.items()}
    assert table["b3"] == (1.2, 1.4, 300, 0.3)
    assert table["b7"] == (2.0, 3.1, 600, 0.5)
    lite = preset("lite0")
    assert lite.activation == "relu6" and lite.stem == "fixed" and all(s.se == 0 for s in lite.stages)
    assert preset("efficientnet-b2") == preset("B2")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trips_are_exact(name):
    spec = PRESETS[name]
    assert ArchSpec.parse(str(spec)) == spec
    assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert hash(ArchSpec.parse(str(spec))) == hash(spec)


def test_compound_scaling_and_choices_round_trip():
    spec = ArchSpec.from_compound(1.2, 1.1, 1.15, phi=2, base="lite0")
    assert spec.compound == Compound(1.2, 1.1, 1.15, 2.0)
    assert spec.depth == pytest.approx(1.44) and spec.width == pytest.approx(1.21)
    assert spec.resolution == round_resolution(224 * 1.15**2) and spec.resolution % 4 == 0
    assert spec.compound.product == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    spec = spec.with_stage_choices({1: StageChoice(kernel=7, expand=3, se=True, repeats_delta=1)})
    stage = spec.stages[1]
    assert (stage.kernel, stage.expand, stage.se, stage.repeats) == (7, 3, 0.25, 3)
    assert ArchSpec.parse(str(spec)) == spec
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert resolve_arch(json.dumps(spec.to_dict())) == spec
    assert resolve_arch(str(spec)) == spec


def test_repeats_never_drop_below_one_and_dedupe_by_value():
    base = preset("b0")
    a = base.with_stage_choices({0: StageChoice(repeats_delta=-3)})
    assert a.stages[0].repeats == 1
    assert a == base  # stage 0 already had one repeat: the same architecture, the same hash
    assert len({a, base, preset("b1")}) == 2


def test_stage_repeats_follow_the_library_rounding_and_lite_fixes_first_and_last():
    b3 = preset("b3")
    assert b3.stage_repeats() == [2, 3, 3, 5, 5, 6, 2]  # ceil(1.4 * r)
    lite_deep = preset("lite0").replace(depth=1.4)
    assert lite_deep.stage_repeats() == [1, 3, 3, 5, 5, 6, 1]


def test_block_string_form():
    assert str(StageSpec(2, 3, 2, 6, 24)) == "ir_r2_k3_s2_e6_c24_se0.25"
    assert StageSpec.parse("ir_r2_k5_s1_e4_c40") == StageSpec(2, 5, 1, 4, 40, se=0.0)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: ArchSpec.from_compound(-1.0, 1.0, 1.0), "alpha must be a positive number"),
        (lambda: ArchSpec(width=0), "width multiplier must be a positive number"),
        (lambda: StageSpec(2, 4, 1, 6, 24), "unknown kernel size 4"),
        (lambda: StageSpec(0, 3, 1, 6, 24), "repeats must be an integer >= 1"),
        (lambda: StageSpec(1, 3, 1, 5, 24), "unknown expansion ratio 5"),
        (lambda: ArchSpec(activation="gelu"), "unknown activation"),
        (lambda: ArchSpec(resolution=8), "resolution must be an integer"),
        (lambda: preset("b9"), "unknown preset 'b9'"),
        (lambda: ArchSpec.parse("act=swish/ir_r1_k3_s1_e1"), "lacks ['channels']"),
        (lambda: ArchSpec.parse("zz=1/ir_r1_k3_s1_e1_c16"), "unknown key 'zz'"),
        (lambda: ArchSpec.from_dict({"widht": 1.0}), "unknown architecture field(s) ['widht']"),
        (lambda: preset("b0").with_stage_choices({9: StageChoice(kernel=3)}), "stage index 9 out of range"),
    ],
)
def test_validation_names_the_problem(make, words):
    with pytest.raises(SpecError) as info:
        make()
    assert words in str(info.value)
    assert "\n" not in str(info.value)
