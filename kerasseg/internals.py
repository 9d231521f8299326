"""Every private Keras API kerasseg uses, and nothing else: the one place to look when a Keras release breaks one.

Keras 3 has no public way to walk a functional model's graph as it was built (which layer produced a tensor,
which tensors a layer was called on, every layer of nested models) nor to replay it with each call replaced;
quantization-aware training (kerasseg.qat), the exporters' learned ranges (export.ranges, export.onnx) and
the output-kind check (kerasseg.described) need all of these. Each function says why it is needed and the
version it was checked on. tests/test_layout.py fails if a private Keras name appears in any other module
(export.internals holds TensorFlow's, LiteRT's and MediaPipe's).

Checked on Keras 3.15.1 (TensorFlow 2.21 and JAX 0.10 backends).
"""

import keras


def all_layers(model, include_self=True):
    """Every layer of `model`, those of nested models included, in build order.

    `model._flatten_layers`: `model.layers` lists a nested model as one layer, and qat must see (and rename)
    every layer inside it."""
    return list(model._flatten_layers(include_self=include_self))


def producer(tensor):
    """The layer (operation) whose call produced the symbolic `tensor` (`tensor._keras_history`): Keras keeps
    no public link from a functional model's tensor to the call that made it."""
    return tensor._keras_history.operation


def call_inputs(tensor):
    """The tensors, flattened, that the producer of `tensor` was called on to make it
    (`operation._inbound_nodes[node_index].input_tensors`)."""
    history = tensor._keras_history
    return keras.tree.flatten(history.operation._inbound_nodes[history.node_index].input_tensors)


def calls(layer):
    """The input tensors, flattened, of each call of `layer` in the graphs it was built into
    (`layer._inbound_nodes`): a shared layer rounds each of its calls' outputs (export.onnx counts them)."""
    return [keras.tree.flatten(node.input_tensors) for node in layer._inbound_nodes]


def call_outputs(layer):
    """The output tensors, flattened, of every call of `layer` in the graphs it was built into
    (`layer._inbound_nodes`): kerasseg.inference sums them to estimate a forward pass's memory."""
    return [t for node in layer._inbound_nodes for t in keras.tree.flatten(node.output_tensors)]


def is_functional(layer):
    """Whether `layer` is a functional model (a graph of layers, `_nodes_by_depth`) rather than a subclassed
    one whose call is opaque."""
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")


def run_through_graph(model, inputs, operation_fn):
    """`model`'s functional graph applied to `inputs`, each layer called through `operation_fn(layer)` (the
    callable to use in its place). `Functional._run_through_graph` is how Keras itself clones a model with
    replaced calls; `keras.models.clone_model` re-creates layers instead, losing the shared ones."""
    return model._run_through_graph(inputs, operation_fn=operation_fn, call_fn=lambda op, *a, **k: op(*a, **k))


def patch_multiworker_fit(strategy_reduce):
    """Makes Keras' TensorFlow trainer reduce each step's logs across MultiWorkerMirroredStrategy's workers
    with `strategy_reduce(strategy, value)` (kerasseg.training.distribute): Keras 3.15's own reduction fails on the
    scalar loss (keras-team/keras#20585, open). Patches `keras.src.backend.tensorflow.trainer.
    reduce_per_replica` once; idempotent."""
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "_kerasseg", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            import tensorflow as tf

            return tf.nest.map_structure(
                lambda v: strategy_reduce(strategy, v) if trainer._is_per_replica_instance(v) else v, values)
        return original(values, strategy, reduction)

    reduce_per_replica._kerasseg = True
    trainer.reduce_per_replica = reduce_per_replica


def forget_strategy(model):
    """Clears the strategy `model` was built under (`model._distribute_strategy`), so that `fit` takes the
    MultiWorkerMirroredStrategy from the scope it runs in and skips the build that fails under it
    (keras-team/keras#20585; kerasseg.training.distribute.fit_scope)."""
    model._distribute_strategy = None
