"""The upsampling initialisation really starts the network as nearest x4 + frame blending."""
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf.initialization import upsampling_init


def test_starts_as_nearest_upsampling_with_blended_new_frames():
    model = ZoomingSlowMo(nf=16, groups=2, front_rbs=2, back_rbs=2, deform_impl="gather")
    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(1, 3, 8, 12, 3)).astype(np.float32)
    random_out = model(frames).numpy()
    upsampling_init(model)
    out = model(frames).numpy()[0]
    near = np.repeat(np.repeat(frames[0], 4, axis=1), 4, axis=2)
    expected = np.stack([near[0], (near[0] + near[1]) / 2, near[1], (near[1] + near[2]) / 2, near[2]])
    assert np.abs(out - expected).max() < 2e-3
    assert np.abs(random_out[0] - expected).max() > 0.1  # it was not like that before
    # only a few weights were set: the other channels keep their random values
    assert np.count_nonzero(model.reconstructor.upconv1.kernel.numpy()[..., 12:]) > 1000
    residual = ZoomingSlowMo(nf=16, groups=2, front_rbs=1, back_rbs=1, residual="bicubic")
    with pytest.raises(ValueError, match="already starts"):
        upsampling_init(residual)


def test_initialised_model_trains(tmp_path):
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1, deform_impl="gather")
    upsampling_init(model)
    frames = tf.random.uniform([2, 2, 8, 8, 3], seed=1)
    target = tf.image.resize(tf.reshape(tf.concat([frames[:, :1], frames[:, :1], frames[:, 1:]], 1),
                                        [6, 8, 8, 3]), [32, 32], "bicubic")
    target = tf.reshape(target, [2, 3, 32, 32, 3])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(model(frames) - target))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


def test_kaiming_init_keeps_the_signal_through_the_depth():
    """PyTorch's default init shrinks a random network's output to ~1e-3 of its input; He init
    keeps it O(0.1..10). Zero kernels (offset/mask convs, a residual model's conv_last) stay 0."""
    from zsm_tf.initialization import kaiming_init

    frames = np.random.default_rng(1).uniform(size=(1, 3, 16, 16, 3)).astype(np.float32)
    model = ZoomingSlowMo(nf=16, groups=2, front_rbs=2, back_rbs=3, deform_impl="gather")
    before = np.abs(model(frames).numpy()).mean()
    kaiming_init(model)
    after = np.abs(model(frames).numpy()).mean()
    assert before < 0.02 and after > 10 * before
    offsets = [v for v in model.trainable_variables if "conv_offset_mask/kernel" in v.path]
    assert offsets and not any(v.numpy().any() for v in offsets)
    blocks = [v for v in model.trainable_variables if "/block_" in v.path and v.path.endswith("kernel")]
    others = [v for v in model.trainable_variables if v.path.endswith("upconv1/kernel")]
    assert np.std(blocks[0].numpy()) < 0.2 * np.std(others[0].numpy())
    residual = kaiming_init(ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1,
                                          residual="bicubic"))
    assert not residual.reconstructor.conv_last.kernel.numpy().any()
