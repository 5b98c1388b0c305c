"""minippo.distributions: values against tests/reference.py, gradients against central
differences, properties (KL(p||p) = 0, KL >= 0, entropies), sampling and bad inputs.

Tolerances, and why (float64 unless said; u = 2^-53 ~ 1.1e-16; "measured": the worst over 20000-30000
draws of the tests' ranges, edges included):
- Gradients: norm-wise relative error < 1e-6 (minippo.gradcheck.rel_error, floor 1e-3). The functions
  are smooth with O(1) derivatives on the drawn ranges (|logits / T| <= 10, |log_std| <= 1), so central
  differences with h = 1e-6 in float64 are accurate to ~1e-9. The Categorical entropy gradient, which is
  exactly 0 at uniform logits, gets a floor scaled to its rounding noise instead (see
  test_categorical_entropy_grad).
- Categorical against tests/reference.py (Python loops, math.exp/log): log-probs reach |log p| <= 21.4
  (z = logits / T spans <= 20); each side rounds z, z - max z and log p = z - logsumexp (ulp/2 <= 1.8e-15)
  plus the logsumexp of <= 5 terms, <= ~7.5e-15 a side. Entropies and KLs weight those log-probs by p
  (sum 1) and add <= 5 products and sums of terms <= 30: <= ~3e-14 in all. atol 5e-14 for all three
  (were 1e-10; measured 3.6e-15, 6.7e-16, 2.7e-15). The probabilities sum to 1 within the logsumexp's
  error and <= 5 roundings (~10 u): rtol 1e-14 (was 1e-12; measured 5.6e-16).
- DiagGaussian log-probs and KLs against the reference: per dimension each side rounds ~7 times parts
  (0.5 ((a - m) / s)^2, the variance ratio, (m_p - m_q)^2 / s_q^2) no larger than the term plus |log_std| + 1 (<= 4);
  over d <= 5 dimensions: <= 14 u (|value| + 20) = 1.6e-15 |value| + 3.1e-14, values reaching ~100
  (log-probs) and ~600 (KLs): rtol 1e-14, atol 1e-13 (were atol 1e-10; measured 1.4e-14 and 1.1e-13, all
  within 1e-14 |value| + 2.1e-16). Entropies: <= 5 dimensions of ~4 roundings of values <= 2.42, summed
  to <= 12 (ulp/2 8.9e-16): <= ~2e-14 for both sides: atol 5e-14 (were 1e-10 against the reference and
  1e-12 against the closed form; measured 3.6e-15).
- Exact, by construction (were atol 1e-12 to 1e-15 or numpy's rtol 1e-7): KL(p || p) and its gradients
  for a copy of p (log p - log p = 0, exp(0) = 1, m - m = 0: every term is 0 * x or 0.5 - 0.5); a Gaussian's
  entropy for a shifted mean and for a broadcast log_std (the same operations on the same log_std
  values); logits / 2 at T = 2 against T = 1 (the same division, z = logits / T, then the same
  operations); log p = 0 for the argmax of [1000, 0, -1000] (exp(-1000) is 0, log 1 = 0). All measured
  equal.
- The other tolerances are stated beside their checks.
"""

import math

import numpy as np
import pytest
import reference as ref
from fixed_draws import FixedDraws
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minippo.distributions import Categorical, DiagGaussian, log_std_in_range, log_std_limit
from minippo.gradcheck import check_grads, numerical_grads, rel_error

TOL = 1e-6
FAST = settings(max_examples=30, deadline=None)

shapes = st.tuples(st.integers(1, 5), st.integers(1, 5))
temperatures = st.floats(0.3, 3.0)
seeds = st.integers(0, 2**31 - 1)


def _f64(elements_max):
    return st.floats(-elements_max, elements_max, allow_nan=False, width=64)


@st.composite
def logits_arrays(draw, n_min=1, n_max=5):
    b = draw(st.integers(1, 5))
    n = draw(st.integers(n_min, n_max))
    return draw(hnp.arrays(np.float64, (b, n), elements=_f64(3.0)))


