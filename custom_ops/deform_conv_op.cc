// TensorFlow op of the whole modulated deformable convolution (DCNv2) on the CPU, inference
// only, float32 or bfloat16 (T: the input, offsets, mask and output; the kernel and bias are
// float32 and the arithmetic is float32 in both, so a bfloat16 model's op reads its tensors
// without the float32 copies that casts would make): the deformable im2col and the GEMM fused, one block of output pixels at a time:
//
//   ZsmTf>DeformableConv2D(input [B,H,W,C], offsets [B,Ho,Wo,2*dg*K], mask [B,Ho,Wo,dg*K],
//                          kernel [kh,kw,C,Cout], bias [Cout])
//       -> output [B,Ho,Wo,Cout] = max(y, negative_slope * y), y = deform_conv(input) + bias
//   ZsmTf>DeformableConv2DPacked(input, offset_mask [B,Ho,Wo,3*dg*K], kernel, bias) -> the same,
//       offset_mask being the raw output of the layer's offset/mask convolution: the offsets
//       (its first 2*dg*K channels) are read in place and the mask is the sigmoid of the last
//       dg*K channels, taken per block (no slicing copies, no separate sigmoid pass)
//
// attrs: kernel_size, strides, padding, dilation (pairs (h, w)), deformable_groups (as
// ZsmTf>DeformableIm2col), negative_slope (1: no activation). Layouts and sampling:
// deform_im2col.h. The unfused path (ZsmTf>DeformableIm2col, then one GEMM of the whole
// [B*Ho*Wo, K*C] column matrix) writes and reads the columns through memory: K*C floats per output
// pixel (288 at C = 32), 9x the input; and TensorFlow's GEMM runs a narrow Cout (32, 64) at a
// third of its rate. Here each thread samples the columns of kBlock pixels into a buffer that stays
// in its L1 cache and multiplies it at once with the Winograd op's register-blocked micro-kernel
// (winograd_conv.h: 6 x 16 on AVX2, 12 x 16 on AVX-512), adding the bias and the activation as
// it stores (those kernels: deform_conv_cpu.h). No gradient (training uses the differentiable
// im2col op), no GPU or XLA kernel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#include "deform_attrs.h"
#include "deform_im2col.h"
#include "deform_conv_cpu.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;
using zsm_deform_conv::ForwardBlocks;
using zsm_winograd::kCols;

constexpr int64_t kMaxSide = int64_t{1} << 15;  // image and output sides: int32 indices

// Shape function of both ops: mask_input < 0 for the packed form (offset_mask at input 1).
absl::Status OutputShape(InferenceContext* c, int mask_input) {
  zsm::DeformDims d{};
  TF_RETURN_IF_ERROR(deform_attrs::Read(c, &d));
  DimensionHandle b, ho, wo, ch, cout, unused;
  TF_RETURN_IF_ERROR(deform_attrs::MergeSampling(c, d, mask_input, &b, &ho, &wo, &ch));
  const int k_input = mask_input < 0 ? 2 : 3;
  ShapeHandle kernel, bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(k_input), 4, &kernel));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(k_input + 1), 1, &bias));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(kernel, 0), d.kh, &unused));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(kernel, 1), d.kw, &unused));
  TF_RETURN_IF_ERROR(c->Merge(ch, c->Dim(kernel, 2), &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(kernel, 3), c->Dim(bias, 0), &cout));
  c->set_output(0, c->MakeShape({b, ho, wo, cout}));
  return absl::OkStatus();
}

