"""BatchNormalization whose training step runs on TensorFlow's fused kernel.

Keras 3's `BatchNormalization` trains with separate ops: the batch moments
(mean, squared difference, mean), then the normalisation, and their
gradients (tiles, sums, multiplies): about a dozen passes over every
activation. On the TensorFlow backend this module's `BatchNormalization`
computes the same thing with one `FusedBatchNormV3` forward and one gradient
kernel (oneDNN on CPU, cuDNN on GPU):

    mean = E[x],  var = E[(x - mean)^2]        over batch, height, width
    y = gamma * (x - mean) / sqrt(var + epsilon) + beta
    moving_mean     <- momentum * moving_mean     + (1 - momentum) * mean
    moving_variance <- momentum * moving_variance + (1 - momentum) * var

The kernel returns the unbiased variance `var * n / (n - 1)`; it is scaled
back, so the moving variance is the biased one Keras keeps. Everything else
(inference, masks, renorm, synchronized statistics, other ranks or axes,
epsilon below the kernel's 1.001e-5, other backends) is Keras' own code, so
the layer is a drop-in: same weights, same config, same exported graph. It
keeps Keras' class name because a `.keras` file addresses weights by the
snake-cased class name of each layer: files saved with Keras' layer load.

This is the one layer that calls TensorFlow directly (`keras.ops` has no
fused batch norm); the import is lazy and only on the TensorFlow backend.
docs/RESULTS.md ("Training throughput") has what it saves.
"""

import keras
from keras import ops

# cuDNN's CUDNN_BN_MIN_EPSILON; TensorFlow's kernel refuses anything smaller.
FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="keras_solo")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` trained on TensorFlow's fused kernel.

    Same arguments, weights and outputs as the Keras layer; see the module
    docstring for when the fused kernel runs.
    """

    def _fusable(self, inputs, training, mask):
        return (training and self.trainable and mask is None and keras.backend.backend() == "tensorflow"
                and len(inputs.shape) == 4 and list(self._reduction_axes) == [0, 1, 2]
                and not self.renorm and not self.synchronized and self.epsilon >= FUSED_MIN_EPSILON)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = ops.cast(inputs, "float32")  # statistics in float32, as Keras computes them
        channels = x.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,), "float32")
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,), "float32")
        outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True)
        count = ops.cast(ops.size(x) // channels, "float32")
        variance = unbiased * (count - 1.0) / count
        self.moving_mean.assign(ops.cast(self.moving_mean, "float32") * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(ops.cast(self.moving_variance, "float32") * self.momentum
                                    + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


def with_batch_norm(model):
    """A copy of a functional `model` whose `keras.layers.BatchNormalization`
    layers are this module's (for `keras.applications` backbones); the weights
    are copied, every other layer is rebuilt from its config."""
    if not any(type(layer) is keras.layers.BatchNormalization for layer in model.layers):
        return model

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
