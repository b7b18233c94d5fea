"""Grad-CAM heatmaps (:mod:`efficientnet.explain`) on real EfficientNet-Lite0 models, checked against the formula
computed by hand with torch's autograd; ``predict --heatmaps`` writes real PNG files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from efficientnet import build_model
from efficientnet.cli import main
from efficientnet.data import export_digits
from efficientnet.explain import MIN_CELLS, cam_layer, grad_cam, heatmap_figure, Panel, shown_image
from efficientnet.export import model_for_export
from efficientnet.preprocess import eval_transform, normalization
from efficientnet.spec import scaled_arch
from trial_process import one_error_line


def tiny_model(resolution: int) -> torch.nn.Module:
    """Lite0 at width 0.25 with ImageNet weights inherited and a 10-class classifier, in eval mode, channels_last
    (as evaluate prepares it)."""
    spec = scaled_arch("lite0", width=0.25, resolution=resolution)
    torch.manual_seed(0)
    state = build_model(spec, 10, weights="lite0").state_dict()
    return model_for_export(spec, 10, state).to(memory_format=torch.channels_last)


def by_hand(model: torch.nn.Module, images: torch.Tensor, targets: list[int], layer) -> torch.Tensor:
    """Grad-CAM as the paper writes it: the map's channels weighted by the mean gradient of the class's logit,
    summed, the positive part kept, scaled up bilinearly to the image and to a peak of 1."""
    kept = {}
    hook = (layer.module.register_forward_pre_hook(lambda _m, inputs: kept.__setitem__("map", inputs[0]))
            if layer.on_input else layer.module.register_forward_hook(lambda _m, _i, out: kept.__setitem__("map", out)))
    try:
        logits = model(images)
    finally:
        hook.remove()
    feature_map = kept["map"]
    (grads,) = torch.autograd.grad(logits[torch.arange(len(targets)), torch.tensor(targets)].sum(), feature_map)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * feature_map).sum(dim=1, keepdim=True))
    up = F.interpolate(cam, size=images.shape[-2:], mode="bilinear")[:, 0]
    return (up / up.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]).detach()


def test_at_224_px_the_heatmap_is_the_class_activation_map_of_the_head():
    """At 224 px the head's map is 7 x 7 and feeds the average pooling and the classifier only, so Grad-CAM is the
    class activation map: the classifier's weights of the class times the map (Selvaraju et al., section 3.1)."""
    model = tiny_model(224)
    images = torch.randn(3, 3, 224, 224)
    targets = [1, 4, 9]
    layer = cam_layer(model, images)
    assert (layer.name, layer.cells, layer.on_input) == ("head", 7, True) and layer.module is model._avg_pooling
    heat = grad_cam(model, images, targets)
    with torch.no_grad():
        features = model.extract_features(images)  # [3, channels, 7, 7]
        cam = torch.relu(torch.einsum("nk,nkhw->nhw", model._fc.weight[targets], features))[:, None]
    expected = F.interpolate(cam, size=(224, 224), mode="bilinear")[:, 0]
    expected /= expected.flatten(1).amax(dim=1)[:, None, None]
    assert heat.shape == (3, 224, 224) and heat.device.type == "cpu"
    assert torch.allclose(heat, expected, atol=1e-4)
    assert float(heat.amax()) == pytest.approx(1.0) and float(heat.amin()) >= 0.0
    assert not torch.allclose(heat[0], grad_cam(model, images[:1], [2])[0], atol=1e-2)  # another class, another map


def test_at_32_px_the_heatmap_comes_from_the_last_block_with_a_map_of_7_cells_or_more():
    """At 32 px the head's map is 1 x 1 (it cannot say where); the heatmap comes from the last block whose map has
    at least 7 cells a side, and equals Grad-CAM computed by hand on it."""
    model = tiny_model(32)
    images = torch.randn(4, 3, 32, 32)
    sizes = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1])) for b in model._blocks]
    with torch.no_grad():
        assert model.extract_features(images).shape[-1] == 1
    for hook in hooks:
        hook.remove()
    last = max(i for i, size in enumerate(sizes) if size >= MIN_CELLS)
    layer = cam_layer(model, images)
    assert (layer.name, layer.cells, layer.on_input) == (f"block {last}", sizes[last], False) == ("block 2", 8, False)
    assert sizes[last + 1] < MIN_CELLS
    targets = [0, 3, 5, 7]
    assert torch.allclose(grad_cam(model, images, targets), by_hand(model, images, targets, layer), atol=1e-5)


def test_the_picture_is_the_image_as_the_model_saw_it():
    """The normalisation undone: the evaluation transform's crop of the image, 0-1, height x width x 3."""
    spec = scaled_arch("lite0", resolution=32)
    img = Image.new("RGB", (48, 32), (200, 30, 90))
    img.paste((10, 250, 10), (24, 0, 48, 32))  # the right half, cut by the centre crop
    norm = normalization(spec)
    picture = shown_image(eval_transform(spec)(img), norm.mean, norm.std)
    assert picture.shape == (32, 32, 3)
    assert torch.allclose(picture[16, 2], torch.tensor([200, 30, 90]) / 255, atol=0.02)
    assert torch.allclose(picture[16, 29], torch.tensor([10, 250, 10]) / 255, atol=0.02)
    figure = heatmap_figure([[Panel(picture, None, "a"), Panel(picture, torch.rand(32, 32), "b")], [
        Panel(picture, None, "c")]], "caption")
    try:
        assert [ax.get_title() for ax in figure.axes] == ["a", "b", "c", ""]  # the empty cell is left blank
        assert len(figure.axes[1].images) == 2 and len(figure.axes[0].images) == 1
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_predict_draws_a_heatmap_for_each_image_and_keeps_images_of_one_name_apart(tmp_path: Path, capsys):
    digits = export_digits(tmp_path / "cache")
    for folder, digit in (("a", "3"), ("b", "5")):
        (tmp_path / folder).mkdir()
        shutil.copy(next((digits / "val" / digit).glob("*.png")), tmp_path / folder / "same.png")
    out_dir = tmp_path / "maps"
    code = main(["predict", "--weights", "lite0", "--topk", "1", str(tmp_path / "a" / "same.png"),
                 str(tmp_path / "b" / "same.png"), "--heatmaps", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["same-2.png", "same.png"]
    assert "heatmaps of 2 image(s) in" in err
    for name in ("same.png", "same-2.png"):
        with Image.open(out_dir / name) as img:
            assert img.format == "PNG" and img.size[0] > 2 * 200
            colours = img.convert("RGB").getcolors(1 << 20)
            assert colours is not None and len(colours) > 100  # a picture, not a blank page


def test_predict_refuses_a_heatmaps_folder_that_is_a_file_before_any_work(tmp_path: Path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    code = main(["predict", "--weights", "lite0", str(tmp_path / "none.png"), "--heatmaps", str(tmp_path / "taken")])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--heatmaps" in line and "is a file, not a folder" in line
