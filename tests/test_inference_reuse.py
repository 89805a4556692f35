"""Each output frame is reconstructed once: the model's ``first_output`` and the upscaler's use of it."""
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf.inference import SpaceTimeUpscaler, to_uint8, window_schedule


def tiny(residual):
    keras_seed = {"none": 1, "bicubic": 2, "motion": 3}[residual]
    tf.keras.utils.set_random_seed(keras_seed)
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1, residual=residual,
                          deform_impl="gather")
    # conv_last starts at zero with a residual: make the network's part visible
    last = model.reconstructor.conv_last
    last.kernel.assign(tf.random.normal(last.kernel.shape, stddev=0.05))
    return model


@pytest.mark.parametrize("residual", ["none", "bicubic", "motion"])
def test_first_output_is_a_suffix_of_the_full_output(residual):
    model = tiny(residual)
    x = tf.random.stateless_uniform([1, 3, 16, 20, 3], seed=[4, 5])
    full = model(x).numpy()
    fn = tf.function(lambda v, k: model(v, first_output=k))
    for k in range(5):
        part = fn(x, tf.constant(k)).numpy()   # one trace for every k
        assert part.shape == (1, 5 - k, 64, 80, 3)
        np.testing.assert_allclose(part, full[:, k:], atol=2e-6)
    assert len(fn._list_all_concrete_functions()) == 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="first_output"):
        fn(x, tf.constant(5))


def test_stream_reconstructs_each_output_once_and_matches_whole_windows():
    model = tiny("motion")
    counter = tf.Variable(0, dtype=tf.int32)
    inner = model.reconstructor.call

    def counting(feats):
        counter.assign_add(tf.shape(feats)[0])
        return inner(feats)
    model.reconstructor.call = counting
    rng = np.random.default_rng(0)
    k, window = 9, 4
    frames = [rng.integers(0, 256, (16, 20, 3)).astype(np.uint8) for _ in range(k)]
    out = list(SpaceTimeUpscaler(model, window=window).stream(iter(frames)))
    assert len(out) == 2 * k - 1
    assert int(counter.numpy()) == 2 * k - 1   # was 21: 3 windows of 7 (the shared frames twice)
    assert window_schedule(k, window) == [(0, 0), (3, 1), (5, 3)]
    for k2, n2 in [(2, 4), (3, 2), (7, 4), (8, 4), (13, 7)]:   # every output computed once
        done = [2 * s + j for s, f in window_schedule(k2, n2) for j in range(f, 2 * min(n2, k2 - s) - 1)]
        assert done == list(range(2 * k2 - 1)), (k2, n2)

    # reference: every window computed whole, outputs taken from the earliest window giving them
    x = np.stack(frames).astype(np.float32) / 255.0
    want = {}
    for start in (0, 3, 5):   # windows at 0, 3 and the last one moved back to end on frame 8
        y = model(x[None, start:start + window]).numpy()[0]
        for j in range(2 * window - 1):
            want.setdefault(2 * start + j, to_uint8(np.clip(y[j], 0, 1)))
    for g, frame in enumerate(out):
        assert np.abs(frame.astype(int) - want[g].astype(int)).max() <= 1, g
