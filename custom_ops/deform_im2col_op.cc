// TensorFlow ops of the deformable, modulated im2col (DCNv2 sampling), NHWC, in the "ZsmTf>"
// namespace (like tfmiss's "Miss>" ops) so that they cannot clash with other libraries' ops:
//
//   ZsmTf>DeformableIm2col(input [B,H,W,C], offsets [B,Ho,Wo,2*dg*K], mask [B,Ho,Wo,dg*K])
//       -> columns [B,Ho,Wo,K*C]
//   ZsmTf>DeformableIm2colGrad(input, offsets, mask, grad_columns)
//       -> grad_input, grad_offsets, grad_mask
//
// K = kh*kw; attrs kernel_size, strides, padding, dilation (pairs (h, w)), deformable_groups.
// Layouts and semantics: deform_im2col.h. The gradient is registered from Python
// (zsm_tf/ops/custom_op.py). CPU kernels run on TensorFlow's intra-op thread pool. With
// -DZSM_WITH_CUDA the GPU kernels are registered too: the CUDA kernels of deform_im2col_gpu.cu.cc,
// compiled to cubins / PTX (NVRTC, or nvcc) and embedded by the generated gpu_images.cc, are
// launched through the CUDA driver API (gpu_launch.h, libcuda.so.1 opened at run time) on the
// op's stream. No CUDA header or library is needed to build this file. There is no XLA kernel.
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#include "deform_attrs.h"
#include "deform_im2col.h"
#include "deform_im2col_cpu.h"
#ifdef ZSM_WITH_CUDA
#include "tensorflow/core/platform/logging.h"
#include "tensorflow/core/util/determinism.h"
#include "xla/stream_executor/stream.h"
#include "gpu_launch.h"
#endif

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// Shape of the columns; works with unknown batch, H, W (Ho, Wo come from offsets and mask).
absl::Status ForwardShape(InferenceContext* c) {
  zsm::DeformDims d{};
  TF_RETURN_IF_ERROR(deform_attrs::Read(c, &d));
  DimensionHandle b, ho, wo, ch, cols_ch;
  TF_RETURN_IF_ERROR(deform_attrs::MergeSampling(c, d, 2, &b, &ho, &wo, &ch));
  TF_RETURN_IF_ERROR(c->Multiply(ch, d.K(), &cols_ch));
  c->set_output(0, c->MakeShape({b, ho, wo, cols_ch}));
  return absl::OkStatus();
}

absl::Status BackwardShape(InferenceContext* c) {
  ShapeHandle unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &unused));
  for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
  return absl::OkStatus();
}

REGISTER_OP("ZsmTf>DeformableIm2col")
    .Input("input: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Output("columns: T")
    .Attr("T: {float, double}")
    ZSM_DEFORM_ATTRS
    .SetShapeFn(ForwardShape)
    .Doc("Deformable modulated im2col (DCNv2), NHWC; columns are tap-major, channel-minor.");

REGISTER_OP("ZsmTf>DeformableIm2colGrad")
    .Input("input: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("grad_columns: T")
    .Output("grad_input: T")
    .Output("grad_offsets: T")
    .Output("grad_mask: T")
    .Attr("T: {float, double}")
    ZSM_DEFORM_ATTRS
    .SetShapeFn(BackwardShape)
    .Doc("Gradients of ZsmTf>DeformableIm2col wrt input, offsets and mask.");

struct CpuTag {};
struct GpuTag {};

template <typename T>
void ParallelFill(OpKernelContext* c, T* p, int64_t n) {
  const auto* w = c->device()->tensorflow_cpu_worker_threads();
  Shard(w->num_threads, w->workers, n, 1,
        [&](int64_t begin, int64_t end) { std::fill(p + begin, p + end, T(0)); });
}

template <typename T>
void Forward(CpuTag, OpKernelContext* c, const zsm::DeformDims& d, const T* in, const T* off,
             const T* mask, T* cols) {
  const auto* w = c->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = d.K() * (40 * d.dg + 4 * d.C);  // per output pixel
  Shard(w->num_threads, w->workers, d.pixels(), cost, [&](int64_t begin, int64_t end) {
    zsm::im2col_forward_cpu(d, in, off, mask, cols, begin, end);
  });
}

// Work units are (image b, slab s of its output pixels), each pixel with all its taps and groups.
// Units of different images write disjoint memory; the S slabs of one image accumulate into
// separate input-gradient buffers (slab 0 into grad_in, slab s > 0 into scratch (b, s-1)), summed
// at the end. S > 1 only when the batch is smaller than the thread count.
template <typename T>
void Backward(CpuTag, OpKernelContext* c, const zsm::DeformDims& d, const T* in, const T* off,
              const T* mask, const T* grad_cols, T* grad_in, T* grad_off, T* grad_mask) {
  if (d.B == 0) return;
  const auto* w = c->device()->tensorflow_cpu_worker_threads();
  const int64_t HoWo = d.Ho * d.Wo, n_img = d.H * d.W * d.C;
  const int64_t S = std::max<int64_t>(
      1, std::min<int64_t>((w->num_threads + d.B - 1) / d.B, HoWo / 512));
  Tensor scratch;
  T* extra = nullptr;
  if (S > 1) {
    OP_REQUIRES_OK(c, c->allocate_temp(DataTypeToEnum<T>::value,
                                       TensorShape({d.B * (S - 1) * n_img}), &scratch));
    extra = scratch.flat<T>().data();
    ParallelFill(c, extra, d.B * (S - 1) * n_img);
  }
  ParallelFill(c, grad_in, d.B * n_img);
  const int64_t cost = (HoWo / S + 1) * d.K() * d.dg * (80 + 16 * d.Cg());
  Shard(w->num_threads, w->workers, d.B * S, cost, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / S, s = u % S;
      T* img = s == 0 ? grad_in + b * n_img : extra + (b * (S - 1) + s - 1) * n_img;
      zsm::im2col_backward_cpu(d, in, off, mask, grad_cols, b, HoWo * s / S, HoWo * (s + 1) / S,
                               img, grad_off, grad_mask);
    }
  });
  if (S > 1) {
    Shard(w->num_threads, w->workers, d.B * n_img, S, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / n_img, j = i % n_img;
        for (int64_t s = 1; s < S; ++s) grad_in[i] += extra[(b * (S - 1) + s - 1) * n_img + j];
      }
    });
  }
}

