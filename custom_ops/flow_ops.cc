// TensorFlow ops of the motion base (zsm_tf/ops/flow.py), CPU only, float32, inference only. The
// pure-TF paths are the same arithmetic in tens of ops with four gathers per bilinear sample; these
// are one pass each. Built into the same library as the deformable op.
//
//   ZsmTf>FlowMidpoint(f0 [B,H,W,C], f1 [B,H,W,C], d [B,H,W,2]) -> [B,H,W,C]
//
// out(p) = a f0(p - d(p)) + (1 - a) f1(p + d(p)), each sample bilinear with its coordinates
// clamped to the frame, a = w0 / (w0 + w1), w_i = inside_i + 1e-3, inside_i = how much the
// sample point lies inside its frame (1 inside, falling to 0 one pixel beyond the border).
// d[..., 0] is the x (column) displacement, d[..., 1] the y (row) one (flow.midpoint; ~70 ms per
// 1280x720 frame on two AVX2 cores in TF ops).
//
//   ZsmTf>FlowMatchTerms(f0 [B,H,W,C], f1 [B,H,W,C], d [K*B,H,W,2]) -> [K*B,H,W,2]
//
// The per-pixel terms of block matching for K candidate fields at once (field i compares images
// i % B): out[..., 0] = diff * v, out[..., 1] = v, with diff = mean over channels of
// |f0(p - d) - f1(p + d)| and v = inside_0 * inside_1 (flow._refine then box-filters them). The
// same float operations in the same order as the TF ops (no FMA contraction), so the same bits.
//
// NaN displacements read the clamped corner (0, 0), never out of range, and give NaN outputs
// (TF's path would fail on its gather).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

// every float operation as written (no FMA contraction): FlowMatchTerms matches TF's ops bit for bit
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

namespace tensorflow {
namespace {

using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// both ops' shape function: f0, f1 [B, H, W, C] of one shape, d of rank 4; the output shaped as
// the frames, or (kLikeD) as d
template <bool kLikeD>
absl::Status FlowShape(InferenceContext* c) {
  ShapeHandle f0, f1, d, merged;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &f0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &f1));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &d));
  TF_RETURN_IF_ERROR(c->Merge(f0, f1, &merged));
  c->set_output(0, kLikeD ? d : merged);
  return absl::OkStatus();
}

REGISTER_OP("ZsmTf>FlowMidpoint")
    .Input("f0: float")
    .Input("f1: float")
    .Input("d: float")
    .Output("output: float")
    .SetShapeFn(FlowShape<false>)
    .Doc("Motion-compensated midpoint of two frames given their symmetric displacement.");

// how much (x, y) lies inside a w x h frame: 1 inside, falling to 0 one pixel beyond the border
inline float inside(float x, float y, float w, float h) {
  const float out = std::max(-x, 0.f) + std::max(x - (w - 1), 0.f) + std::max(-y, 0.f) +
                    std::max(y - (h - 1), 0.f);
  return std::max(1.f - out, 0.f);
}

// the bilinear sampling plan of (x, y) clamped to the frame: the four corners' pixel indices and
// the weights, as zsm_tf.ops.flow.bilinear_sample computes them
struct Plan {
  int64_t i00, i01, i10, i11;
  float wx, wy;
};

inline Plan plan(float x, float y, int64_t w, int64_t h) {
  x = x > 0.f ? x : 0.f;   // NaN -> 0
  y = y > 0.f ? y : 0.f;
  x = std::min(x, static_cast<float>(w - 1));
  y = std::min(y, static_cast<float>(h - 1));
  const float fx = std::floor(x), fy = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const int64_t x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
  return {y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1, x - fx, y - fy};
}

inline float sample(const float* f, const Plan& p, int64_t c, int64_t ch) {
  const float top = f[p.i00 * c + ch] * (1 - p.wx) + f[p.i01 * c + ch] * p.wx;
  const float bottom = f[p.i10 * c + ch] * (1 - p.wx) + f[p.i11 * c + ch] * p.wx;
  return top * (1 - p.wy) + bottom * p.wy;
}

REGISTER_OP("ZsmTf>FlowMatchTerms")
    .Input("f0: float")
    .Input("f1: float")
    .Input("d: float")
    .Output("output: float")
    .SetShapeFn(FlowShape<true>)
    .Doc("Per-pixel block-matching terms (diff * valid, valid) of K candidate fields.");