# ---------------------------------------------------------------- Categorical: values
@FAST
@given(logits_arrays(), temperatures, seeds)
def test_categorical_values_match_reference(logits, temperature, seed):
    rng = np.random.default_rng(seed)
    b, n = logits.shape
    actions = rng.integers(0, n, size=b)
    d = Categorical(logits, temperature)
    np.testing.assert_allclose(d.probs.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(
        d.log_prob(actions), ref.categorical_log_prob(logits, actions, temperature), rtol=0, atol=5e-14
    )
    expected_h = ref.categorical_entropy(logits, temperature)
    np.testing.assert_allclose(d.entropy(), expected_h, rtol=0, atol=5e-14)
    other = rng.normal(size=logits.shape)
    expected_kl = ref.categorical_kl(logits, other, temperature, 1.3)
    np.testing.assert_allclose(d.kl(Categorical(other, 1.3)), expected_kl, rtol=0, atol=5e-14)


@FAST
@given(logits_arrays(), temperatures, seeds)
def test_categorical_kl_properties(logits, temperature, seed):
    d = Categorical(logits, temperature)
    np.testing.assert_array_equal(d.kl(Categorical(logits.copy(), temperature)), 0.0)  # p (log p - log p)
    other = Categorical(np.random.default_rng(seed).normal(size=logits.shape) * 2, temperature)
    # a KL rounds by <= ~3e-14 (see the module docstring): a true KL >= 0 computes >= -1e-13 (was -1e-12;
    # none came out negative in 20000 draws)
    assert np.all(d.kl(other) >= -1e-13)


@FAST
@given(st.integers(1, 5), st.integers(1, 10), _f64(50.0), temperatures)
def test_uniform_categorical_entropy_is_log_n(b, n, c, temperature):
    d = Categorical(np.full((b, n), c), temperature)
    # z - max z = 0 exactly, so log p = -fl(log n) and H = fl(log n) * sum p: <= n + 2 roundings of values
    # <= log 10 = 2.3, <= 3e-15: atol 1e-14 (was 1e-12; measured 6.7e-16)
    np.testing.assert_allclose(d.entropy(), math.log(n), rtol=0, atol=1e-14)


def test_temperature_flattens_and_sharpens():
    logits = np.array([[2.0, 0.0, -1.0]])
    h = [Categorical(logits, t).entropy()[0] for t in (0.5, 1.0, 2.0, 100.0)]
    assert h[0] < h[1] < h[2] < h[3] < math.log(3)
    np.testing.assert_array_equal(Categorical(logits, 2.0).probs, Categorical(logits / 2.0).probs)


def test_a_small_temperature_tends_to_the_argmax():
    """temperature is any positive number: T -> 0 turns softmax into the argmax's one-hot, with
    finite log-probs for every action while logits / T stays finite."""
    logits = np.array([[0.3, 0.2, -0.1]])
    for t in (1e-4, 1e-300):
        d = Categorical(logits, t)
        np.testing.assert_array_equal(d.probs, [[1.0, 0.0, 0.0]])
        # 0.2 / t - 0.3 / t (an exact difference; logsumexp = log 1 = 0) against -0.1 / t: two divisions and
        # the decimals' own representation errors, <= ~1e-15 relative: rel 1e-14 (was approx's 1e-6;
        # measured 4.4e-16)
        assert np.isfinite(d.log_probs).all() and d.log_prob(np.array([1]))[0] == pytest.approx(-0.1 / t, rel=1e-14)
    d = Categorical(logits, 0.01)  # between: still a proper distribution, sharper than at T = 1
    # (the sum of 3 probabilities: within ~10 u of 1, as in test_categorical_values_match_reference; measured 0)
    assert d.probs[0, 0] > Categorical(logits).probs[0, 0] and d.probs.sum() == pytest.approx(1.0, rel=1e-14)


def test_categorical_stable_for_huge_logits():
    d = Categorical(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.isfinite(d.log_probs).all()
    np.testing.assert_array_equal(d.log_prob(np.array([0])), 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_logits_spanning_more_than_the_float_range_stay_finite(dtype):
    """Finite logits whose range passes the largest float (z - max z overflows to -inf): the
    softmax is a one-hot there, so entropy 0, KL to itself 0, and every gradient finite (0 * -inf
    made them NaN). numpy warns of the overflow; that is all. A normal row beside it is unchanged."""
    big = np.finfo(dtype).max
    logits = np.array([[big, -big, 0.0], [-big, 0.5 * big, big], [0.3, -1.2, 2.0]], dtype)
    with pytest.warns(RuntimeWarning, match="overflow"):
        d = Categorical(logits)
    g = np.ones(3, dtype)
    assert np.isfinite(d.log_probs).all()
    np.testing.assert_array_equal(d.probs[:2], [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(d.entropy()[:2], 0.0)
    np.testing.assert_array_equal(d.kl(d), 0.0)
    np.testing.assert_array_equal(d.log_prob(np.array([0, 2, 1])), [0.0, 0.0, d.log_probs[2, 1]])
    grads = [d.entropy_grad(g)["logits"], d.log_prob_grad(np.array([0, 2, 1]), g)["logits"],
             *(side["logits"] for side in d.kl_grad(d, g))]
    for grad in grads:
        assert np.isfinite(grad).all()
        np.testing.assert_array_equal(grad[:2], 0.0)
    normal = Categorical(logits[2:])  # the same row alone: bit for bit what it was
    for a, b in ((d.log_probs[2:], normal.log_probs), (d.entropy()[2:], normal.entropy()),
                 (grads[0][2:], normal.entropy_grad(g[2:])["logits"])):
        np.testing.assert_array_equal(a, b)
    # the plain-loop reference (Python floats, skipping p = 0 terms) agrees on all three rows: the first two
    # are 0 on both sides (atol 0); the third's H = 0.56 carries a few roundings of log-probs <= 3.4 weighted
    # by p: float32 <= ~7e-7 relative, rtol 1e-6 (measured 1.1e-7); float64 <= ~4e-15, rtol 1e-14 (was
    # 1e-12; measured 2.0e-16)
    tol = dict(rtol=1e-6, atol=0) if dtype == np.float32 else dict(rtol=1e-14, atol=0)
    np.testing.assert_allclose(d.entropy(), ref.categorical_entropy(logits.tolist()), **tol)


# ---------------------------------------------------------------- Categorical: gradients
@FAST
@given(logits_arrays(), temperatures, seeds)
def test_categorical_log_prob_grad(logits, temperature, seed):
    rng = np.random.default_rng(seed)
    b, n = logits.shape
    actions = rng.integers(0, n, size=b)
    g = rng.normal(size=b)
    p = {"logits": logits}

    def f():
        return float((g * Categorical(p["logits"], temperature).log_prob(actions)).sum())

    grads = Categorical(logits, temperature).log_prob_grad(actions, g)
    assert check_grads(f, p, grads) < TOL


@FAST
@example(np.zeros((2, 3)), 1.1453084330751704, 3)  # failed with check_grads' |f|-scaled floor: 1.39e-6
@given(logits_arrays(), temperatures, seeds)
def test_categorical_entropy_grad(logits, temperature, seed):
    g = np.random.default_rng(seed).normal(size=logits.shape[0])
    p = {"logits": logits}

    def f():
        return float((g * Categorical(p["logits"], temperature).entropy()).sum())

    d = Categorical(logits, temperature)
    # At uniform logits the true gradient is exactly 0, so the comparison is against the floor,
    # i.e. absolute. Each central difference carries rounding noise ~ eps_mach * S / h with
    # S = sum_i |g_i H_i|, the size of the terms summed into f (f itself may cancel to ~0, so
    # check_grads' max(1, |f|) scaling underestimates it); the norm over logits.size entries
    # adds sqrt(size). Measured worst over 6000 random cases with this floor: 2e-7 (< TOL / 5).
    scale = max(1.0, float(np.abs(g * d.entropy()).sum())) * math.sqrt(logits.size)
    num = numerical_grads(f, p)["logits"]
    assert rel_error(d.entropy_grad(g)["logits"], num, floor=1e-3 * scale) < TOL


@FAST
@given(logits_arrays(), temperatures, temperatures, seeds)
def test_categorical_kl_grad_both_sides(logits, t_p, t_q, seed):
    rng = np.random.default_rng(seed)
    q_logits = rng.normal(size=logits.shape) * 2
    g = rng.normal(size=logits.shape[0])
    p = {"p": logits, "q": q_logits}

    def f():
        return float((g * Categorical(p["p"], t_p).kl(Categorical(p["q"], t_q))).sum())

    d_p, d_q = Categorical(logits, t_p).kl_grad(Categorical(q_logits, t_q), g)
    assert check_grads(f, p, {"p": d_p["logits"], "q": d_q["logits"]}) < TOL


def test_categorical_kl_grad_zero_at_equal_distributions():
    logits = np.random.default_rng(0).normal(size=(4, 3))
    d_p, d_q = Categorical(logits).kl_grad(Categorical(logits.copy()), np.ones(4))
    np.testing.assert_array_equal(d_p["logits"], 0.0)  # p (log p - log p) - p * 0
    np.testing.assert_array_equal(d_q["logits"], 0.0)  # q - p with q = p


# ---------------------------------------------------------------- DiagGaussian
@st.composite
def gaussian_case(draw):
    b, d = draw(shapes)
    mean = draw(hnp.arrays(np.float64, (b, d), elements=_f64(2.0)))
    log_std = draw(hnp.arrays(np.float64, (b, d), elements=_f64(1.0)))
    seed = draw(seeds)
    return mean, log_std, seed


@FAST
@given(gaussian_case())
def test_gaussian_values_match_reference(case):
    mean, log_std, seed = case
    rng = np.random.default_rng(seed)
    actions = mean + rng.normal(size=mean.shape)
    d = DiagGaussian(mean, log_std)
    np.testing.assert_allclose(d.log_prob(actions), ref.gaussian_log_prob(mean, log_std, actions),
                               rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(d.entropy(), ref.gaussian_entropy(log_std), rtol=0, atol=5e-14)
    mq, lq = rng.normal(size=mean.shape), rng.normal(size=mean.shape) * 0.5
    np.testing.assert_allclose(d.kl(DiagGaussian(mq, lq)), ref.gaussian_kl(mean, log_std, mq, lq),
                               rtol=1e-14, atol=1e-13)


@FAST
@given(gaussian_case())
def test_gaussian_entropy_formula_and_kl_properties(case):
    mean, log_std, seed = case
    d = DiagGaussian(mean, log_std)
    # H = sum_i (1/2) log(2 pi e sigma_i^2), independent of the mean
    expected = 0.5 * np.log(2 * np.pi * np.e * np.exp(2 * log_std)).sum(axis=1)
    np.testing.assert_allclose(d.entropy(), expected, rtol=0, atol=5e-14)
    np.testing.assert_array_equal(DiagGaussian(mean + 5.0, log_std).entropy(), d.entropy())
    np.testing.assert_array_equal(d.kl(DiagGaussian(mean.copy(), log_std.copy())), 0.0)
    rng = np.random.default_rng(seed)
    other = DiagGaussian(rng.normal(size=mean.shape), rng.normal(size=mean.shape))
    # a KL rounds by <= 14 u (KL + 20) (module docstring), ~2e-14 near 0: >= -1e-13 (was -1e-12; none
    # came out negative in 30000 draws)
    assert np.all(d.kl(other) >= -1e-13)


def test_gaussian_state_independent_log_std_broadcasts():
    mean = np.zeros((3, 2))
    d = DiagGaussian(mean, np.array([0.1, -0.3]))
    assert d.log_std.shape == (3, 2)
    per_row = DiagGaussian(mean, np.tile([0.1, -0.3], (3, 1)))
    np.testing.assert_array_equal(d.entropy(), per_row.entropy())


@FAST
@given(gaussian_case())
def test_gaussian_log_prob_grad(case):
    mean, log_std, seed = case
    rng = np.random.default_rng(seed)
    actions = mean + np.exp(log_std) * rng.normal(size=mean.shape)
    g = rng.normal(size=mean.shape[0])
    p = {"mean": mean, "log_std": log_std}

    def f():
        return float((g * DiagGaussian(p["mean"], p["log_std"]).log_prob(actions)).sum())

    assert check_grads(f, p, DiagGaussian(mean, log_std).log_prob_grad(actions, g)) < TOL


@FAST
@given(gaussian_case())
def test_gaussian_entropy_grad(case):
    mean, log_std, seed = case
    g = np.random.default_rng(seed).normal(size=mean.shape[0])
    p = {"mean": mean, "log_std": log_std}

    def f():
        return float((g * DiagGaussian(p["mean"], p["log_std"]).entropy()).sum())

    # d/dmean is exactly 0: compared with the floor (absolute), see rel_error
    assert check_grads(f, p, DiagGaussian(mean, log_std).entropy_grad(g)) < TOL


@FAST
@given(gaussian_case())
def test_gaussian_kl_grad_both_sides(case):
    mean, log_std, seed = case
    rng = np.random.default_rng(seed)
    mq, lq = rng.normal(size=mean.shape), rng.normal(size=mean.shape) * 0.5
    g = rng.normal(size=mean.shape[0])
    p = {"mp": mean, "lp": log_std, "mq": mq, "lq": lq}

    def f():
        kl = DiagGaussian(p["mp"], p["lp"]).kl(DiagGaussian(p["mq"], p["lq"]))
        return float((g * kl).sum())

    d_p, d_q = DiagGaussian(mean, log_std).kl_grad(DiagGaussian(mq, lq), g)
    grads = {"mp": d_p["mean"], "lp": d_p["log_std"], "mq": d_q["mean"], "lq": d_q["log_std"]}
    assert check_grads(f, p, grads) < TOL


def test_gaussian_shared_log_std_grad_sums_over_batch():
    """With a (d,) log_std the per-row gradient summed over the batch is d/d log_std."""
    rng = np.random.default_rng(3)
    mean, actions, g = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng.normal(size=4)
    p = {"log_std": np.array([0.2, -0.4])}

    def f():
        return float((g * DiagGaussian(mean, p["log_std"]).log_prob(actions)).sum())

    per_row = DiagGaussian(mean, p["log_std"]).log_prob_grad(actions, g)["log_std"]
    assert check_grads(f, p, {"log_std": per_row.sum(axis=0)}) < TOL


# ---------------------------------------------------------------- sampling and mode
def test_categorical_sample_never_draws_an_action_of_probability_zero():
    """u = 0 and u = the largest float below 1, against softmaxes with underflowed (p = 0) first and
    last entries: the draw is the first and the last action of nonzero probability. With n equal
    logits the rounded total of the CDF is below 1 for some n (then u = 1 - 2^-53 passes all of it:
    the last nonzero action, not the last action, is taken). One zero before the n, two after: with
    the same count on both sides, the first nonzero action counted from the front would give the
    same index as the last one counted from the back."""
    top = np.nextafter(1.0, 0.0)
    below = 0
    for n in range(1, 20):
        logits = np.array([[-1000.0] + [0.0] * n + [-1000.0, -1000.0]] * 2)
        d = Categorical(logits)
        assert d.probs[0, 0] == d.probs[0, -2] == d.probs[0, -1] == 0.0
        below += np.cumsum(d.probs[0])[-1] < top
        np.testing.assert_array_equal(d.sample(FixedDraws([[0.0], [top]])), [1, n])
    assert below  # the "past the rounded total" case was met


def test_categorical_sample_frequencies_and_mode():
    """Sampled frequencies match the probabilities (a guard: session 55 took 10x the draws and a stated
    tolerance, where 0.015 let a CDF off by 1% pass); the mode; the same seed, the same draws."""
    logits = np.log(np.array([[0.2, 0.5, 0.3]]))
    n = 200_000
    d = Categorical(np.repeat(logits, n, axis=0))
    a = d.sample(np.random.default_rng(0))
    assert a.dtype == np.int64 and a.shape == (n,)
    # a frequency's std is sqrt(p (1 - p) / n) <= 0.0011: 0.005 is 4.5 of them, and a CDF off by 1%
    # (one probability moved to its neighbour) fails
    np.testing.assert_allclose(np.bincount(a, minlength=3) / n, [0.2, 0.5, 0.3], atol=0.005)
    assert d.mode()[0] == 1
    a2 = d.sample(np.random.default_rng(0))
    np.testing.assert_array_equal(a, a2)  # same Generator seed, same draws


def test_gaussian_sample_moments_and_mode():
    mean = np.tile([1.0, -2.0], (20000, 1))
    d = DiagGaussian(mean, np.log(np.array([0.5, 2.0])))
    a = d.sample(np.random.default_rng(1))
    assert a.shape == mean.shape and a.dtype == np.float64
    # 5 standard errors of n = 20000 draws (fixed seed, so no flakiness): sigma / sqrt(n) for each
    # mean, 1 / sqrt(2 n) relative for each std; a sampler off by 2.5% of sigma fails
    n, sigma = len(a), np.array([0.5, 2.0])
    assert np.all(np.abs(a.mean(axis=0) - [1.0, -2.0]) <= 5 * sigma / np.sqrt(n))
    np.testing.assert_allclose(a.std(axis=0), sigma, rtol=5 / np.sqrt(2 * n))
    np.testing.assert_array_equal(d.mode(), mean)


# ---------------------------------------------------------------- bad inputs
def test_categorical_bad_inputs():
    with pytest.raises(ValueError, match=r"logits must have shape \(B, n_actions\)"):
        Categorical(np.zeros(3))
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            Categorical(np.zeros((2, 3)), t)
    for bad in (np.nan, np.inf, -np.inf):
        logits = np.zeros((2, 3))
        logits[1, 2] = bad
        with pytest.raises(FloatingPointError, match="logits contains NaN or inf"):
            Categorical(logits)
    d = Categorical(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"actions must have shape \(2,\)"):
        d.log_prob(np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 3\)"):
        d.log_prob(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 3\)"):
        d.log_prob(np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 3\)"):
        d.log_prob(np.array([0.5, 1.0]))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float64])
def test_categorical_checks_each_new_actions_array(dtype):
    """The checked-actions cache is per array object: a second array on the same distribution is
    checked and used (not the first one's indices), a bad one after a good one is refused, and
    log_prob_grad follows the array it is given."""
    logits = np.random.default_rng(0).normal(size=(3, 4))
    d = Categorical(logits)
    a1, a2 = np.array([0, 1, 2], dtype), np.array([3, 2, 1], dtype)
    rows = np.arange(3)
    np.testing.assert_array_equal(d.log_prob(a1), d.log_probs[rows, [0, 1, 2]])
    np.testing.assert_array_equal(d.log_prob(a2), d.log_probs[rows, [3, 2, 1]])
    g = np.array([1.0, -2.0, 0.5])
    np.testing.assert_array_equal(d.log_prob_grad(a1, g)["logits"],
                                  Categorical(logits).log_prob_grad(a1, g)["logits"])
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 4\)"):
        d.log_prob(np.array([0, 4, 1], dtype))
    drawn = d.sample(np.random.default_rng(1))  # trusted by construction; another array still checked
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 4\)"):
        d.log_prob(np.array([-1, 0, 1], dtype))
    np.testing.assert_array_equal(d.log_prob(drawn), d.log_probs[rows, drawn])


def test_gaussian_bad_inputs():
    with pytest.raises(ValueError, match=r"mean must have shape \(B, action_dim\)"):
        DiagGaussian(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"log_std must have shape \(2,\) or \(3, 2\)"):
        DiagGaussian(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(FloatingPointError, match="mean contains NaN or inf"):
        DiagGaussian(np.array([[np.nan, 0.0]]), np.zeros(2))
    with pytest.raises(FloatingPointError, match="log_std contains NaN or inf"):
        DiagGaussian(np.zeros((1, 2)), np.array([0.0, np.inf]))
    d = DiagGaussian(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"actions must have shape \(3, 2\)"):
        d.log_prob(np.zeros((3,)))
    with pytest.raises(ValueError, match=r"actions must have shape \(3, 2\)"):
        d.log_prob_grad(np.zeros((2, 2)), np.ones(3))
    d.log_prob(np.zeros((3, 2)))  # a good array first: each new array is still checked
    for bad in (np.nan, np.inf):
        a = np.zeros((3, 2))
        a[2, 1] = bad
        with pytest.raises(FloatingPointError, match="actions contains NaN or inf"):
            d.log_prob(a)
        with pytest.raises(FloatingPointError, match="actions contains NaN or inf"):
            DiagGaussian(np.zeros((3, 2)), np.zeros(2)).log_prob_grad(a, np.ones(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_far_log_std_stays_finite_up_to_the_documented_bound(dtype):
    """Up to |log_std| = floor(log(float max)) (88 in float32, 709 in float64) every quantity is finite
    and KL(p || p) is 0: s_p^2 / s_q^2 as inf / inf was NaN from |log_std| ~ 44 in float32, and
    (a - mu) / s as 0 / 0 once s underflowed. Past the bound, a ValueError naming log_std."""
    lim = {np.float32: 88, np.float64: 709}[dtype]
    g = np.ones(2, dtype)
    for ls in (-lim, -45.0, 45.0, lim):
        mean = np.array([[0.0, 1.0], [2.0, -3.0]], dtype)
        p = DiagGaussian(mean, np.full(2, ls, dtype))
        np.testing.assert_array_equal(p.kl(p), 0.0)
        # log N(mu; mu, s) = -d (log s + log(2 pi)/2), d = 2 (u = 0 exactly): -ls - log(2 pi)/2 twice and
        # their sum, 3 roundings in the dtype of values <= 2 |ls| + 2, against one float64 expression
        # rounded to the dtype: rtol 4 eps (measured equal)
        np.testing.assert_allclose(p.log_prob(mean.copy()), -2.0 * (ls + 0.5 * math.log(2 * math.pi)),
                                   rtol=4 * np.finfo(dtype).eps)
        (ds, do) = p.kl_grad(p, g)
        for grad in (*ds.values(), *do.values()):  # at q = p: every KL gradient is 0
            np.testing.assert_array_equal(grad, 0.0)
        for grad in p.log_prob_grad(mean.copy(), g).values():
            assert np.isfinite(grad).all()
    for ls in (lim + 1.0, -(lim + 1.0)):
        with pytest.raises(ValueError, match=rf"^log_std must lie in \[-{lim}, {lim}\] for {np.dtype(dtype)}"):
            DiagGaussian(np.zeros((1, 2), dtype), np.array([0.0, ls], dtype))


def test_categorical_kl_grad_against_a_held_opposite_row_is_finite():
    """p = onehot(0), q = onehot(1) from logits spanning the float range both ways (held, see
    Categorical): the KL is the largest float, and dKL/dz_p is 0 (p (c - KL) made 0 * -inf = NaN where
    p = 0); dKL/dz_q = q - p."""
    for dtype in (np.float32, np.float64):
        big = 0.9 * np.finfo(dtype).max
        with np.errstate(over="ignore"):
            p, q = Categorical(np.array([[big, -big]], dtype)), Categorical(np.array([[-big, big]], dtype))
        d_p, d_q = p.kl_grad(q, np.ones(1, dtype))
        np.testing.assert_array_equal(d_p["logits"], 0.0)
        np.testing.assert_array_equal(d_q["logits"], [[-1.0, 1.0]])


@pytest.mark.parametrize("g_dtype", [np.bool_, np.uint8, np.int64])
def test_bool_and_integer_upstream_gradients_act_as_floats(g_dtype):
    """g = 1 of any real dtype gives the gradients g = 1.0 gives (a uint8 g was negated before it became
    a float: -1 wrapped to 255; a bool one failed in numpy's boolean negative)."""
    cat = Categorical(np.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]]), 0.7)
    other = Categorical(np.array([[1.0, 0.2, -0.3], [0.0, 0.5, 0.1]]))
    gau = DiagGaussian(np.array([[0.3, -1.0], [0.5, 2.0]]), np.array([0.2, -0.4]))
    gau_q = DiagGaussian(np.array([[0.0, 1.0], [-0.5, 1.5]]), np.array([-0.1, 0.3]))
    acts, a = np.array([0, 2]), np.array([[0.1, 0.2], [0.3, -0.4]])
    calls = (lambda g: [cat.log_prob_grad(acts, g)], lambda g: [cat.entropy_grad(g)],
             lambda g: list(cat.kl_grad(other, g)), lambda g: [gau.log_prob_grad(a, g)],
             lambda g: [gau.entropy_grad(g)], lambda g: list(gau.kl_grad(gau_q, g)))
    for call in calls:
        for got, want in zip(call(np.ones(2, g_dtype)), call(np.ones(2)), strict=True):
            for k in want:
                assert got[k].dtype == want[k].dtype
                np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_std_in_range_takes_the_limit_itself_as_diaggaussian_does(dtype):
    """|log_std| <= log_std_limit(dtype), both ends included, as DiagGaussian takes it: the fused numba
    step checks dist_old with log_std_in_range, so a strict ``<`` there (it survived the suite) refused
    a batch whose old log_std sat at the limit where the numpy path trains on it."""
    lim = log_std_limit(dtype)  # 88 / 709
    edge = np.array([[-lim, 0.0, lim]], dtype)
    DiagGaussian(np.zeros((1, 3), dtype), edge)
    log_std_in_range(edge)
    past = np.nextafter(dtype(lim), dtype(np.inf))
    for bad in (past, -past, np.nan):
        with pytest.raises(ValueError, match="log_std must lie in"):
            log_std_in_range(np.array([[0.0, bad]], dtype))
