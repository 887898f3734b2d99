"""The original's tf.image preprocessing, vectorised over a batch in NumPy (NHWC, float32).

Each deterministic op takes its random parameters as arguments; the draws come from one function
per augmentation (`draw_cifar_augment`, `draw_imagenet_augment`) so a caller (the parity audit)
can inject the same draws into this pipeline and the TF reference.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

CIFAR_PADDED_SIZE = 36  # resize_image_with_crop_or_pad(image, 32 + 4, 32 + 4)
CIFAR_CROP_SIZE = 32
BRIGHTNESS_MAX_DELTA = 63.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
CONTRAST_RANGE = (0.2, 1.8)

IMAGENET_RESIZE_SMALLER_SIDE = 256
IMAGENET_CROP_SIZE = 224


@dataclass(frozen=True)
class AugmentDraws:
    """Random parameters of the CIFAR/SVHN augmentation, one row per image."""

    crop_offsets: np.ndarray  # [N, 2] int64 (row, col) of the 32x32 window in the 36x36 padded image
    flip: np.ndarray  # [N] bool, left-right
    brightness: np.ndarray  # [N] float32 additive delta (on 0..255 values: a near no-op, kept for fidelity)
    saturation: np.ndarray  # [N] float32 factor
    contrast: np.ndarray  # [N] float32 factor

    def __len__(self) -> int:
        return len(self.flip)

    def take(self, index) -> "AugmentDraws":
        return AugmentDraws(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def draw_cifar_augment(rng: np.random.Generator, n: int, flip: bool = True) -> AugmentDraws:
    """The original's draws: random_crop offsets uniform in {0..4}; random_flip_left_right with p=0.5
    (not for SVHN); random_brightness U[-63/255, 63/255); random_saturation U[0.5, 1.5);
    random_contrast U[0.2, 1.8)."""
    max_offset = CIFAR_PADDED_SIZE - CIFAR_CROP_SIZE
    return AugmentDraws(
        crop_offsets=rng.integers(0, max_offset + 1, size=(n, 2)),
        flip=(rng.random(n) < 0.5) if flip else np.zeros(n, dtype=bool),
        brightness=rng.uniform(-BRIGHTNESS_MAX_DELTA, BRIGHTNESS_MAX_DELTA, n).astype(np.float32),
        saturation=rng.uniform(*SATURATION_RANGE, n).astype(np.float32),
        contrast=rng.uniform(*CONTRAST_RANGE, n).astype(np.float32),
    )


def pad_crop_flip(images_nhwc: np.ndarray, crop_offsets: np.ndarray, flip: np.ndarray,
                  padded_size: int = CIFAR_PADDED_SIZE, crop_size: int = CIFAR_CROP_SIZE) -> np.ndarray:
    """resize_image_with_crop_or_pad(padded_size) -> random_crop(crop_size) -> random_flip_left_right.
    The zero border is centred ((padded - size) // 2 before), as in TF."""
    n, height, width, channels = images_nhwc.shape
    pad_top, pad_left = (padded_size - height) // 2, (padded_size - width) // 2
    padded = np.zeros((n, padded_size, padded_size, channels), images_nhwc.dtype)
    padded[:, pad_top:pad_top + height, pad_left:pad_left + width] = images_nhwc
    out = np.empty((n, crop_size, crop_size, channels), images_nhwc.dtype)
    for index, ((row, col), flipped) in enumerate(zip(crop_offsets.tolist(), flip.tolist())):
        window = padded[index, row:row + crop_size, col:col + crop_size]
        out[index] = window[:, ::-1] if flipped else window
    return out


def adjust_brightness(images_nhwc: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return images_nhwc + delta.astype(np.float32)[:, None, None, None]


def _rgb_to_hsv(red, green, blue):
    """TF's AdjustSaturation kernel, its float32 arithmetic (the hue offsets 2/6, 4/6 are C++ doubles,
    so those sums round once from double; adding 0.0 in double for the red branch is exact)."""
    value = np.maximum(red, np.maximum(green, blue))
    spread = value - np.minimum(red, np.minimum(green, blue))
    red_max, green_max = red == value, green == value
    difference = np.where(red_max, green - blue, np.where(green_max, blue - red, red - green))
    offset = np.where(red_max, 0.0, np.where(green_max, 2.0 / 6.0, 4.0 / 6.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(value > 0, spread / value, np.float32(0))
        norm = np.float32(1) / (np.float32(6) * spread)
        hue = ((norm * difference).astype(np.float64) + offset).astype(np.float32)
    hue[spread <= 0] = 0
    hue[hue < 0] += np.float32(1)
    return hue, saturation.astype(np.float32), value


# Per sextant of the hue circle (0..5, and 6 for hue == 1.0), which of (chroma, ramp, 0) each of r, g, b takes.
_SEXTANT_CHANNEL_SOURCES = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1], [2, 2, 2]])


def _hsv_to_rgb(hue, saturation, value):
    chroma = saturation * value
    offset = value - chroma
    sextant_position = hue * np.float32(6)
    sextant = sextant_position.astype(np.int8)  # int(dh), dh >= 0
    # fmod(dh, 2) without fmod: dh minus the even part of its integer part (exact in float32 for dh < 8)
    position_in_pair = sextant_position - (sextant & np.int8(-2)).astype(np.float32)
    ramp = chroma * (np.float32(1) - np.abs(position_in_pair - np.float32(1)))
    with_chroma, with_ramp = chroma + offset, ramp + offset  # rr + m: the kernel's last add
    channels = []
    for channel in range(3):
        source = _SEXTANT_CHANNEL_SOURCES[:, channel].astype(np.int8)[sextant]
        channels.append(np.where(source == 0, with_chroma, np.where(source == 1, with_ramp, offset)))
    return np.stack(channels, axis=-1)


def adjust_saturation(images_nhwc: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """TF's AdjustSaturation kernel: RGB -> HSV, S = clip(S * factor, 0, 1), HSV -> RGB, in float32 with the
    kernel's operation order (a closed form, v - (v - x) * s'/s, is exact but differs from TF by ~1e-4 on
    0..255 values, which the standardisation then amplifies)."""
    red, green, blue = np.ascontiguousarray(np.moveaxis(images_nhwc.astype(np.float32), -1, 0))
    hue, saturation, value = _rgb_to_hsv(red, green, blue)
    factor = factor.astype(np.float32)[:, None, None]
    saturation = np.minimum(np.float32(1), np.maximum(np.float32(0), saturation * factor))
    return _hsv_to_rgb(hue, saturation, value)


def _fold_mean_over_pixels(images_nhwc: np.ndarray) -> np.ndarray:
    """Per-channel mean as TF's AdjustContrastv2 CPU kernel sums: fold the pixel list in half repeatedly
    (float32), then divide. Bit-identical to TF for 32x32 images (verified); other orders differ by ~1e-4
    on 0..255 values. The odd-length remainder is added to the first slot (used only for odd pixel counts)."""
    partial_sums = images_nhwc.reshape(images_nhwc.shape[0], -1, images_nhwc.shape[-1]).astype(np.float32)
    num_pixels = partial_sums.shape[1]
    while partial_sums.shape[1] > 1:
        half = partial_sums.shape[1] // 2
        folded = partial_sums[:, :half] + partial_sums[:, half:2 * half]
        if partial_sums.shape[1] % 2:
            folded[:, 0] += partial_sums[:, -1]
        partial_sums = folded
    return (partial_sums[:, 0] / np.float32(num_pixels))[:, None, None, :]


def adjust_contrast(images_nhwc: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """adjust_contrast (AdjustContrastv2): (x - per-channel mean over H, W) * factor + mean, no clamp."""
    mean = _fold_mean_over_pixels(images_nhwc)
    return (images_nhwc - mean) * factor.astype(np.float32)[:, None, None, None] + mean


def per_image_standardization(images_nhwc: np.ndarray) -> np.ndarray:
    """(x - mean) / max(std, 1/sqrt(N)), mean and std over all H*W*C values of each image."""
    num_values = np.prod(images_nhwc.shape[1:])
    mean = images_nhwc.mean(axis=(1, 2, 3), keepdims=True, dtype=np.float64)
    std = images_nhwc.std(axis=(1, 2, 3), keepdims=True, dtype=np.float64)
    adjusted_std = np.maximum(std, 1.0 / np.sqrt(num_values))
    return ((images_nhwc - mean) / adjusted_std).astype(np.float32)


def cifar_train_preprocess(images_nhwc_uint8: np.ndarray, draws: AugmentDraws) -> np.ndarray:
    """The original's CIFAR/SVHN training chain, in its fixed order, on raw 0..255 values."""
    cropped = pad_crop_flip(images_nhwc_uint8, draws.crop_offsets, draws.flip).astype(np.float32)
    brightened = adjust_brightness(cropped, draws.brightness)
    saturated = adjust_saturation(brightened, draws.saturation)
    contrasted = adjust_contrast(saturated, draws.contrast)
    return per_image_standardization(contrasted)


def cifar_eval_preprocess(images_nhwc_uint8: np.ndarray) -> np.ndarray:
    """resize_image_with_crop_or_pad(32, 32) is a no-op on 32x32 images; then standardise."""
    return per_image_standardization(images_nhwc_uint8.astype(np.float32))


# ---- ImageNet (one image at a time: sizes differ before the crop) ----

@dataclass(frozen=True)
class ImagenetDraws:
    crop_offset: tuple[int, int]  # (row, col) of the 224x224 window in the 256x256 image
    flip: bool


def draw_imagenet_augment(rng: np.random.Generator) -> ImagenetDraws:
    max_offset = IMAGENET_RESIZE_SMALLER_SIDE - IMAGENET_CROP_SIZE
    row, col = rng.integers(0, max_offset + 1, size=2)
    return ImagenetDraws((int(row), int(col)), bool(rng.random() < 0.5))


def uint8_to_unit_float(image: np.ndarray) -> np.ndarray:
    """convert_image_dtype(uint8 -> float32): a multiply by 1/255 (not a division, as in TF)."""
    return image.astype(np.float32) * np.float32(1.0 / 255.0)


def aspect_preserving_size(height: int, width: int, smaller_side: int = IMAGENET_RESIZE_SMALLER_SIDE
                           ) -> tuple[int, int]:
    """The original's float32 arithmetic: scale = side / min(h, w); round half to even (tf.round)."""
    scale = np.float32(smaller_side) / np.float32(min(height, width))
    return int(np.round(scale * np.float32(height))), int(np.round(scale * np.float32(width)))


def _legacy_bilinear_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale  # no half-pixel centres (TF1 resize_images)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (source - lower.astype(np.float32))


def resize_bilinear_tf1(image_hwc: np.ndarray, height: int, width: int) -> np.ndarray:
    """tf.image.resize_images (TF1): ResizeBilinear with align_corners=False, half_pixel_centers=False."""
    top, bottom, y_lerp = _legacy_bilinear_axis(image_hwc.shape[0], height)
    left, right, x_lerp = _legacy_bilinear_axis(image_hwc.shape[1], width)
    image = image_hwc.astype(np.float32)
    x_lerp = x_lerp[None, :, None]
    upper_row = image[top][:, left] + (image[top][:, right] - image[top][:, left]) * x_lerp
    lower_row = image[bottom][:, left] + (image[bottom][:, right] - image[bottom][:, left]) * x_lerp
    return upper_row + (lower_row - upper_row) * y_lerp[:, None, None]


def resize_with_crop_or_pad(image_hwc: np.ndarray, height: int, width: int) -> np.ndarray:
    """tf.image.resize_image_with_crop_or_pad: centre crop where larger, centre zero-pad where smaller."""
    in_height, in_width = image_hwc.shape[:2]
    crop_top, crop_left = max((in_height - height) // 2, 0), max((in_width - width) // 2, 0)
    cropped = image_hwc[crop_top:crop_top + min(height, in_height), crop_left:crop_left + min(width, in_width)]
    pad_top, pad_left = max((height - in_height) // 2, 0), max((width - in_width) // 2, 0)
    out = np.zeros((height, width, image_hwc.shape[2]), image_hwc.dtype)
    out[pad_top:pad_top + cropped.shape[0], pad_left:pad_left + cropped.shape[1]] = cropped
    return out


def imagenet_preprocess(image_hwc_uint8: np.ndarray, draws: ImagenetDraws | None) -> np.ndarray:
    """Decoded RGB uint8 -> [0,1) float -> short side 256 -> (train: crop/pad 256, crop 224 at the drawn
    offset, flip | eval: centre crop/pad 224) -> per-image standardisation. HWC float32."""
    image = uint8_to_unit_float(image_hwc_uint8)
    image = resize_bilinear_tf1(image, *aspect_preserving_size(*image.shape[:2]))
    if draws is None:
        image = resize_with_crop_or_pad(image, IMAGENET_CROP_SIZE, IMAGENET_CROP_SIZE)
    else:
        image = resize_with_crop_or_pad(image, IMAGENET_RESIZE_SMALLER_SIDE, IMAGENET_RESIZE_SMALLER_SIDE)
        row, col = draws.crop_offset
        image = image[row:row + IMAGENET_CROP_SIZE, col:col + IMAGENET_CROP_SIZE]
        if draws.flip:
            image = image[:, ::-1]
    return per_image_standardization(image[None])[0]
