"""ASPP (DeepLabv3 Sec 3.3, Fig 5): harness, branch geometry, rates per output stride, bad args."""

import numpy as np
import pytest

from deeplab_family.layers import ASPP, AtrousConv2D, aspp_rates
from tests.harness import check_layer, random_image


def _batch2(h, w, c=4):
    # Batch 2: the image-pooling branch's BN sees one value per image, so with batch 1 in
    # training mode its conv gets no gradient (see ASPP's docstring), and the harness checks
    # for a gradient into every weight.
    return np.concatenate([random_image(h, w, c, seed=0), random_image(h, w, c, seed=1)])


# Variables: every branch and the projection is a conv + BN unit, (3, 2) each (kernel, gamma,
# beta trainable; moving mean and variance not); ASPP has 1 (1x1) + len(rates) + 1 (image
# pooling) + 1 (projection) units, and dropout has no variables.
@pytest.mark.parametrize(
    "kwargs, expected_weights",
    [
        (dict(filters=8, rates=(6, 12, 18)), (3 * 6, 2 * 6)),  # 1 + 3 + 1 + 1 units
        # Table 5's fourth branch: 1 + 4 + 1 + 1 units.
        (dict(filters=8, rates=(6, 12, 18, 24), dropout=0.1), (3 * 7, 2 * 7)),
        # No image pooling: 1 + 3 + 0 + 1 units.
        (
            dict(filters=8, rates=(12, 24, 36), image_pooling=False, synchronized=True),
            (3 * 5, 2 * 5),
        ),
        (dict(filters=8, rates=(), norm_momentum=0.99, norm_epsilon=1e-3), (3 * 3, 2 * 3)),
    ],
)
def test_aspp_harness(kwargs, expected_weights):
    check_layer(
        ASPP,
        kwargs,
        _batch2,
        expected_weights=expected_weights,
        expected_shape=lambda h, w: (2, h, w, kwargs["filters"]),
    )


@pytest.mark.parametrize(
    "rates, image_pooling", [((6, 12, 18), True), ((6, 12, 18, 24), True), ((6, 12, 18), False)]
)
def test_aspp_branches_and_concat_width(rates, image_pooling):
    """Fig 5 at the paper's width: 256 filters per branch, concat of 1 + len(rates) + pool."""
    aspp = ASPP(rates=rates, image_pooling=image_pooling)
    aspp.build((None, None, None, 32))
    assert aspp.filters == 256
    branches = [aspp.conv1x1, *aspp.atrous_convs] + ([aspp.pool_conv] if image_pooling else [])
    assert len(branches) == 1 + len(rates) + int(image_pooling) == aspp.num_branches
    assert tuple(aspp.conv1x1.conv.kernel.shape) == (1, 1, 32, 256)
    for conv, rate in zip(aspp.atrous_convs, rates):
        assert isinstance(conv.conv, AtrousConv2D)
        assert tuple(conv.conv.kernel.shape) == (3, 3, 32, 256)
        assert tuple(conv.conv.dilation_rate) == (rate, rate)
    if image_pooling:
        assert tuple(aspp.pool_conv.conv.kernel.shape) == (1, 1, 32, 256)
        assert aspp.pool_conv.norm is not None  # DeepLabv3 Sec 3.3: "and batch normalization"
    else:
        assert aspp.pool_conv is None
    width = 256 * (1 + len(rates) + int(image_pooling))
    assert tuple(aspp.project.conv.kernel.shape) == (1, 1, width, 256)


def test_aspp_image_pooling_branch_is_constant_over_space():
    """Image-level features are one vector per image, broadcast to the map's run-time size."""
    aspp = ASPP(filters=4, rates=(), image_pooling=True)
    x = random_image(17, 23, 3)
    aspp(x)
    pooled = aspp.pool_conv(aspp.pool(x))
    up = np.asarray(aspp.pool_resize([pooled, x]))
    assert up.shape == (1, 17, 23, 4)
    np.testing.assert_allclose(up, np.broadcast_to(np.asarray(pooled), up.shape), atol=1e-6)


def test_aspp_rates_follow_output_stride():
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(32) == (3, 6, 9)
    assert aspp_rates(8, base=(6, 12, 18, 24)) == (12, 24, 36, 48)
    with pytest.raises(
        ValueError, match=r"output_stride must be one of .*Received: output_stride=12"
    ):
        aspp_rates(12)
    with pytest.raises(ValueError, match="divisible by 2"):
        aspp_rates(32, base=(3, 6, 9))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(rates=(6, -12, 18)),
            r"rates must be a sequence of ints >= 1. Received: rates=\(6, -12, 18\)",
        ),
        (dict(rates=6), "rates must be a sequence of ints >= 1. Received: rates=6"),
        (dict(filters=0), "filters must be an int >= 1. Received: filters=0"),
        (dict(dropout=1.0), r"dropout must be a float in \[0, 1\). Received: dropout=1.0"),
        (dict(norm_momentum=2.0), "norm_momentum"),
    ],
)
def test_aspp_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ASPP(**kwargs)
