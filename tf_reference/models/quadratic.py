"""Original `_quadratic.py` and `quadratic_deep.py`: loss 0.5 (theta - x)^T Q (theta - x) per example.

The Hessian is built in NumPy exactly as the original builds it: from a module-level
`np.random.RandomState(42)`, 90 eigenvalues U(0, 1), then 10 U(30, 60), then `random_rotation(100)`
(Diaconis-Shahshahani subgroup algorithm, returning -R), Q = R^T diag(lambda) R. Because the
generator is module-level, the n-th `quadratic_deep` instance of one process draws the n-th Hessian
of that stream: `deep_hessian(instance)` replays it. A run of the original builds one test problem
per process, so instance 0 is the Hessian the published results used, and the default here.
"""
import numpy as np

from tf_reference import initializers
from tf_reference._tf import tf

DIM = 100


def random_rotation(D, rng):
    """The original's random_rotation, line for line, drawing from `rng`."""
    assert D >= 2
    D = int(D)
    t = 2 * np.pi * rng.uniform()
    R = [[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]
    for d in range(2, D):
        v = rng.normal(size=(d + 1, 1))
        v = np.divide(v, np.sqrt(np.transpose(v).dot(v)))
        e = np.concatenate((np.array([[1.0]]), np.zeros((d, 1))), axis=0)
        x = np.divide((e - v), (np.sqrt(np.transpose(e - v).dot(e - v))))
        D = np.vstack([np.hstack([[[1.0]], np.zeros((1, d))]), np.hstack([np.zeros((d, 1)), R])])
        R = D - 2 * np.outer(x, np.transpose(x).dot(D))
    return np.negative(R)


def _next_deep_hessian(rng) -> np.ndarray:
    eigenvalues = np.concatenate((rng.uniform(0., 1., 90), rng.uniform(30., 60., 10)), axis=0)
    D = np.diag(eigenvalues)
    R = random_rotation(D.shape[0], rng)
    return np.matmul(np.transpose(R), np.matmul(D, R))


def deep_hessian(instance: int = 0) -> np.ndarray:
    """The Hessian of the `instance`-th quadratic_deep created in one process of the original (float64)."""
    rng = np.random.RandomState(42)
    for _ in range(instance):
        _next_deep_hessian(rng)
    return _next_deep_hessian(rng)


def quadratic(hessian: np.ndarray):
    def forward(g, x, training):
        # tf.convert_to_tensor(hessian, dtype=tf.float32) in the original: the graph's dtype here.
        q = g.tap("hessian", tf.convert_to_tensor(hessian, dtype=g.dtype))
        theta = g.get_variable("theta", (1, q.shape[0]), initializers.constant(1.0))
        return tf.linalg.tensor_diag_part(0.5 * tf.matmul(
            tf.subtract(theta, x), tf.matmul(q, tf.transpose(tf.subtract(theta, x)))))
    return forward
