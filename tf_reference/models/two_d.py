"""Original `two_d_rosenbrock.py`, `two_d_beale.py`, `two_d_branin.py`: f(u, v) + u*x + v*y per example.

u and v are the scalar variables "weight" and "bias", initialised to the original's starting point;
(x, y) is one `two_d` data point (N(0, 1) noise; the v1.2 test set is all zeros).
"""
import numpy as np

from tf_reference import initializers
from tf_reference._tf import tf


def rosenbrock(u, v):
    return (1 - u)**2 + 100 * (v - u**2)**2


def beale(u, v):
    return (1.5 - u + u * v)**2 + (2.25 - u + u * v**2)**2 + (2.625 - u + u * v**3)**2


def branin(u, v):
    a, b, c, r, s, t = 1., 5.1 / (4. * np.pi**2), 5 / np.pi, 6., 10., 1 / (8. * np.pi)
    return a * (v - b * u**2 + c * u - r)**2 + s * (1 - t) * tf.cos(u) + s


FUNCTIONS = {"rosenbrock": (rosenbrock, (-0.5, 1.5)), "beale": (beale, (-4.5, 4.5)),
             "branin": (branin, (2.5, 12.5))}


def two_d(function: str):
    f, starting_point = FUNCTIONS[function]

    def forward(g, inputs, training):
        x, y = inputs
        u = g.get_variable("weight", (), initializers.constant(starting_point[0]))
        v = g.get_variable("bias", (), initializers.constant(starting_point[1]))
        return f(u, v) + u * x + v * y
    return forward
