"""The Zooming Slow-Mo network (Xiang et al., CVPR 2020), the authors' ``LunaTokis``."""
from __future__ import annotations

import keras
import tensorflow as tf

from zsm_tf.baseline import bicubic_blend, interleave, upscale_frames
from zsm_tf.layers.deformable_convlstm import BiDeformableConvLSTM
from zsm_tf.layers.feature_extractor import FeatureExtractor, FeaturePyramid
from zsm_tf.layers.frame_interpolation import FrameFeatureInterpolation
from zsm_tf.layers.reconstructor import Reconstructor


@keras.saving.register_keras_serializable(package="zsm_tf")
class ZoomingSlowMo(keras.Model):
    """One-stage space-time video super-resolution.

    frames float32 [B, N, H, W, 3] in [0, 1] (N >= 2; H, W multiples of 4)
      -> [B, 2N-1, 4H, 4W, 3]: output 2i reconstructs input frame i, output 2i+1 the frame
      between inputs i and i+1.

    Blocks: feature extraction + pyramid of every input frame; frame feature temporal
    interpolation (PCD alignment) of each adjacent pair, all pairs in one batch; bidirectional
    deformable ConvLSTM over the 2N-1 LR features; reconstruction of each frame.
    The default size has 11,102,771 parameters, like the paper's model.
    ``deform_impl``: "auto" | "gather" | "custom_op" (see :func:`zsm_tf.ops.deform_conv2d`).
    ``recon_chunk``: frames reconstructed at a time (default 1; ``None``: all 2N-1 at once).
    The reconstruction is per frame, so the output does not depend on it; the peak memory does
    (see :meth:`reconstruct`).

    ``residual``: "none" (the authors' network, the default) or "bicubic": a global skip adds
    bicubic x4 of each input frame, and of the average of each adjacent pair for the new frames,
    to the reconstruction (EDVR-style; the authors' network has none). ``conv_last`` then starts
    at zero, so a fresh model outputs exactly bicubic + frame blending and training learns
    only the correction: far fewer steps to a useful model on a CPU.
    "motion": the same skip, but each new frame's base is motion-compensated instead of blended:
    the midpoint of its neighbours' bicubic x4 warped along a classical symmetric block-matching
    estimate of their motion (:mod:`zsm_tf.ops.flow`, stock TF ops, no weights). Neither skip is
    in the paper.
    """

    RESIDUALS = ("none", "bicubic", "motion")

    def __init__(self, nf=64, groups=8, front_rbs=5, back_rbs=40, deform_impl="auto",
                 residual="none", recon_chunk=1, **kwargs):
        # the inputs stay as given: call() casts them for the network and keeps the global skip's
        # base in the variables' precision under a mixed policy (Keras would round them first)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if recon_chunk is not None and int(recon_chunk) < 1:
            raise ValueError(f"recon_chunk must be None or >= 1, got {recon_chunk}")
        self.recon_chunk = None if recon_chunk is None else int(recon_chunk)
        if residual not in self.RESIDUALS:
            raise ValueError(f"residual must be one of {self.RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.nf = nf
        self.groups = groups
        self.front_rbs = front_rbs
        self.back_rbs = back_rbs
        self.deform_impl = deform_impl
        p = self.dtype_policy
        self.feature_extractor = FeatureExtractor(nf, front_rbs, name="feature_extractor", dtype=p)
        self.pyramid = FeaturePyramid(nf, name="pyramid", dtype=p)
        self.interpolation = FrameFeatureInterpolation(nf, groups, deform_impl,
                                                       name="interpolation", dtype=p)
        self.convlstm = BiDeformableConvLSTM(nf, groups, deform_impl, name="convlstm", dtype=p)
        self.reconstructor = Reconstructor(nf, back_rbs, name="reconstructor", dtype=p)
        self.build((None, None, None, None, 3))
        if residual != "none":
            last = self.reconstructor.conv_last
            last.kernel.assign(tf.zeros_like(last.kernel))
            last.bias.assign(tf.zeros_like(last.bias))

    def build(self, input_shape=None):
        for block in (self.feature_extractor, self.pyramid, self.interpolation, self.convlstm,
                      self.reconstructor):
            block.build()
        self.built = True

    def call(self, frames, training=None, first_output=0, jit_reconstruction=False):
        """frames [B, N, H, W, 3] -> [B, 2N-1-first_output, 4H, 4W, 3]: the outputs from index
        ``first_output`` on (an int or int32 scalar tensor, < 2N-1). The features and the
        ConvLSTM see all N frames either way; the reconstruction (and the global skip's base) of
        the outputs before it is not computed: :class:`zsm_tf.inference.SpaceTimeUpscaler`
        starts each window after the outputs an earlier window already gave.

        ``jit_reconstruction``: XLA-compile the reconstruction (inference only, ignored when
        ``training``): the same outputs to float rounding, about 1.9x faster on that stage on a
        float32 CPU (XLA fuses the pixel shuffles and LeakyReLUs into the HR convolutions);
        compiled once per input shape. The upscaler turns it on where it pays
        (:func:`zsm_tf.precision.resolve_jit`); a SavedModel export keeps stock ops (off)."""
        inputs = tf.convert_to_tensor(frames)
        frames = tf.cast(inputs, self.compute_dtype)
        shape = tf.shape(frames)
        b, n, h, w = shape[0], shape[1], shape[2], shape[3]
        nf = self.nf
        tf.debugging.assert_greater_equal(n, 2, message="ZoomingSlowMo needs N >= 2 input frames")
        tf.debugging.assert_equal(tf.math.floormod(h, 4) + tf.math.floormod(w, 4), 0,
                                  message="ZoomingSlowMo needs H and W to be multiples of 4")

        l1 = self.feature_extractor(tf.reshape(frames, [b * n, h, w, 3]))
        pyr = self.pyramid(l1)  # 3 levels, each [B*N, h_l, w_l, nf]
        pyr = [tf.reshape(lv, tf.concat([[b, n], tf.shape(lv)[1:]], 0)) for lv in pyr]

        # every adjacent pair (i, i+1) at once: [B*(N-1), ...]
        def pairs(lv, start):
            part = lv[:, start:n - 1 + start]
            return tf.reshape(part, tf.concat([[b * (n - 1)], tf.shape(lv)[2:]], 0))

        mid = self.interpolation([pairs(lv, 0) for lv in pyr], [pairs(lv, 1) for lv in pyr])
        mid = tf.reshape(mid, [b, n - 1, h, w, nf])
        # interleave: input 0, mid 0, input 1, mid 1, ..., input N-1 -> [B, 2N-1, H, W, nf]
        seq = interleave(pyr[0], mid)

        feats = self.convlstm(seq)
        first = first_output
        if not (isinstance(first, int) and first == 0):
            first = tf.convert_to_tensor(first, tf.int32)
            tf.debugging.assert_less(first, 2 * n - 1, message="first_output must be < 2N-1")
            feats = feats[:, first:]
        t = tf.shape(feats)[1]
        out = self.reconstruct(tf.reshape(feats, [b * t, h, w, nf]),
                               jit=bool(jit_reconstruction) and not training)
        out = tf.reshape(out, [b, t, 4 * h, 4 * w, 3])
        if self.residual != "none":
            # the base of outputs first.. needs input frames first // 2.. (outputs 2 (first // 2)..)
            # Under a mixed policy the base and the sum stay in the variables' precision: a base
            # rounded to bfloat16 (8 significant bits, ~1 level of 255) cost 0.1 dB on new frames
            base_dtype = tf.as_dtype(self.variable_dtype if tf.as_dtype(self.compute_dtype)
                                     in (tf.bfloat16, tf.float16) else self.compute_dtype)
            part = tf.cast(inputs, base_dtype)[:, first // 2:]
            base = bicubic_blend(part) if self.residual == "bicubic" else self.motion_base(part)
            out = tf.cast(out, base_dtype) + base[:, first % 2:]
        # float32 out under a mixed-precision policy (float64 models stay float64)
        return out if out.dtype in (tf.float32, tf.float64) else tf.cast(out, tf.float32)

    def reconstruct(self, feats, jit=False):
        """[M, H, W, nf] -> [M, 4H, 4W, 3]: the reconstructor on ``recon_chunk`` frames at a time
        (``jit``: each chunk XLA-compiled, see :meth:`call`).

        The reconstruction is independent per frame and holds 64 channels at 2x and 4x the
        input size, so running it on all 2N-1 frames of a window at once is what makes the
        model's peak memory; in chunks (a ``tf.map_fn`` loop, one chunk alive at a time) the
        peak is that of ``recon_chunk`` frames, with the same outputs. ``None``: all at once."""
        k = self.recon_chunk
        recon = self.reconstructor
        if jit:
            recon = self.__dict__.get("_recon_jit")
            if recon is None:   # one compiled function per model (XLA caches per shape)
                reconstructor = self.reconstructor

                def stock(x):   # the compiled Winograd op has no XLA kernel
                    from zsm_tf.ops.winograd import scope

                    with scope(0):
                        return reconstructor(x)
                recon = tf.function(stock, jit_compile=True, autograph=False)
                self.__dict__["_recon_jit"] = recon
        if k is None:
            return recon(feats)
        shape = tf.shape(feats)
        m, h, w = shape[0], shape[1], shape[2]
        chunks = (m + k - 1) // k
        x = tf.pad(feats, [[0, chunks * k - m], [0, 0], [0, 0], [0, 0]])   # zero frames, cut below
        x = tf.reshape(x, tf.concat([[chunks, k], shape[1:]], 0))
        y = tf.map_fn(recon, x, parallel_iterations=1,
                      fn_output_signature=tf.TensorSpec([k, None, None, 3], self.compute_dtype))
        return tf.reshape(y, [chunks * k, 4 * h, 4 * w, 3])[:m]

    @classmethod
    def motion_base(cls, frames):
        """[B, N, H, W, 3] -> [B, 2N-1, 4H, 4W, 3]: bicubic x4 of each frame, each new frame
        the motion-compensated midpoint of its neighbours' (motion estimated at LR in float32,
        a fixed prior: no gradient flows through the estimate)."""
        from zsm_tf.ops.flow import known_dims, midpoint, symmetric_flow, upscale_flow

        b, n, h, w, _ = known_dims(frames)   # static where known: fewer ops to trace
        lr = tf.cast(frames, tf.float32)
        f0 = tf.reshape(lr[:, :-1], [b * (n - 1), h, w, 3])
        f1 = tf.reshape(lr[:, 1:], [b * (n - 1), h, w, 3])
        d = upscale_flow(tf.stop_gradient(symmetric_flow(f0, f1)), 4)
        up = upscale_frames(frames)
        up0 = tf.reshape(up[:, :-1], [b * (n - 1), 4 * h, 4 * w, 3])
        up1 = tf.reshape(up[:, 1:], [b * (n - 1), 4 * h, 4 * w, 3])
        mid = midpoint(up0, up1, tf.cast(d, up.dtype))
        return interleave(up, tf.reshape(mid, [b, n - 1, 4 * h, 4 * w, 3]))

    def torch_params(self):
        """{the authors' parameter name: our variable}, e.g. ``"conv_first.weight"``."""
        return {**self.feature_extractor.torch_params(""), **self.pyramid.torch_params(""),
                **self.interpolation.torch_params(""),
                **self.convlstm.torch_params("ConvBLSTM"),
                **self.reconstructor.torch_params("")}

    @property
    def uses_custom_op(self):
        from zsm_tf.ops.deform_conv import resolve_impl

        return resolve_impl(self.deform_impl) == "custom_op"

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "groups": self.groups,
                "front_rbs": self.front_rbs, "back_rbs": self.back_rbs,
                "deform_impl": self.deform_impl, "residual": self.residual,
                "recon_chunk": self.recon_chunk}

    @classmethod
    def from_config(cls, config):
        """Keeps ``dtype``: float64 and mixed-precision models come back as they were saved.
        A run's record (``model_config.json``) is accepted: its inference settings are not
        constructor arguments (:mod:`zsm_tf.run_dir`)."""
        from zsm_tf.run_dir import SETTING_KEYS

        config = {k: v for k, v in config.items() if k not in SETTING_KEYS}
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def compile(self, optimizer=None, loss=None, **kwargs):
        """``keras.Model.compile`` with the paper's training setup as the defaults
        (:func:`zsm_tf.recipe.compile_defaults`): Adam with PyTorch's epsilon at lr 4e-4 with
        cosine annealing restarts, Charbonnier loss summed over the batch, as the authors' code.
        Pass your own to override either."""
        from zsm_tf.recipe import compile_defaults

        defaults = compile_defaults() if optimizer is None or loss is None else {}
        super().compile(optimizer=defaults["optimizer"] if optimizer is None else optimizer,
                        loss=defaults["loss"] if loss is None else loss, **kwargs)

    def compile_from_config(self, config):
        """What ``keras.saving.load_model`` calls to compile a loaded model (Keras's own skips a
        model whose ``compile`` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)