#ifdef ZSM_WITH_CUDA
// The op's CUDA stream (a cudaStream_t is a CUstream), null when there is none.
zsm_cu::CUstream GpuStream(OpKernelContext* c) {
  const DeviceContext* dc = c->op_device_context();
  if (dc == nullptr || dc->stream() == nullptr) return nullptr;
  return static_cast<zsm_cu::CUstream>(dc->stream()->platform_specific_handle().stream);
}

void LogOnce(const std::string& warning) {
  static std::once_flag once;
  if (!warning.empty()) std::call_once(once, [&] { LOG(WARNING) << warning; });
}

template <typename T>
void Forward(GpuTag, OpKernelContext* c, const zsm::DeformDims& d, const T* in, const T* off,
             const T* mask, T* cols) {
  zsm_cu::CUstream stream = GpuStream(c);
  OP_REQUIRES(c, stream != nullptr, errors::Internal("ZsmTf>DeformableIm2col: no CUDA stream"));
  std::string warning;
  const std::string err = zsm_cu::Forward(stream, d, in, off, mask, cols, &warning);
  LogOnce(warning);
  OP_REQUIRES(c, err.empty(), errors::Internal("ZsmTf>DeformableIm2col CUDA kernel: ", err));
}

template <typename T>
void Backward(GpuTag, OpKernelContext* c, const zsm::DeformDims& d, const T* in, const T* off,
              const T* mask, const T* grad_cols, T* grad_in, T* grad_off, T* grad_mask) {
  // The input gradient sums with float atomicAdd: its rounding depends on the thread order.
  OP_REQUIRES(c, !OpDeterminismRequired(),
              errors::Unimplemented(
                  "ZsmTf>DeformableIm2colGrad has no deterministic GPU kernel (the input gradient "
                  "uses atomicAdd) and op determinism is enabled: use deform_impl='gather'"));
  zsm_cu::CUstream stream = GpuStream(c);
  OP_REQUIRES(c, stream != nullptr,
              errors::Internal("ZsmTf>DeformableIm2colGrad: no CUDA stream"));
  std::string warning;
  const std::string err = zsm_cu::Backward(stream, d, in, off, mask, grad_cols, grad_in,
                                           grad_off, grad_mask, &warning);
  LogOnce(warning);
  OP_REQUIRES(c, err.empty(), errors::Internal("ZsmTf>DeformableIm2colGrad CUDA kernel: ", err));
}
#endif

