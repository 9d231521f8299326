"""How `python -m kerasseg.train` spreads model.fit over devices and machines (--strategy).

    none           one device
    mirrored       tf.distribute.MirroredStrategy over the local GPUs (or --logical-cpus N CPUs)
    data-parallel  keras.distribution.DataParallel over every local JAX device
    multiworker    several machines: tf.distribute.MultiWorkerMirroredStrategy from TF_CONFIG on
                   TensorFlow, keras.distribution across JAX processes (KERAS_DISTRIBUTION_*) on JAX

All of them are synchronous data parallelism on the engines' own machinery.
"""

import contextlib
import json
import os

import numpy as np

from kerasseg.training.config import ConfigError


def strategy_for(config):
    """The tf.distribute strategy (None on JAX or without one), the number of model replicas, and this
    process's worker index (0 writes the run's outputs; in a multi-worker run each other keeps its own)."""
    import keras

    if config.logical_cpus:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * config.logical_cpus)
    if config.strategy == "none":
        return None, 1, 0
    if config.strategy in ("data-parallel", "multiworker") and keras.backend.backend() == "jax":
        import jax

        if config.strategy == "multiworker":
            # the processes meet at KERAS_DISTRIBUTION_JOB_ADDRESSES (the first is the coordinator), with
            # KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID; CPUs talk through gloo
            missing = [v for v in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                                   "KERAS_DISTRIBUTION_PROCESS_ID") if v not in os.environ]
            if missing:
                raise ConfigError("strategy", config.strategy, f"on JAX needs {', '.join(missing)} set (see "
                                  "docs/training.md, 'More devices')")
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            keras.distribution.initialize()
        # across processes each reads its own share of the examples (input_shard): Keras must not shard
        # their batches again (its sharding reads every example on every process, and keeps 1 in N)
        distribution = keras.distribution.DataParallel(auto_shard_dataset=config.strategy != "multiworker")
        keras.distribution.set_distribution(distribution)
        return None, len(distribution.device_mesh.devices.ravel()), jax.process_index()
    if config.strategy == "data-parallel":
        raise ConfigError("strategy", config.strategy, "is keras.distribution on JAX: set KERAS_BACKEND=jax (on "
                          "TensorFlow: {strategy} mirrored)")
    if keras.backend.backend() != "tensorflow":
        raise ConfigError("strategy", config.strategy, "is a tf.distribute strategy: use the TensorFlow backend "
                          "(on JAX: {strategy} data-parallel or multiworker)")
    import tensorflow as tf

    if config.strategy == "multiworker":
        strategy = _tf_multiworker_strategy()
        return strategy, strategy.num_replicas_in_sync, strategy.cluster_resolver.task_id
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("GPU")] or
        [d.name for d in tf.config.list_logical_devices("CPU")])
    return strategy, strategy.num_replicas_in_sync, 0


def input_shard(config, strategy):
    """(this process's index among those that read input, their number, its pipeline's batch size).

    In a multi-worker run each process reads only its share of the examples (every N-th from its index:
    kerasseg.train), never the others' files. On JAX each process gives its own rows of every global batch
    (keras.distribution assembles them), so its pipeline batches config.batch_size / N; on TensorFlow each
    worker's pipeline batches whole global batches of its own examples, which tf.distribute splits into
    the per-replica batches of successive steps. Elsewhere: (0, 1, config.batch_size).
    """
    if config.strategy != "multiworker":
        return 0, 1, config.batch_size
    if strategy is None:  # (JAX)
        import jax

        index, count = jax.process_index(), jax.process_count()
    else:
        resolver = strategy.cluster_resolver
        index, count = resolver.task_id, resolver.cluster_spec().num_tasks("worker")
    if config.batch_size % count:
        raise ConfigError("batch_size", config.batch_size, f"must be a multiple of the {count} workers (each "
                          "gives an equal part of every batch)")
    return index, count, config.batch_size // count if strategy is None else config.batch_size


