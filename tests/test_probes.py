import numpy as np
import pytest

from wmrl.eval.probes import collapse_stats, collapse_warning, linear_probe_r2


def test_linear_target_is_decoded(rng):
    x = rng.normal(size=(600, 16)) * rng.uniform(0.1, 10, size=16) + 5  # unequal scales and offsets
    w = rng.normal(size=(16, 3))
    y = x @ w + np.array([1.0, -2.0, 3.0])
    r2 = linear_probe_r2(x[:400], y[:400], x[400:], y[400:])
    assert r2.shape == (3,) and (r2 > 0.99).all()


def test_independent_target_is_not_decoded(rng):
    x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 2))
    r2 = linear_probe_r2(x[:400], y[:400], x[400:], y[400:])
    assert r2.shape == (2,) and (r2 < 0.1).all()


def test_vector_target_and_dual_form(rng):
    x = rng.normal(size=(200, 64))
    y = x[:, 0] - 0.5 * x[:, 1]
    r2 = linear_probe_r2(x[:150], y[:150], x[150:], y[150:])  # N=150 > D=64: primal
    assert r2.shape == () and float(r2) > 0.99
    r2 = linear_probe_r2(x[:40], y[:40], x[40:], y[40:], ridge=1e-3)  # N=40 < D=64: dual
    assert r2.shape == () and np.isfinite(r2)


def test_constant_test_target_is_nan(rng):
    x = rng.normal(size=(50, 4))
    y = np.stack([x[:, 0], np.ones(50)], axis=1)
    r2 = linear_probe_r2(x[:30], y[:30], x[30:], y[30:])
    assert r2[0] > 0.99 and np.isnan(r2[1])


@pytest.mark.parametrize("args", [
    (np.zeros((10, 4)), np.zeros(9), np.zeros((5, 4)), np.zeros(5)),
    (np.zeros((10, 4)), np.zeros(10), np.zeros((5, 3)), np.zeros(5)),
    (np.zeros((10, 4)), np.zeros((10, 2)), np.zeros((5, 4)), np.zeros((5, 3))),
    (np.zeros((10, 4)), np.zeros((10, 2)), np.zeros((5, 4)), np.zeros(5)),
    (np.zeros(10), np.zeros(10), np.zeros(5), np.zeros(5)),
])
def test_mismatched_shapes(args):
    with pytest.raises(ValueError):
        linear_probe_r2(*args)


def test_collapsed_features_warn(rng):
    # Every row is the same vector, plus tiny noise along a single direction: complete collapse
    # (tiny std) and dimensional collapse (one direction) at once.
    base, direction = rng.normal(size=32), rng.normal(size=32)
    f = base + 1e-6 * rng.normal(size=(500, 1)) * direction
    stats = collapse_stats(f)
    assert stats["std_mean"] < 1e-5 and stats["std_min"] <= stats["std_mean"]
    assert 1.0 <= stats["effective_rank"] < 1.1
    warning = collapse_warning(stats)
    assert warning is not None and "\n" not in warning and "collapsed" in warning


def test_constant_features():
    stats = collapse_stats(np.ones((10, 4)))
    assert stats["std_mean"] == 0 and stats["effective_rank"] == 0
    assert collapse_warning(stats) is not None


def test_isotropic_features_do_not_warn(rng):
    d = 32
    stats = collapse_stats(rng.normal(size=(2000, d)))
    assert stats["effective_rank"] > 0.8 * d and stats["rank_fraction"] > 0.8
    assert abs(stats["std_mean"] - 1) < 0.1
    assert collapse_warning(stats) is None


def test_low_rank_features_warn(rng):
    # Healthy scale but only 1 of 64 directions used: dimensional collapse alone.
    f = rng.normal(size=(1000, 1)) @ rng.normal(size=(1, 64))
    warning = collapse_warning(collapse_stats(f))
    assert warning is not None and "effective rank" in warning and "std" not in warning
