"""The LR channel (``taid_car.channel``): the real codecs equal Pillow's own files, the training
forward equals the evaluation's real codec under the straight-through rule with an identity
gradient, a quality range is drawn per batch, and bad settings are named."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from taid_car.channel import JPEGChannel, PNGChannel, build_channel
from taid_car.channel.codecs import encode, jpeg_roundtrip, png_roundtrip, webp_roundtrip
from taid_car.errors import ConfigError


def _image(seed: int = 0, channels: int = 3, h: int = 27, w: int = 41) -> torch.Tensor:
    """A smooth odd-sized image with some texture, on the 8-bit grid, (1, C, h, w)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * x + c) * torch.cos(4 * y - c) for c in range(channels)])
    image = (base + 0.05 * torch.rand(channels, h, w, generator=g)).clamp(0, 1)
    return (torch.round(image * 255) / 255)[None]


def _pillow(image: torch.Tensor, **save) -> tuple[np.ndarray, int]:
    array = torch.round(image[0] * 255).to(torch.uint8).numpy()
    img = Image.fromarray(array[0], "L") if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0), "RGB")
    buffer = io.BytesIO()
    img.save(buffer, **save)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded), len(buffer.getvalue())


@pytest.mark.parametrize("quality", [10, 50, 75, 95])
@pytest.mark.parametrize(("subsampling", "pil"), [("4:2:0", 2), ("4:4:4", 0)])
def test_jpeg_is_pillows_file_bit_for_bit(quality, subsampling, pil):
    image = _image(quality)
    decoded, bits = jpeg_roundtrip(image, quality, subsampling)
    theirs, size = _pillow(image, format="JPEG", quality=quality, subsampling=pil, optimize=False, progressive=False)
    assert torch.equal(torch.round(decoded[0] * 255).to(torch.uint8), torch.from_numpy(theirs.copy()).permute(2, 0, 1))
    assert bits.tolist() == [8.0 * size]


def test_gray_and_webp_and_png():
    gray = _image(1, channels=1)
    decoded, _ = jpeg_roundtrip(gray, 60)
    theirs, _ = _pillow(gray, format="JPEG", quality=60, optimize=False, progressive=False)
    assert decoded.shape == gray.shape and np.array_equal(np.round(decoded[0, 0].numpy() * 255), theirs)
    decoded, _ = webp_roundtrip(_image(2), 80)
    theirs, _ = _pillow(_image(2), format="WEBP", quality=80, method=4)
    assert np.array_equal(np.round(decoded[0].permute(1, 2, 0).numpy() * 255), theirs)
    decoded, bits = png_roundtrip(_image(3))
    assert torch.equal(decoded, _image(3)) and bits.item() == 8 * len(encode(_image(3)[0], "png"))


def test_png_channel_is_the_8_bit_rounding_with_its_rate():
    lr = torch.rand(2, 3, 9, 13) * 1.2 - 0.1  # some values outside [0, 1]
    channel = build_channel(None)
    assert isinstance(channel, PNGChannel)
    coded = channel.code(lr)
    assert torch.equal(coded.lr, torch.round(lr.clamp(0, 1) * 255) / 255)
    assert coded.bits_per_pixel().shape == (2,) and bool((coded.bits_per_pixel() > 0).all())
    assert channel.record() == {"channel": "png", "quality": None, "subsampling": None}


def test_jpeg_straight_through_trains_on_the_real_codecs_lr_with_an_identity_gradient():
    channel = build_channel({"name": "jpeg", "quality": 40, "train_rule": "ste"})
    lr = (_image(4) * 0.9 + 0.05).requires_grad_()
    trained = channel.train(lr)
    assert torch.allclose(trained, channel.code(lr).lr, atol=1e-6)  # forward: the real codec's decode
    (trained * torch.arange(trained.numel()).reshape(trained.shape)).sum().backward()
    assert torch.equal(lr.grad, torch.arange(lr.numel(), dtype=torch.float32).reshape(lr.shape))


