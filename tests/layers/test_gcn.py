"""GlobalConvolution and BoundaryRefinement (GCN, the ExFuse baseline): harness, geometry, args."""

import numpy as np
import pytest

from deeplab_family.layers import BoundaryRefinement, GlobalConvolution
from tests.harness import check_layer, random_image


@pytest.mark.parametrize("kernel_size", [15, 7])
def test_global_convolution_harness(kernel_size):
    check_layer(
        GlobalConvolution,
        dict(filters=21, kernel_size=kernel_size),
        lambda h, w: random_image(h, w, 8),
        # Four convs without BN (k x 1, 1 x k on each branch), kernel and bias each: (4 * 2, 0).
        expected_weights=(4 * 2, 0),
        expected_shape=lambda h, w: (1, h, w, 21),
    )


def test_global_convolution_kernels_and_no_norm():
    gcn = GlobalConvolution(21, kernel_size=15)
    gcn.build((None, None, None, 8))
    assert tuple(gcn.left_1.conv.kernel.shape) == (15, 1, 8, 21)
    assert tuple(gcn.left_2.conv.kernel.shape) == (1, 15, 21, 21)
    assert tuple(gcn.right_1.conv.kernel.shape) == (1, 15, 8, 21)
    assert tuple(gcn.right_2.conv.kernel.shape) == (15, 1, 21, 21)
    for unit in (gcn.left_1, gcn.left_2, gcn.right_1, gcn.right_2):
        assert unit.norm is None and unit.act is None and unit.conv.use_bias


def test_global_convolution_is_sum_of_two_separable_branches():
    """Each branch alone is a k x k conv whose kernel is an outer product; check with NumPy."""
    k, cin = 5, 1
    gcn = GlobalConvolution(1, kernel_size=k)
    x = random_image(11, 13, cin)
    gcn.build(x.shape)
    a = np.asarray(gcn.left_1.conv.kernel)[:, 0, 0, 0]  # (k,)
    b = np.asarray(gcn.left_2.conv.kernel)[0, :, 0, 0]
    c = np.asarray(gcn.right_1.conv.kernel)[0, :, 0, 0]
    d = np.asarray(gcn.right_2.conv.kernel)[:, 0, 0, 0]
    # With zero biases (their initial value) each branch is exactly a k x k conv with the
    # outer-product kernel, borders included: the intermediate map is zero wherever the zero-
    # padded input is, so padding it again changes nothing.
    full = np.outer(a, b) + np.outer(d, c)
    xp = np.pad(x[0, :, :, 0], k // 2)
    want = np.zeros((11, 13))
    for i in range(k):
        for j in range(k):
            want += full[i, j] * xp[i : i + 11, j : j + 13]
    got = np.asarray(gcn(x))[0, :, :, 0]
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("filters", [None, 6])
def test_boundary_refinement_harness(filters):
    check_layer(
        BoundaryRefinement,
        dict(filters=filters),
        lambda h, w: random_image(h, w, 6),
        # Two 3x3 convs without BN, kernel and bias each: (2 * 2, 0).
        expected_weights=(2 * 2, 0),
        expected_shape=lambda h, w: (1, h, w, 6),
    )


def test_boundary_refinement_is_residual():
    br = BoundaryRefinement()
    x = random_image(17, 19, 5)
    y = np.asarray(br(x))
    assert tuple(br.conv1.conv.kernel.shape) == (3, 3, 5, 5)
    assert br.conv1.norm is None and br.conv2.norm is None  # no BN in GCN's BR
    assert not np.allclose(y, x)
    br.conv2.conv.kernel.assign(np.zeros(br.conv2.conv.kernel.shape, "float32"))
    br.conv2.conv.bias.assign(np.zeros(br.conv2.conv.bias.shape, "float32"))
    np.testing.assert_array_equal(np.asarray(br(x)), x)


def test_boundary_refinement_filters_must_match_input():
    with pytest.raises(ValueError, match="filters must equal the input channels.*filters=4"):
        BoundaryRefinement(filters=4)(random_image(9, 9, 6))


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (
            GlobalConvolution,
            dict(filters=21, kernel_size=14),
            "kernel_size must be an odd int >= 1. Received: kernel_size=14",
        ),
        (GlobalConvolution, dict(filters=0), "filters must be an int >= 1. Received: filters=0"),
        (
            GlobalConvolution,
            dict(filters=21, kernel_size=-3),
            "kernel_size must be an int >= 1. Received: kernel_size=-3",
        ),
        (BoundaryRefinement, dict(filters=-1), "filters must be an int >= 1. Received: filters=-1"),
    ],
)
def test_gcn_bad_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
