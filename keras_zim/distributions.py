"""The zero-inflated multinomial as a TensorFlow Probability distribution."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_zim import sampling

tfd = tfp.distributions

__all__ = ["ZeroInflatedMultinomial", "reference_sample"]


class ZeroInflatedMultinomial(tfd.Distribution):
    """Counts of `n` trials that each pass a Bernoulli(r) gate, then land on q.

    The distribution of ZIM's update counts, over vectors of the last
    dimension of `probs`. Sampling uses keras_zim's exact XLA sampler, the one
    the optimizer's update step calls; `log_prob` and the moments come from
    TFP's `Multinomial` over `[1 - r, r q]`.

    #### Mathematical details

    ```none
    (x_0, x_1, ..., x_k) ~ Multinomial(n, [1 - r, r q_1, ..., r q_k])
    x = (x_1, ..., x_k)                         (the no-op count x_0 dropped)
    pmf(x) = Multinomial(n, [1 - r, r q]).pmf([n - sum(x), x])
    E[x_i] = n r q_i,  Var[x_i] = n r q_i (1 - r q_i),  Cov[x_i, x_j] = -n r^2 q_i q_j
    sum(x) ~ Binomial(n, r);  given sum(x) = N, x ~ Multinomial(N, q)
    ```

    Args:
        total_count: trials `n`, a non-negative whole-valued float tensor.
        rate: zero-inflation rate `r` in [0, 1], a float tensor.
        probs: float tensor `[..., k]` of category probabilities summing to 1.
        validate_args: Python bool, check the parameters (and `log_prob`'s
            argument) at run time. Defaults to `False`.
        allow_nan_stats: Python bool. Defaults to `True`.
        name: Defaults to `"ZeroInflatedMultinomial"`.

    Example:

    >>> dist = ZeroInflatedMultinomial(total_count=10., rate=0.5, probs=[0.25, 0.75])
    >>> dist.sample(3, seed=[0, 1]).shape
    TensorShape([3, 2])
    >>> float(dist.mean()[1])
    3.75
    """

    def __init__(
        self,
        total_count,
        rate,
        probs,
        validate_args=False,
        allow_nan_stats=True,
        name="ZeroInflatedMultinomial",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = tf.as_dtype(getattr(probs, "dtype", tf.float32))
            dtype = dtype if dtype.is_floating else tf.float32
            self._total_count = tf.convert_to_tensor(total_count, dtype=dtype, name="total_count")
            self._rate = tf.convert_to_tensor(rate, dtype=dtype, name="rate")
            self._probs = tf.convert_to_tensor(probs, dtype=dtype, name="probs")
            super().__init__(
                dtype=dtype,
                reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            total_count=tfp.util.ParameterProperties(),
            rate=tfp.util.ParameterProperties(),
            probs=tfp.util.ParameterProperties(event_ndims=1),
        )

    @property
    def total_count(self):
        """Number of trials `n`."""
        return self._total_count

    @property
    def rate(self):
        """Zero-inflation rate `r`: the probability that a trial passes its gate."""
        return self._rate

    @property
    def probs(self):
        """Category probabilities `q` of a passing trial."""
        return self._probs

    def _event_shape_tensor(self):
        return tf.shape(self._probs)[-1:]

    def _event_shape(self):
        return self._probs.shape[-1:]

    def _multinomial(self):
        """TFP's Multinomial over [no-op, categories] with probs [1 - r, r q]."""
        rate = self._rate[..., None]
        moved = rate * self._probs
        stay = tf.broadcast_to(1.0 - rate, tf.concat([tf.shape(moved)[:-1], [1]], 0))
        probs = tf.concat([stay, moved], axis=-1)
        return tfd.Multinomial(
            total_count=self._total_count, probs=probs, validate_args=self.validate_args
        )

    def _sample_n(self, n, seed=None):
        seed = tfp.random.sanitize_seed(seed)
        batch = self.batch_shape_tensor()
        k = self._probs.shape[-1]
        probs = tf.broadcast_to(self._probs, tf.concat([[n], batch, [k]], 0))
        total = tf.broadcast_to(self._total_count, tf.concat([[n], batch], 0))
        rate = tf.broadcast_to(self._rate, tf.concat([[n], batch], 0))
        static_n = tf.get_static_value(self._total_count)
        static_r = tf.get_static_value(self._rate)
        chunk = 1024
        if static_n is not None:
            rate_hint = 1.0 if static_r is None else float(np.max(static_r))
            chunk = sampling.chunk_size(int(np.max(static_n)), rate_hint)
        counts = sampling.sample_counts(
            tf.reshape(probs, [-1, k]), tf.reshape(total, [-1]), tf.reshape(rate, [-1]), seed, chunk
        )
        return tf.reshape(tf.cast(counts, self.dtype), tf.shape(probs))

    def _log_prob(self, x):
        shape = tf.broadcast_dynamic_shape(
            tf.shape(x), tf.concat([self.batch_shape_tensor(), self._event_shape_tensor()], 0)
        )
        x = tf.broadcast_to(x, shape)
        no_op = self._total_count - tf.reduce_sum(x, axis=-1)
        return self._multinomial().log_prob(tf.concat([no_op[..., None], x], axis=-1))

    def _mean(self):
        return self._multinomial().mean()[..., 1:]

    def _variance(self):
        return self._multinomial().variance()[..., 1:]

    def _covariance(self):
        return self._multinomial().covariance()[..., 1:, 1:]

    def _default_event_space_bijector(self):
        return None

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        checks = []
        n, r, q = self._total_count, self._rate, self._probs
        checks.append(tf.debugging.assert_non_negative(n, message="`total_count` must be >= 0."))
        checks.append(
            tf.debugging.assert_equal(n, tf.round(n), message="`total_count` must be whole.")
        )
        checks.append(tf.debugging.assert_non_negative(r, message="`rate` must be in [0, 1]."))
        checks.append(
            tf.debugging.assert_less_equal(r, tf.ones([], r.dtype), message="`rate` must be in [0, 1].")
        )
        checks.append(tf.debugging.assert_non_negative(q, message="`probs` must be >= 0."))
        checks.append(
            tf.debugging.assert_near(
                tf.reduce_sum(q, -1), tf.ones([], q.dtype), message="`probs` must sum to 1."
            )
        )
        return checks

    def _sample_control_dependencies(self, x):
        if not self.validate_args:
            return []
        return [
            tf.debugging.assert_non_negative(x, message="Samples must be >= 0."),
            tf.debugging.assert_equal(x, tf.round(x), message="Samples must be whole."),
            tf.debugging.assert_less_equal(
                tf.reduce_sum(x, -1), self._total_count, message="Samples must sum to <= total_count."
            ),
        ]


def reference_sample(total_count, rate, probs, seed):
    """One draw by the definition, with TFP's own distributions (slow, exact).

    Each of `n` trials passes a `tfd.Bernoulli(r)` gate; the `N` that pass are
    placed by `tfd.Multinomial(N, q)` (which loops over categories). The
    yardstick for keras_zim's fast sampler in tests and benchmarks.

    Args:
        total_count: Python int `n`.
        rate: float `r` in [0, 1].
        probs: float vector `q`.
        seed: stateless seed, int tensor of shape `[2]`.

    Returns:
        float tensor shaped like `probs`: the counts.
    """
    gate_seed, place_seed = tfp.random.split_seed(seed)
    gates = tfd.Bernoulli(probs=rate, dtype=tf.int32).sample(total_count, seed=gate_seed)
    passing = tf.cast(tf.reduce_sum(gates), tf.convert_to_tensor(probs).dtype)
    return tfd.Multinomial(total_count=passing, probs=probs).sample(seed=place_seed)