def test_a_quality_range_is_drawn_per_batch_and_refused_at_evaluation():
    channel = build_channel({"name": "jpeg", "quality": [50, 95]})
    assert channel.record()["quality"] == [50, 95]
    drawn = {channel.draw_quality() for _ in range(200)}
    assert min(drawn) >= 50 and max(drawn) <= 95 and len(drawn) > 20
    with pytest.raises(ConfigError, match="is a training range"):
        channel.code(_image())
    assert channel.at_quality(70).code(_image()).lr.shape == _image().shape


@pytest.mark.parametrize(("node", "message"), [
    ({"name": "jpeg", "quality": 0}, "channel.quality=0"),
    ({"name": "jpeg", "quality": 101}, "channel.quality=101"),
    ({"name": "jpeg", "quality": [90, 50]}, "low <= high"),
    ({"name": "jpeg", "subsampling": "4:1:1"}, "channel.subsampling='4:1:1'"),
    ({"name": "jpeg", "train_rule": "magic"}, "channel.train_rule='magic'"),
    ({"name": "png", "quality": 50}, "channel=png takes no channel.quality"),
    ({"name": "gif"}, "channel='gif'"),
])
def test_bad_settings_are_named(node, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_channel(node)


def test_webp_is_evaluation_only():
    channel = build_channel({"name": "webp", "quality": 50})
    with pytest.raises(ConfigError, match="evaluation only"):
        channel.train(_image())
    assert channel.code(_image()).lr.shape == _image().shape


def test_the_channel_rounds_with_the_runs_quantizer():
    from taid_car.models.quantize import Quantizer

    through = JPEGChannel(quantizer=Quantizer("ste", through_clamp=True), quality=90, train_rule="ste")
    lr = torch.full((1, 3, 16, 16), 1.2, requires_grad=True)
    through.train(lr).sum().backward()
    assert bool((lr.grad == 1).all())  # IRN's rule: the gradient passes the clamp too
    own = JPEGChannel(quality=90, train_rule="ste")
    lr.grad = None
    own.train(lr).sum().backward()
    assert bool((lr.grad == 0).all())  # the clamp's own gradient: none outside [0, 1]


def test_evaluation_labels_and_scoring_channels():
    from taid_car.channel import channel_label, scoring_channels

    ranged = build_channel({"name": "jpeg", "quality": [50, 95], "subsampling": "4:4:4"})
    assert ranged.evaluation() == JPEGChannel(quality=72, subsampling="4:4:4")  # the range's middle
    assert ranged.label == "jpeg q50-95 4:4:4" and ranged.evaluation().label == "jpeg q72 4:4:4"
    assert build_channel(None).label == "png" and build_channel({"name": "webp", "quality": 0}).label == "webp q0"
    assert channel_label({"method": "old row"}) == "png"  # rows written before the channel was recorded
    own_first = scoring_channels({"name": "jpeg", "quality": 75, "test_qualities": [30, 75, 90]})
    assert [c.quality for c in own_first] == [75, 30, 90]  # the own quality once
    only = scoring_channels({"name": "jpeg", "quality": 75, "test_qualities": [30, 90]}, own=False)
    assert [c.quality for c in only] == [30, 90]
    assert [c.quality for c in scoring_channels({"name": "webp", "test_qualities": [0, 100]}, own=False)] == [0, 100]
    assert scoring_channels({"name": "png", "quality": None, "subsampling": None})[0] == PNGChannel()  # png.yaml's nulls


def test_encode_gives_the_files_code_decodes():
    channel = JPEGChannel(quality=55)
    lr = _image(5) * 1.1 - 0.05
    (data,) = channel.encode(lr)
    coded = channel.code(lr)
    assert coded.bits.tolist() == [8.0 * len(data)] and data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), np.round(coded.lr[0].permute(1, 2, 0).numpy() * 255))
    assert PNGChannel().encode(lr)[0][:4] == b"\x89PNG" and channel.suffix == ".jpg"


def test_a_run_channel_is_checked_at_start():
    from taid_car.channel import check_run_channel

    assert check_run_channel({"name": "jpeg", "quality": [50, 95], "test_qualities": [30]}).is_range
    with pytest.raises(ConfigError, match="evaluation only"):
        check_run_channel({"name": "webp", "quality": 80})
    with pytest.raises(ConfigError, match=r"channel\.test_qualities=\[30, 0\]"):
        check_run_channel({"name": "jpeg", "test_qualities": [30, 0]})
