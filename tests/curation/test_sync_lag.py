"""The lag search's picture basis: the first k principal directions in time of a clip's
features, whether a frame has a few measures (lips) or more features than the clip has
frames (a mouth patch); both are computed the cheap way for their shape."""

import numpy as np
import pytest

from curation.sync_lag import orthonormal_basis


@pytest.mark.parametrize("frames, features, k", [(400, 3, 3), (400, 6, 2), (30, 500, 5)])
def test_the_basis_spans_the_first_principal_directions_in_time(frames, features, k):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(frames, features)) * np.linspace(3, 1, features) + 7.0
    basis = orthonormal_basis(x, k)
    u = np.linalg.svd(x - x.mean(0), full_matrices=False)[0][:, :k]
    assert basis.shape == (frames, k)
    assert np.allclose(basis.T @ basis, np.eye(k), atol=1e-9)  # orthonormal
    assert np.allclose(basis.sum(0), 0, atol=1e-9)  # centred
    assert np.allclose(basis @ basis.T, u @ u.T, atol=1e-9)  # the same span


def test_directions_without_variance_are_left_out():
    x = np.column_stack([np.sin(np.arange(100.0)), np.full(100, 2.0), 3 * np.sin(np.arange(100.0))])
    assert orthonormal_basis(x, 3).shape == (100, 1)
    assert orthonormal_basis(np.ones((100, 3)), 3).shape == (100, 0)
