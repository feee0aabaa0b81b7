import pytest

from models.images import ImageDecodeError, decode_image
from tests.corpus import bad_corpus, exif_rotated_jpeg, good_corpus, jpeg_bytes

EXPECTED_REASON = {
    "zero.jpg": "empty file",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "random.jpg": "not an image",
    "page.jpg": "HTML document",
    "notes.txt": "text file",
    "bomb.png": "image too large: 20000x20000",
}


@pytest.mark.parametrize("name, data", sorted(good_corpus().items()))
def test_unusual_but_valid_images_decode_to_rgb(name, data):
    img = decode_image(data)
    assert img.mode == "RGB" and img.size[0] >= 1


@pytest.mark.parametrize("name, data", sorted(bad_corpus().items()))
def test_bad_input_gets_a_one_line_reason(name, data):
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_pixels=100_000_000)
    reason = str(err.value)
    assert "\n" not in reason and len(reason) < 300
    assert EXPECTED_REASON[name] in reason


def test_exif_orientation_is_applied():
    assert decode_image(exif_rotated_jpeg()).size == (60, 120)


def test_sixteen_bit_keeps_its_range():
    img = decode_image(good_corpus()["gray16.png"])
    lo, hi = img.getextrema()[0]
    assert hi > 200 and lo < 20  # scaled, not clipped to white


def test_transparency_is_flattened_on_white():
    img = decode_image(good_corpus()["palette-transparent.png"])
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((20, 20)) == (255, 0, 0)


def test_large_jpegs_are_decoded_at_reduced_scale_but_cover_the_model_input():
    data = jpeg_bytes(5, (2000, 1500))
    img = decode_image(data, target=224)
    assert min(img.size) >= 224 * 2 and img.size[0] < 2000
