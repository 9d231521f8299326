"""Backend-agnostic helpers for the model suites (TensorFlow and JAX)."""

import keras
import numpy as np
import pytest


def fewer_on_jax(values, keep):
    """`values` on TensorFlow; on JAX (make test's second run, which repeats the model suites to show
    they run there too) only the representative `keep` of them, whose code paths cover the rest."""
    return [v for v in values if v in keep] if keras.backend.backend() == "jax" else list(values)


# a test of what does not depend on the backend (counting, messages, weight reshaping), which make test's JAX
# run would only repeat
NOT_ON_JAX = pytest.mark.skipif(keras.backend.backend() == "jax", reason="backend-independent: run on TensorFlow")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def predict(model, x):
    """A compiled forward pass (JAX runs eager calls op by op, which is slow)."""
    return model.predict_on_batch(x)


def gradients(model, x, y):
    """Gradients of a from-logits cross-entropy w.r.t. model.trainable_weights, on any backend."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return [None if g is None else g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(values):
            out, _ = model.stateless_call(values, non_trainable, x, training=True)
            return loss_fn(y, out)

        return [np.asarray(g) for g in jax.jit(jax.grad(loss))(trainable)]
    raise NotImplementedError(backend)


def weights_without_gradient(model, x, y):
    grads = gradients(model, x, y)
    return [w.path for w, g in zip(model.trainable_weights, grads) if g is None or not np.any(g)]
