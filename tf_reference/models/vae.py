"""Original `_vae.py` (mnist_vae, fmnist_vae): conv encoder to an 8-d latent, sampled z, deconv decoder.

Every layer has the default initialiser (glorot_uniform kernel, zero bias); lrelu(x) = max(x, 0.3 x);
dropout rate 0.2, train phase only; epsilon ~ N(0, 1) is drawn in every phase.
"""
from tf_reference._tf import tf


def lrelu(x, alpha=0.3):
    return tf.maximum(x, tf.multiply(x, alpha))


def vae(n_latent: int = 8):
    def encoder(g, x, training):
        with g.variable_scope("encoder"):
            x = tf.reshape(x, shape=[-1, 28, 28, 1])
            x = g.conv2d(x, 64, 4, 2, padding="same", activation=lrelu)
            x = g.dropout(x, rate=0.2, training=training)
            x = g.conv2d(x, 64, 4, 2, padding="same", activation=lrelu)
            x = g.dropout(x, rate=0.2, training=training)
            x = g.conv2d(x, 64, 4, 1, padding="same", activation=lrelu)
            x = g.dropout(x, rate=0.2, training=training)
            x = tf.reshape(x, [-1, 7 * 7 * 64])  # tf.contrib.layers.flatten (NHWC order)
            mean = g.dense(x, units=n_latent)
            std_dev = 0.5 * g.dense(x, units=n_latent)
            epsilon = g.random_normal("encoder/epsilon", (x.shape[0], n_latent))
            z = g.tap("encoder/z", tf.add(mean, tf.multiply(epsilon, tf.exp(std_dev))))
            return z, mean, std_dev

    def decoder(g, sampled_z, training):
        with g.variable_scope("decoder"):
            x = g.dense(sampled_z, units=24, activation=lrelu)
            x = g.dense(x, units=24 * 2 + 1, activation=lrelu)
            x = tf.reshape(x, [-1, 7, 7, 1])
            x = g.conv2d_transpose(x, 64, 4, 2, activation=tf.nn.relu)
            x = g.dropout(x, rate=0.2, training=training)
            x = g.conv2d_transpose(x, 64, 4, 1, activation=tf.nn.relu)
            x = g.dropout(x, rate=0.2, training=training)
            x = g.conv2d_transpose(x, 64, 4, 1, activation=tf.nn.relu)
            x = tf.reshape(x, [-1, 14 * 14 * 64])
            x = g.dense(x, units=28 * 28, activation=tf.nn.sigmoid)
            return tf.reshape(x, shape=[-1, 28, 28])

    def forward(g, x, training):
        x = tf.reshape(x, shape=[-1, 28 * 28])
        sampled_z, mean, std_dev = encoder(g, x, training)
        return decoder(g, sampled_z, training), mean, std_dev
    return forward


def vae_losses(outputs, images):
    """Per image: sum of squared error over the 784 pixels + the latent KL term (mnist_vae.py)."""
    img, mean, std_dev = outputs
    flatten_img = tf.reshape(img, [-1, 28 * 28])
    x_flat = tf.reshape(images, shape=[-1, 28 * 28])
    img_loss = tf.reduce_sum(tf.math.squared_difference(flatten_img, x_flat), 1)
    latent_loss = -0.5 * tf.reduce_sum(1.0 + 2.0 * std_dev - tf.square(mean) - tf.exp(2.0 * std_dev), 1)
    return img_loss + latent_loss