def _tf_multiworker_strategy():
    """tf.distribute.MultiWorkerMirroredStrategy from TF_CONFIG, with Keras 3.15's fit made to run under it.

    Keras 3.15's model.fit fails under this strategy (keras-team/keras#20585, open; reproduced with a
    one-layer model on two local workers) in two places, fixed here for our use:
    - before the first step it reduces a whole (x, y) batch across workers to build the model
      ("Attempt to convert a value (PerReplica...)"): `fit_scope` skips that build (our models are
      built and compiled before fit), running fit inside the strategy's scope instead;
    - each step's logs are reduced with strategy.reduce("MEAN", value, axis=0), which fails on the
      scalar loss ("Invalid reduction dimension 0 for input with 0 dimensions"): they are averaged over
      the replicas with axis=None instead. (Epoch logs, which the callbacks see, are read from the
      metrics' variables, summed over every replica, so val_miou is the whole split's.)
    """
    import tensorflow as tf

    from kerasseg import internals

    try:
        config = json.loads(os.environ["TF_CONFIG"])
        config["cluster"]["worker"], config["task"]["index"]
    except (KeyError, TypeError, ValueError):
        raise ConfigError("strategy", "multiworker", 'on TensorFlow needs TF_CONFIG, e.g. {"cluster": {"worker": '
                          '["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}} '
                          "(see docs/training.md, 'More devices')") from None
    internals.patch_multiworker_fit(lambda strategy, value: strategy.reduce("MEAN", value, axis=None))
    return tf.distribute.MultiWorkerMirroredStrategy()


def scope(strategy):
    import contextlib

    return strategy.scope() if strategy else contextlib.nullcontext()


def fit_scope(model, strategy):
    """The context for model.fit: the scope of TensorFlow's multi-worker strategy (see
    _tf_multiworker_strategy), nothing otherwise (a model built in a strategy's scope keeps it)."""
    if strategy is None:  # (no TensorFlow import: JAX machines may not have it)
        return scope(None)
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        from kerasseg import internals

        internals.forget_strategy(model)  # fit then finds the strategy from the scope, and skips the build
        return strategy.scope()
    return scope(None)


@contextlib.contextmanager
def local_inference(model, strategy):
    """A function running `model` on a batch in this process alone (None where model.predict_on_batch does):
    what validation needs under a strategy, where each process scores its own share of the images, in calls
    of its own number and sizes. On TensorFlow, the model called in a tf.function (predict_on_batch would
    spread the batch over the replicas, in step with the other workers); on JAX under keras.distribution,
    its stateless call jitted on this process's copy of the variables, the distribution set aside meanwhile."""
    import keras

    if keras.backend.backend() == "jax" and keras.distribution.distribution() is not None:
        import jax

        distribution = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            def local(variable):
                value = variable.value
                return np.asarray(value.addressable_data(0) if hasattr(value, "addressable_data") else value)

            trainable = [local(v) for v in model.trainable_variables]
            other = [local(v) for v in model.non_trainable_variables]
            call = jax.jit(lambda t, o, x: model.stateless_call(t, o, x, training=False)[0])
            yield lambda batch: call(trainable, other, batch)
        finally:
            keras.distribution.set_distribution(distribution)
    elif strategy is not None:
        import tensorflow as tf

        yield tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    else:
        yield None


def all_sum(value, strategy, config):
    """`value` (a numpy array) summed over the processes of a multi-worker run (as it is elsewhere): every
    process must call it, in the same order."""
    if config.strategy != "multiworker":
        return value
    value = np.asarray(value, np.float64)
    if strategy is None:  # (JAX: one value per process)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(value)).sum(0)
    import tensorflow as tf

    workers = strategy.cluster_resolver.cluster_spec().num_tasks("worker")
    local = max(1, strategy.num_replicas_in_sync // workers)  # (each worker's first replica gives its value)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(value if context.replica_id_in_sync_group % local == 0 else np.zeros_like(value)))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()