// Rows [begin, end) of the output: of the midpoint (B*H rows), or (kTerms) of the match terms
// of all K*B candidate fields (field i compares images i % B). TF's float32 operations one by one
// (see the pragma above): the terms match the TF path bit for bit.
template <bool kTerms>
void FlowRows(const float* a, const float* z, const float* dp, float* out, int64_t b, int64_t h,
              int64_t w, int64_t ch, int64_t begin, int64_t end) {
  const float fw = static_cast<float>(w), fh = static_cast<float>(h);
  const float count = static_cast<float>(ch);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = (row / h) % b;
    const float yy = static_cast<float>(row % h);
    const float* an = a + n * h * w * ch;
    const float* zn = z + n * h * w * ch;
    for (int64_t x = 0; x < w; ++x) {
      const int64_t pix = row * w + x;
      const float dx = dp[2 * pix], dy = dp[2 * pix + 1];
      const float xx = static_cast<float>(x);
      // the samples at p - d in f0 and p + d in f1 (TF adds the negated displacement)
      const float x0 = xx + (-dx), y0 = yy + (-dy), x1 = xx + dx, y1 = yy + dy;
      const Plan p0 = plan(x0, y0, w, h), p1 = plan(x1, y1, w, h);
      if (kTerms) {
        const float v = inside(x0, y0, fw, fh) * inside(x1, y1, fw, fh);
        float sum = 0.f;
        for (int64_t k = 0; k < ch; ++k)
          sum += std::fabs(sample(an, p0, ch, k) - sample(zn, p1, ch, k));
        out[2 * pix] = (sum / count) * v;
        out[2 * pix + 1] = v;
      } else {
        const float w0 = inside(x0, y0, fw, fh) + 1e-3f, w1 = inside(x1, y1, fw, fh) + 1e-3f;
        const float a0 = w0 / (w0 + w1);
        for (int64_t k = 0; k < ch; ++k)
          out[pix * ch + k] = a0 * sample(an, p0, ch, k) + (1 - a0) * sample(zn, p1, ch, k);
      }
    }
  }
}

// Both ops' kernel: the checks (f0, f1 [B, H, W, C] of one shape; d [B, H, W, 2], or for the
// terms [K*B, H, W, 2]), then FlowRows over the worker threads.
template <bool kTerms>
class FlowOp : public OpKernel {
 public:
  explicit FlowOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* c) override {
    const Tensor& f0 = c->input(0);
    const Tensor& f1 = c->input(1);
    const Tensor& d = c->input(2);
    OP_REQUIRES(c, f0.dims() == 4 && f0.shape() == f1.shape(),
                errors::InvalidArgument("f0 and f1 must be [B, H, W, C] of one shape, got ",
                                        f0.shape().DebugString(), " and ",
                                        f1.shape().DebugString()));
    const int64_t b = f0.dim_size(0), h = f0.dim_size(1), w = f0.dim_size(2),
                  ch = f0.dim_size(3);
    const bool fields_ok = kTerms ? (b > 0 ? d.dim_size(0) % b == 0 : d.dim_size(0) == 0)
                                  : d.dim_size(0) == b;
    OP_REQUIRES(c, d.dims() == 4 && fields_ok && d.dim_size(1) == h && d.dim_size(2) == w &&
                       d.dim_size(3) == 2,
                errors::InvalidArgument("d must be [", kTerms ? "K*" : "", b, ", ", h, ", ", w,
                                        ", 2], got ", d.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, kTerms ? d.shape() : f0.shape(), &out));
    if (out->NumElements() == 0) return;
    const float* a = f0.flat<float>().data();
    const float* z = f1.flat<float>().data();
    const float* dp = d.flat<float>().data();
    float* y = out->flat<float>().data();
    const auto* workers = c->device()->tensorflow_cpu_worker_threads();
    Shard(workers->num_threads, workers->workers, d.dim_size(0) * h, w * (ch * 24 + 60),
          [&](int64_t begin, int64_t end) {
            FlowRows<kTerms>(a, z, dp, y, b, h, w, ch, begin, end);
          });
  }
};

REGISTER_KERNEL_BUILDER(Name("ZsmTf>FlowMidpoint").Device(DEVICE_CPU), FlowOp<false>);
REGISTER_KERNEL_BUILDER(Name("ZsmTf>FlowMatchTerms").Device(DEVICE_CPU), FlowOp<true>);

}  // namespace
}  // namespace tensorflow