template <typename Device, typename T>
class DeformIm2colOp : public OpKernel {
 public:
  explicit DeformIm2colOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, deform_attrs::Read(c, &attrs_));
  }

  void Compute(OpKernelContext* c) override {
    const Tensor &in = c->input(0), &off = c->input(1), &mask = c->input(2);
    zsm::DeformDims d;
    OP_REQUIRES_OK(c, deform_attrs::CheckSampling(attrs_, in, off, &mask, &d));
    Tensor* cols = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, TensorShape({d.B, d.Ho, d.Wo, d.K() * d.C}), &cols));
    if (cols->NumElements() == 0) return;
    Forward(Device(), c, d, in.flat<T>().data(), off.flat<T>().data(), mask.flat<T>().data(),
            cols->flat<T>().data());
  }

 private:
  zsm::DeformDims attrs_{};
};

template <typename Device, typename T>
class DeformIm2colGradOp : public OpKernel {
 public:
  explicit DeformIm2colGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, deform_attrs::Read(c, &attrs_));
  }

  void Compute(OpKernelContext* c) override {
    const Tensor &in = c->input(0), &off = c->input(1), &mask = c->input(2),
                 &grad_cols = c->input(3);
    zsm::DeformDims d;
    OP_REQUIRES_OK(c, deform_attrs::CheckSampling(attrs_, in, off, &mask, &d));
    const TensorShape cols_shape({d.B, d.Ho, d.Wo, d.K() * d.C});
    OP_REQUIRES(c, grad_cols.shape() == cols_shape,
                errors::InvalidArgument("grad_columns must be ", cols_shape.DebugString(),
                                        ", got ", grad_cols.shape().DebugString()));
    Tensor *grad_in = nullptr, *grad_off = nullptr, *grad_mask = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, in.shape(), &grad_in));
    OP_REQUIRES_OK(c, c->allocate_output(1, off.shape(), &grad_off));
    OP_REQUIRES_OK(c, c->allocate_output(2, mask.shape(), &grad_mask));
    Backward(Device(), c, d, in.flat<T>().data(), off.flat<T>().data(), mask.flat<T>().data(),
             grad_cols.flat<T>().data(), grad_in->flat<T>().data(), grad_off->flat<T>().data(),
             grad_mask->flat<T>().data());
  }

 private:
  zsm::DeformDims attrs_{};
};

#define ZSM_REGISTER(DEV, TAG, T)                                                       \
  REGISTER_KERNEL_BUILDER(Name("ZsmTf>DeformableIm2col").Device(DEV).TypeConstraint<T>("T"), \
                          DeformIm2colOp<TAG, T>);                                          \
  REGISTER_KERNEL_BUILDER(                                                              \
      Name("ZsmTf>DeformableIm2colGrad").Device(DEV).TypeConstraint<T>("T"),              \
      DeformIm2colGradOp<TAG, T>);

ZSM_REGISTER(DEVICE_CPU, CpuTag, float)
ZSM_REGISTER(DEVICE_CPU, CpuTag, double)
#ifdef ZSM_WITH_CUDA
ZSM_REGISTER(DEVICE_GPU, GpuTag, float)
ZSM_REGISTER(DEVICE_GPU, GpuTag, double)
#endif
#undef ZSM_REGISTER

}  // namespace
}  // namespace tensorflow

#ifdef ZSM_WITH_CUDA
// For tests and build_info (ctypes on the loaded library; no GPU needed).
extern "C" {
// "name=size:align,...;" of what each kernel launch passes (compared with the PTX's .param sizes).
__attribute__((visibility("default"))) const char* zsm_tf_kernel_params() {
  static const std::string s = zsm_cu::KernelParamSizes();
  return s.c_str();
}
// The embedded images ("sm_80:cubin:SIZE,compute_90:ptx:SIZE") and their compiler.
__attribute__((visibility("default"))) const char* zsm_tf_gpu_images() {
  static const std::string s = [] {
    std::string s = std::string(zsm_cu::kCompiler) + ";";
    for (int i = 0; i < zsm_cu::kImageCount; ++i)
      s += std::string(i ? "," : "") + zsm_cu::kImages[i].target + ":" +
           (zsm_cu::kImages[i].ptx ? "ptx:" : "cubin:") + std::to_string(zsm_cu::kImages[i].size);
    return s;
  }();
  return s.c_str();
}
// The index of the image a GPU of compute capability major.minor would load, -1 for none.
__attribute__((visibility("default"))) int zsm_tf_choose_image(int major, int minor) {
  return zsm_cu::ChooseImage(zsm_cu::kImages, zsm_cu::kImageCount, major, minor);
}
// Why the CUDA driver cannot be used here ("" when it can); loads libcuda.so.1 on first call.
__attribute__((visibility("default"))) const char* zsm_tf_driver_error() {
  return zsm_cu::driver().error.c_str();
}
}
#endif
