"""tf.distribute strategies for ``--strategy default|one_device|mirrored|multi_worker|tpu``.

``--cpu-replicas N`` splits the (first) CPU into N logical devices, so that ``mirrored`` runs N
replicas on a machine without GPUs (tests, debugging). It must run before TensorFlow initialises
its devices, i.e. before any op; :func:`make_strategy` does it first.

``multi_worker`` reads the cluster from ``TF_CONFIG``
(``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``); the chief
is task ``chief`` if the cluster has one, else worker 0.
"""
from __future__ import annotations

import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def split_cpu(n):
    """Makes ``n`` logical CPU devices (call before TensorFlow touches its devices)."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))])


def make_strategy(name="default", cpu_replicas=None, tpu=None):
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if cpu_replicas and int(cpu_replicas) > 1:
        split_cpu(cpu_replicas)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice(cpus[0]))
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("the multi_worker strategy needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def worker_info(strategy):
    """``(is_chief, task_type, task_id, num_workers)`` of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True, None, 0, 1
    task_type, task_id = resolver.task_type, resolver.task_id
    spec = resolver.cluster_spec().as_dict()
    num = sum(len(v) for k, v in spec.items() if k in ("chief", "worker"))
    if task_type is None:
        return True, None, 0, num
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    return chief, task_type, task_id, num
