"""Index-based input pipelines: resumable, shardable, identical for any number of workers.

Every training sample has a global index ``k = 0, 1, 2, ...``; batch ``s`` (global step ``s``)
is made of samples ``s*B .. s*B+B-1`` (``B`` the global batch). A sample is a pure function of
``(data seed, k)``:

* its *item*: for a finite source (Vimeo septuplets, video windows, a fixed generated set) epoch
  ``e = k // n`` visits the items in the order of a permutation drawn from ``(seed, e)``; for the
  endless generated stream the item is ``k`` itself;
* its random crop and augmentation: stateless ops seeded with ``(seed, k)``.

So resuming at ``samples_seen`` restarts the stream exactly where it stopped (no replay, no
skipped data), and a worker / input pipeline ``p`` of ``P`` takes the ``p``-th slice of each
global batch: the global batch is the same whatever the number of workers or replicas.

A *source* (``SyntheticClips``, ``VimeoSeptuplets``, ``VideoFolder``) has ``num_items`` (int or
None) and ``load(k, item, seed) -> {"hr": [T, H, W, 3] float32 in [0, 1]}`` (plus ``"lr"`` when it
reads prepared LR frames); :func:`make_pair` turns that into the network's ``(lr, hr)``.
"""
from __future__ import annotations

import tensorflow as tf

from zsm_tf.data.augment import augment_pair
from zsm_tf.degradation import downscale

_BIG = 2 ** 62
_fold = tf.random.experimental.stateless_fold_in


def sample_seed(seed, k):
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(k, tf.int64)])


def make_pair(source, k, item, seed, scale=4, augment=True, quantize=True):
    """One training pair ``(lr [N, h, w, 3], hr [2N-1, H, W, 3])``: inputs are the odd frames
    (1, 3, 5, 7 of a septuplet), targets all frames; random flips / rot90 / time reversal."""
    s = sample_seed(seed, k)
    out = source.load(k, item, s)
    hr = out["hr"]
    lr = out["lr"] if "lr" in out else downscale(hr[::2], scale, quantize)
    if augment:
        opts = augment if isinstance(augment, dict) else {}
        lr, hr = augment_pair(lr, hr, _fold(s, 7), **opts)
    return lr, hr


@tf.autograph.experimental.do_not_convert
def _twice(k):
    return k, k


def index_stream(num_items, seed, start=0):
    """Dataset of ``(k, item)`` int64 pairs from global sample index ``start`` on (endless)."""
    start = int(start)
    if num_items is None:
        return tf.data.Dataset.range(start, _BIG).map(_twice)
    n = int(num_items)
    if n <= 0:
        raise ValueError("the data source has no items")
    seed = int(seed)

    @tf.autograph.experimental.do_not_convert
    def epoch(e):
        perm = tf.argsort(tf.random.stateless_uniform([n], tf.stack([tf.constant(seed, tf.int64),
                                                                     e])))
        ks = tf.range(e * n, (e + 1) * n, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((ks, tf.cast(perm, tf.int64)))

    return tf.data.Dataset.range(start // n, _BIG).flat_map(epoch).skip(start % n)


def shard_stream(ds, global_batch, pipeline_id=0, num_pipelines=1):
    """Keeps input pipeline ``pipeline_id``'s slice of every global batch of the index stream."""
    if num_pipelines == 1:
        return ds
    if global_batch % num_pipelines:
        raise ValueError(f"global batch {global_batch} not divisible by {num_pipelines} pipelines")
    per = global_batch // num_pipelines
    lo = pipeline_id * per

    @tf.autograph.experimental.do_not_convert
    def keep(k, it):
        return k[lo:lo + per], it[lo:lo + per]

    return ds.batch(global_batch, drop_remainder=True).map(keep).unbatch()


def train_dataset(source, *, global_batch, seed=0, start_sample=0, input_context=None,
                  scale=4, augment=True, quantize=True, parallel=None):
    """The training ``tf.data.Dataset`` of one input pipeline, batched per replica.

    Use as ``strategy.distribute_datasets_from_function(lambda ctx: train_dataset(..., ctx))``;
    ``input_context=None`` gives the whole global batch (one pipeline, one replica).
    """
    pid, npipe, per_replica = 0, 1, global_batch
    if input_context is not None:
        pid, npipe = input_context.input_pipeline_id, input_context.num_input_pipelines
        per_replica = input_context.get_per_replica_batch_size(global_batch)
    ds = shard_stream(index_stream(source.num_items, seed, start_sample), global_batch, pid, npipe)
    @tf.autograph.experimental.do_not_convert  # plain TF ops: skip AutoGraph (faster start)
    def pair(k, it):
        return make_pair(source, k, it, seed, scale, augment, quantize)

    ds = ds.map(pair, num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(per_replica, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return ds.with_options(options).prefetch(2)


def fixed_batch(source, n, seed=0, scale=4, quantize=True):
    """``n`` clips without augmentation, items spread evenly over the source (for the endless
    generated stream items ``0..n-1``): a fixed validation batch (tensors)."""
    lrs, hrs = [], []
    for i in range(n):
        item = (i * source.num_items) // n if source.num_items else i
        lr, hr = make_pair(source, tf.constant(i, tf.int64), tf.constant(item, tf.int64), seed,
                           scale, augment=False, quantize=quantize)
        lrs.append(lr)
        hrs.append(hr)
    return tf.stack(lrs), tf.stack(hrs)
