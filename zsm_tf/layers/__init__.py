"""The blocks of Zooming Slow-Mo (paper Fig. 2), one file each."""
from zsm_tf.layers.common import StridedConv2D
from zsm_tf.layers.deformable_conv import DeformableConv2D
from zsm_tf.layers.deformable_convlstm import BiDeformableConvLSTM, DeformableConvLSTMCell, StateAlignment
from zsm_tf.layers.feature_extractor import FeatureExtractor, FeaturePyramid
from zsm_tf.layers.frame_interpolation import FrameFeatureInterpolation
from zsm_tf.layers.pcd_alignment import PCDAlign
from zsm_tf.layers.pixel_shuffle import PixelShuffle
from zsm_tf.layers.reconstructor import Reconstructor
from zsm_tf.layers.residual_block import ResidualBlockNoBN, ResidualTrunk

__all__ = ["StridedConv2D", "DeformableConv2D", "BiDeformableConvLSTM", "DeformableConvLSTMCell",
           "StateAlignment", "FeatureExtractor", "FeaturePyramid", "FrameFeatureInterpolation",
           "PCDAlign", "PixelShuffle", "Reconstructor", "ResidualBlockNoBN", "ResidualTrunk"]
