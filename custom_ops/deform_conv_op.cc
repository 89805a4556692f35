// TensorFlow op of the whole modulated deformable convolution (DCNv2) on the CPU, float32,
// inference only: the deformable im2col and the GEMM fused, one block of output pixels at a time:
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
// in its L2 cache and multiplies it at once with the Winograd op's register-blocked micro-kernel
// (winograd_conv.h: 6 x 16 on AVX2, 12 x 16 on AVX-512), adding the bias and the activation as
// it stores. No gradient (training uses the differentiable im2col op), no GPU or XLA kernel.
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
#include "deform_im2col_cpu.h"
#include "winograd_conv.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;
using zsm_winograd::kCols;
using zsm_winograd::kRows;

constexpr int64_t kBlock = 4 * 12;  // output pixels per GEMM block (a multiple of kRows)
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
    .Input("input: float")
    .Input("offsets: float")
    .Input("mask: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("output: float")
    ZSM_DEFORM_ATTRS
    .Attr("negative_slope: float = 1.0")
    .SetShapeFn([](InferenceContext* c) { return OutputShape(c, 2); })
    .Doc("Modulated deformable convolution (DCNv2) + bias (+ leaky ReLU), NHWC, CPU inference.");

REGISTER_OP("ZsmTf>DeformableConv2DPacked")
    .Input("input: float")
    .Input("offset_mask: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("output: float")
    ZSM_DEFORM_ATTRS
    .Attr("negative_slope: float = 1.0")
    .SetShapeFn([](InferenceContext* c) { return OutputShape(c, -1); })
    .Doc("ZsmTf>DeformableConv2D reading the offsets and the mask logits from one tensor.");

// exp(x) for float32 without branches (vectorisable under `omp simd`): 2^n * p(r), n = round(x /
// ln 2), r = x - n ln 2 in two parts, p Cephes' degree-6 polynomial; within 2 ulp of std::exp on
// [-87, 88] (x is clamped there: sigmoid's tails are 0 and 1 to float precision anyway).
inline float exp_approx(float x) {
  x = x > -87.f ? x : -87.f;  // selects, not std::min/max (those stop the vectoriser); NaN -> -87
  x = x < 88.f ? x : 88.f;
  const float shift = 12582912.f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + shift) - shift;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(n) << 23;
  std::memcpy(&p, &bits, sizeof(bits));
  return p;
}

typedef int32_t v8i __attribute__((vector_size(32)));
using zsm_winograd::v8;

// floor of 8 floats of magnitude < 2^24 (as std::floor): truncate, then step down where that
// rounded up (negative non-integers); plain vector code, no SSE4.1 round needed.
inline v8 floor8(v8 v) {
  const v8 t = __builtin_convertvector(__builtin_convertvector(v, v8i), v8);
  return t > v ? t - 1.f : t;
}

// The columns [n, K*C] of output pixels p0 .. p0 + n - 1 (n <= kBlock), the values of
// zsm::im2col_forward_cpu, sampled one (tap, group) at a time over all n pixels instead of pixel
// by pixel: the bilinear plans of 8 pixels' samples are computed at once in 8-lane vectors (no
// branches: corners outside the image read a zero vector, a sample outside has weight 0; the
// compiler's own vectoriser gives up on this loop), then each sample's Cg channels are blended
// from its 4 corners. Per sample, the scalar plan of the pixel-by-pixel path cost more than the
// blend itself (Cg = 8: one vector); this takes 20-30% off the op. Pixel r's offsets are at
// off + r * os, its mask at mask + r * ms (both already at the block's first pixel). Indices
// and integer positions are int32: the op checks that they fit (kMaxSide).
template <int CG>
void SampleBlock(const zsm::DeformDims& d, const float* in, const float* off, int64_t os,
                 const float* mask, int64_t ms, float* cols, int64_t p0, int64_t n) {
  const int K = d.K(), dg = d.dg;
  const int64_t C = d.C, Cg = CG > 0 ? CG : d.Cg(), kc = K * C, HW = d.H * d.W,
                HoWo = d.Ho * d.Wo;
  const int32_t Hi = static_cast<int32_t>(d.H), Wi = static_cast<int32_t>(d.W);
  const float Hf = static_cast<float>(d.H), Wf = static_cast<float>(d.W);
  static_assert(kBlock % 8 == 0, "the plans are computed 8 pixels at a time");
  alignas(64) int32_t iy[kBlock] = {}, ix[kBlock] = {};
  alignas(64) int32_t e[4][kBlock];
  alignas(64) float w[4][kBlock];
  alignas(64) float dy[kBlock] = {}, dx[kBlock] = {}, mv[kBlock] = {};
  const float* img[kBlock];
  alignas(64) float zeros[CG > 0 ? CG : 64] = {};
  std::vector<float> zeros_dyn(CG > 0 || Cg <= 64 ? 0 : Cg, 0.f);
  const float* zero = zeros_dyn.empty() ? zeros : zeros_dyn.data();
  for (int64_t r = 0; r < n; ++r) {
    const int64_t pix = p0 + r, q = pix % HoWo;
    iy[r] = static_cast<int32_t>((q / d.Wo) * d.sh - d.ph);
    ix[r] = static_cast<int32_t>((q % d.Wo) * d.sw - d.pw);
    img[r] = in + (pix / HoWo) * HW * C;
  }
  for (int k = 0; k < K; ++k) {
    const int32_t ky = (k / d.kw) * d.dh, kx = (k % d.kw) * d.dw;
    for (int g = 0; g < dg; ++g) {
      const int gk = g * K + k;
      const float* __restrict o = off + 2 * gk;
      const float* __restrict m = mask + gk;
      for (int64_t r = 0; r < n; ++r) {   // strided: gathered first
        dy[r] = o[r * os];
        dx[r] = o[r * os + 1];
        mv[r] = m[r * ms];
      }
      for (int64_t r = 0; r < n; r += 8) {   // 8 plans at once (lanes beyond n: dy = mv = 0)
        v8 y = __builtin_convertvector(*reinterpret_cast<const v8i*>(&iy[r]) + ky, v8) +
               *reinterpret_cast<const v8*>(&dy[r]);
        v8 x = __builtin_convertvector(*reinterpret_cast<const v8i*>(&ix[r]) + kx, v8) +
               *reinterpret_cast<const v8*>(&dx[r]);
        const v8i ok = (y > -1.f) & (y < Hf) & (x > -1.f) & (x < Wf);   // 0 for NaN
        y = ok ? y : 0.f;
        x = ok ? x : 0.f;
        const v8 fy = floor8(y), fx = floor8(x);
        const v8i y0 = __builtin_convertvector(fy, v8i), x0 = __builtin_convertvector(fx, v8i);
        const v8 ly = y - fy, lx = x - fx, hy = 1.f - ly, hx = 1.f - lx;
        const v8 mk = ok ? *reinterpret_cast<const v8*>(&mv[r]) : 0.f;
        const v8i vy0 = ok & (y0 >= 0), vy1 = ok & (y0 + 1 < Hi);
        const v8i vx0 = x0 >= 0, vx1 = x0 + 1 < Wi;
        const v8i i00 = y0 * Wi + x0;
        *reinterpret_cast<v8i*>(&e[0][r]) = (vy0 & vx0) ? i00 : -1;
        *reinterpret_cast<v8i*>(&e[1][r]) = (vy0 & vx1) ? i00 + 1 : -1;
        *reinterpret_cast<v8i*>(&e[2][r]) = (vy1 & vx0) ? i00 + Wi : -1;
        *reinterpret_cast<v8i*>(&e[3][r]) = (vy1 & vx1) ? i00 + Wi + 1 : -1;
        *reinterpret_cast<v8*>(&w[0][r]) = hy * hx * mk;
        *reinterpret_cast<v8*>(&w[1][r]) = hy * lx * mk;
        *reinterpret_cast<v8*>(&w[2][r]) = ly * hx * mk;
        *reinterpret_cast<v8*>(&w[3][r]) = ly * lx * mk;
      }
      const int64_t gc = g * Cg;
      for (int64_t r = 0; r < n; ++r) {
        const float* base = img[r] + gc;
        const float* __restrict s0 = e[0][r] >= 0 ? base + e[0][r] * C : zero;
        const float* __restrict s1 = e[1][r] >= 0 ? base + e[1][r] * C : zero;
        const float* __restrict s2 = e[2][r] >= 0 ? base + e[2][r] * C : zero;
        const float* __restrict s3 = e[3][r] >= 0 ? base + e[3][r] * C : zero;
        const float w0 = w[0][r], w1 = w[1][r], w2 = w[2][r], w3 = w[3][r];
        float* __restrict dst = cols + r * kc + k * C + gc;
#pragma omp simd
        for (int64_t c = 0; c < Cg; ++c)
          dst[c] = w0 * s0[c] + w1 * s1[c] + w2 * s2[c] + w3 * s3[c];
      }
    }
  }
}

// Output pixels [begin, end): for each block of kBlock pixels, its columns [n, K*C] are sampled
// into `cols`, multiplied by the kernel [K*C, kp] (kp: Cout rounded up to kCols, zero columns
// beyond Cout) into `acc`, and stored with the bias and the activation. `mask` null: `off` is the
// packed offset/mask tensor (3*dg*K channels per pixel) and the mask is the sigmoid of its last
// dg*K channels, computed per block into `mbuf`.
void ForwardBlocks(const zsm::DeformDims& d, const float* in, const float* off, const float* mask,
                   const float* kernel, int64_t kp, const float* bias, int64_t cout, float slope,
                   float* out, int64_t begin, int64_t end) {
  const int64_t kc = d.K() * d.C, gk = int64_t{d.dg} * d.K();
  const bool packed = mask == nullptr;
  std::vector<float> cols(static_cast<size_t>(kBlock * kc));
  std::vector<float> acc(static_cast<size_t>(kBlock * kp));
  std::vector<float> mbuf(packed ? static_cast<size_t>(kBlock * gk) : 0);
  for (int64_t p0 = begin; p0 < end; p0 += kBlock) {
    const int64_t n = std::min(kBlock, end - p0);
    const int64_t np = (n + kRows - 1) / kRows * kRows;
    if (packed) {
      float* __restrict mb = mbuf.data();
      for (int64_t r = 0; r < n; ++r) {
        const float* __restrict logits = off + (p0 + r) * 3 * gk + 2 * gk;
#pragma omp simd
        for (int64_t j = 0; j < gk; ++j) mb[r * gk + j] = 1.f / (1.f + exp_approx(-logits[j]));
      }
    }
    const int64_t os = packed ? 3 * gk : 2 * gk;
    const float* mblk = packed ? mbuf.data() : mask + p0 * gk;
    zsm::dispatch_group_width(d.Cg(), [&](auto cg) {
      SampleBlock<decltype(cg)::value>(d, in, off + p0 * os, os, mblk, gk, cols.data(), p0, n);
    });
    if (np > n) std::memset(&cols[n * kc], 0, (np - n) * kc * sizeof(float));
    for (int64_t k0 = 0; k0 < kp; k0 += kCols)
      for (int64_t r0 = 0; r0 < np; r0 += kRows)
        zsm_winograd::micro_kernel(&cols[r0 * kc], static_cast<int>(kc), kernel + k0,
                                   static_cast<int>(kp), &acc[r0 * kp + k0], static_cast<int>(kp),
                                   static_cast<int>(kc));
    for (int64_t r = 0; r < n; ++r) {
      const float* a = &acc[r * kp];
      float* o = out + (p0 + r) * cout;
      for (int64_t c = 0; c < cout; ++c) {
        const float v = a[c] + bias[c];
        o[c] = std::max(v, slope * v);
      }
    }
  }
}

// kPacked: ZsmTf>DeformableConv2DPacked (offsets and mask logits in one input)
template <bool kPacked>
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
    if (d.H == 0 || d.W == 0 || d.C == 0) {   // every sample is outside an empty image
      float* yp = y->flat<float>().data();
      const float* bp = bias.flat<float>().data();
      for (int64_t i = 0; i < y->NumElements(); ++i) {
        const float v = bp[i % cout];
        yp[i] = std::max(v, slope_ * v);
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
    const float* ip = in.flat<float>().data();
    const float* op = off.flat<float>().data();
    const float* mp = kPacked ? nullptr : mask->flat<float>().data();
    const float* bp = bias.flat<float>().data();
    float* yp = y->flat<float>().data();
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

REGISTER_KERNEL_BUILDER(Name("ZsmTf>DeformableConv2D").Device(DEVICE_CPU),
                        DeformableConv2DOp<false>);
REGISTER_KERNEL_BUILDER(Name("ZsmTf>DeformableConv2DPacked").Device(DEVICE_CPU),
                        DeformableConv2DOp<true>);

}  // namespace
}  // namespace tensorflow