REGISTER_OP("ZsmTf>DeformableConv2D")
    .Input("input: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("output: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    ZSM_DEFORM_ATTRS
    .Attr("negative_slope: float = 1.0")
    .SetShapeFn([](InferenceContext* c) { return OutputShape(c, 2); })
    .Doc("Modulated deformable convolution (DCNv2) + bias (+ leaky ReLU), NHWC, CPU inference.");

REGISTER_OP("ZsmTf>DeformableConv2DPacked")
    .Input("input: T")
    .Input("offset_mask: T")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("output: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    ZSM_DEFORM_ATTRS
    .Attr("negative_slope: float = 1.0")
    .SetShapeFn([](InferenceContext* c) { return OutputShape(c, -1); })
    .Doc("ZsmTf>DeformableConv2D reading the offsets and the mask logits from one tensor.");

// The framework-free kernels' element type for T
template <class T> struct Raw { using type = float; };
template <> struct Raw<Eigen::bfloat16> { using type = zsm_deform_conv::bf16; };
static_assert(sizeof(Eigen::bfloat16) == sizeof(zsm_deform_conv::bf16), "bfloat16 is 16 bits");

// kPacked: ZsmTf>DeformableConv2DPacked (offsets and mask logits in one input); T: float or
// Eigen::bfloat16
template <bool kPacked, class T>
class DeformableConv2DOp : public OpKernel {
 public:
  explicit DeformableConv2DOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, deform_attrs::Read(c, &attrs_));
    OP_REQUIRES_OK(c, c->GetAttr("negative_slope", &slope_));
    OP_REQUIRES(c, slope_ >= 0.f && slope_ <= 1.f,
                errors::InvalidArgument("negative_slope must be in [0, 1], got ", slope_));
  }

  void Compute(OpKernelContext* c) override {
    const Tensor& in = c->input(0);
    const Tensor& off = c->input(1);
    const Tensor* mask = kPacked ? nullptr : &c->input(2);
    const Tensor& kernel = c->input(kPacked ? 2 : 3);
    const Tensor& bias = c->input(kPacked ? 3 : 4);
    zsm::DeformDims d;
    OP_REQUIRES_OK(c, deform_attrs::CheckSampling(attrs_, in, off, mask, &d));
    OP_REQUIRES(c, std::max({d.H, d.W, d.Ho * d.sh, d.Wo * d.sw}) < kMaxSide,
                errors::InvalidArgument("images of ", kMaxSide, " pixels a side or more are not "
                                        "supported, got input ", in.shape().DebugString(),
                                        " and output ", d.Ho, "x", d.Wo));
    OP_REQUIRES(c, bias.dims() == 1, errors::InvalidArgument("bias must be [Cout]"));
    const int64_t cout = bias.dim_size(0);
    OP_REQUIRES(c, kernel.shape() == TensorShape({d.kh, d.kw, d.C, cout}),
                errors::InvalidArgument("kernel must be [", d.kh, ", ", d.kw, ", ", d.C, ", ",
                                        cout, "], got ", kernel.shape().DebugString()));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, TensorShape({d.B, d.Ho, d.Wo, cout}), &y));
    if (y->NumElements() == 0) return;
    using R = typename Raw<T>::type;
    R* yp = reinterpret_cast<R*>(y->flat<T>().data());
    if (d.H == 0 || d.W == 0 || d.C == 0) {   // every sample is outside an empty image
      const float* bp = bias.flat<float>().data();
      for (int64_t i = 0; i < y->NumElements(); ++i) {
        const float v = bp[i % cout];
        zsm_deform_conv::store(std::max(v, slope_ * v), &yp[i]);
      }
      return;
    }
    // HWIO [kh, kw, C, Cout] is already the [K*C, Cout] GEMM operand (tap-major, channel-minor,
    // as the columns); Cout is padded to the micro-kernel's width when it is not a multiple
    const int64_t kc = d.K() * d.C, kp = (cout + kCols - 1) / kCols * kCols;
    const float* kptr = kernel.flat<float>().data();
    std::vector<float> padded;
    if (kp != cout) {
      padded.assign(static_cast<size_t>(kc * kp), 0.f);
      for (int64_t r = 0; r < kc; ++r)
        std::memcpy(&padded[r * kp], kptr + r * cout, cout * sizeof(float));
      kptr = padded.data();
    }
    const R* ip = reinterpret_cast<const R*>(in.flat<T>().data());
    const R* op = reinterpret_cast<const R*>(off.flat<T>().data());
    const R* mp = kPacked ? nullptr : reinterpret_cast<const R*>(mask->flat<T>().data());
    const float* bp = bias.flat<float>().data();
    const float slope = slope_;
    const auto* w = c->device()->tensorflow_cpu_worker_threads();
    const int64_t cost = d.K() * (40 * d.dg + 4 * d.C) + 2 * kc * kp;  // per output pixel
    Shard(w->num_threads, w->workers, d.pixels(), cost, [&](int64_t begin, int64_t end) {
      ForwardBlocks(d, ip, op, mp, kptr, kp, bp, cout, slope, yp, begin, end);
    });
  }

 private:
  zsm::DeformDims attrs_{};
  float slope_ = 1.f;
};

#define ZSM_REGISTER(T)                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("ZsmTf>DeformableConv2D").Device(DEVICE_CPU).TypeConstraint<T>("T"),            \
      DeformableConv2DOp<false, T>);                                                       \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("ZsmTf>DeformableConv2DPacked").Device(DEVICE_CPU).TypeConstraint<T>("T"),      \
      DeformableConv2DOp<true, T>);
ZSM_REGISTER(float)
ZSM_REGISTER(Eigen::bfloat16)
#undef ZSM_REGISTER

}  // namespace
}  // namespace tensorflow
