// CPU kernels of the fused modulated deformable convolution (ZsmTf>DeformableConv2D{,Packed},
// deform_conv_op.cc), framework-free so that a standalone harness can time them: per block of
// kBlock output pixels, the deformable im2col columns are sampled into a per-thread buffer
// (SampleBlock) and multiplied at once by the kernel with the Winograd op's micro-kernel
// (winograd_conv.h), bias and activation added as the outputs are stored (ForwardBlocks).
// Layouts and sampling: deform_im2col.h. The input, the offsets/mask and the output are float32
// or bfloat16 (T = float or bf16, its bits); the arithmetic is float32 in both, and a bfloat16
// output is rounded to nearest even, as TensorFlow's Cast rounds it.
#ifndef ZSM_TF_DEFORM_CONV_CPU_H_
#define ZSM_TF_DEFORM_CONV_CPU_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "deform_im2col.h"
#include "deform_im2col_cpu.h"
#include "winograd_conv.h"

namespace zsm_deform_conv {

using zsm_winograd::kCols;
using zsm_winograd::kRows;

// A bfloat16 value's bits (the layout of TensorFlow's Eigen::bfloat16: the high half of a float32)
struct bf16 {
  uint16_t bits;
};

inline float to_f32(float v) { return v; }
inline float to_f32(bf16 v) {
  const uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline void store(float v, float* o) { *o = v; }
// round to nearest even, NaN to the quiet NaN of its sign: Eigen's float_to_bfloat16_rtne, which
// TensorFlow's Cast uses
inline void store(float v, bf16* o) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  o->bits = v != v ? static_cast<uint16_t>(u >> 31 ? 0xffc0u : 0x7fc0u)
                   : static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// output pixels per GEMM block (a multiple of kRows and of 8): the columns, 24 x 288 floats at
// C = 32, stay in L1; 48 (55 KB) was 4% slower with AVX2 code (single thread, harness)
constexpr int64_t kBlock = 2 * 12;

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

template <class T>
inline void prefetch(const T* begin, const T* end) {
  for (const char* p = reinterpret_cast<const char*>(begin); p < reinterpret_cast<const char*>(end);
       p += 64)
    __builtin_prefetch(p, 0, 3);
}

#if defined(__AVX__)
// d[k * ldd + i] = s[i * lds + k] for i, k < 8 (8 loads, 24 shuffles, 8 stores)
inline void transpose8x8(const float* s, int64_t lds, float* d, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(d + k * ldd, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
    _mm256_storeu_ps(d + (k + 4) * ldd, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
  }
}
#endif

// One block's per-pixel values as rows: dst[j * kBlock + r] = src[r * stride + j] for pixels
// r < n and values j < cols, 0 for r in [n, kBlock). The sampler then reads each (tap, group)'s
// offsets and mask as contiguous vectors; before, it gathered them pixel by pixel (three strided
// scalar loads and stores per sample).
inline void transpose(const float* src, int64_t stride, int64_t n, int64_t cols, float* dst) {
  int64_t j0 = 0;
#if defined(__AVX__)
  if (n == kBlock) {
    for (; j0 + 8 <= cols; j0 += 8)
      for (int64_t r0 = 0; r0 < kBlock; r0 += 8)
        transpose8x8(src + r0 * stride + j0, stride, dst + j0 * kBlock + r0, kBlock);
  }
#endif
  for (int64_t j = j0; j < cols; ++j) {
    float* __restrict o = dst + j * kBlock;
    for (int64_t r = 0; r < n; ++r) o[r] = src[r * stride + j];
    for (int64_t r = n; r < kBlock; ++r) o[r] = 0.f;
  }
}

// The same from bfloat16 values: widened into `stage` (n x cols floats) first, then transposed
inline void transpose(const bf16* src, int64_t stride, int64_t n, int64_t cols, float* dst,
                      float* stage) {
  for (int64_t r = 0; r < n; ++r) {
    const bf16* s = src + r * stride;
    float* __restrict o = stage + r * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) o[j] = to_f32(s[j]);
  }
  transpose(stage, cols, n, cols, dst);
}
inline void transpose(const float* src, int64_t stride, int64_t n, int64_t cols, float* dst,
                      float*) {
  transpose(src, stride, n, cols, dst);
}

// The columns [n, K*C] of output pixels p0 .. p0 + n - 1 (n <= kBlock), the values of
// zsm::im2col_forward_cpu, sampled one (tap, group) at a time over all n pixels instead of pixel
// by pixel: the bilinear plans of 8 pixels' samples are computed at once in 8-lane vectors (no
// branches: corners outside the image read a zero vector, a sample outside has weight 0; the
// compiler's own vectoriser gives up on this loop), then each sample's Cg channels are blended
// from its 4 corners. Per sample, the scalar plan of the pixel-by-pixel path cost more than the
// blend itself (Cg = 8: one vector); this takes 20-30% off the op. tb: the block's offsets and
// mask as rows of kBlock pixels (transpose): (tap, group) gk's dy at row 2 gk, dx at 2 gk + 1,
// mask at 2 dg K + gk. Indices and integer positions are int32: the op checks that they fit
// (kMaxSide).
template <int CG, class T>
void SampleBlock(const zsm::DeformDims& d, const T* in, const float* tb, float* cols,
                 int64_t p0, int64_t n) {
  const int K = d.K(), dg = d.dg;
  const int64_t C = d.C, Cg = CG > 0 ? CG : d.Cg(), kc = K * C, HW = d.H * d.W,
                HoWo = d.Ho * d.Wo;
  const int32_t Hi = static_cast<int32_t>(d.H), Wi = static_cast<int32_t>(d.W);
  const float Hf = static_cast<float>(d.H), Wf = static_cast<float>(d.W);
  static_assert(kBlock % 8 == 0, "the plans are computed 8 pixels at a time");
  alignas(64) int32_t iy[kBlock] = {}, ix[kBlock] = {};
  alignas(64) int32_t e[4][kBlock];
  alignas(64) int32_t e00[kBlock];   // corner (0, 0)'s index when all four are inside, else -1
  alignas(64) float w[4][kBlock];
  const T* img[kBlock];
  alignas(64) T zeros[CG > 0 ? CG : 64] = {};   // zero bits: 0.f in both types
  std::vector<T> zeros_dyn(CG > 0 || Cg <= 64 ? 0 : Cg, T{});
  const T* zero = zeros_dyn.empty() ? zeros : zeros_dyn.data();
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
      const float* dy = tb + 2 * gk * kBlock;
      const float* dx = dy + kBlock;
      const float* mv = tb + (2 * dg * K + gk) * kBlock;
      for (int64_t r = 0; r < n; r += 8) {   // 8 plans at once (lanes beyond n: dy = mv = 0)
        v8 y = __builtin_convertvector(*reinterpret_cast<const v8i*>(&iy[r]) + ky, v8) +
               zsm_winograd::load8(&dy[r]);
        v8 x = __builtin_convertvector(*reinterpret_cast<const v8i*>(&ix[r]) + kx, v8) +
               zsm_winograd::load8(&dx[r]);
        const v8i ok = (y > -1.f) & (y < Hf) & (x > -1.f) & (x < Wf);   // 0 for NaN
        y = ok ? y : 0.f;
        x = ok ? x : 0.f;
        const v8 fy = floor8(y), fx = floor8(x);
        const v8i y0 = __builtin_convertvector(fy, v8i), x0 = __builtin_convertvector(fx, v8i);
        const v8 ly = y - fy, lx = x - fx, hy = 1.f - ly, hx = 1.f - lx;
        const v8 mk = ok ? zsm_winograd::load8(&mv[r]) : 0.f;
        const v8i vy0 = ok & (y0 >= 0), vy1 = ok & (y0 + 1 < Hi);
        const v8i vx0 = x0 >= 0, vx1 = x0 + 1 < Wi;
        const v8i i00 = y0 * Wi + x0;
        *reinterpret_cast<v8i*>(&e[0][r]) = (vy0 & vx0) ? i00 : -1;
        *reinterpret_cast<v8i*>(&e[1][r]) = (vy0 & vx1) ? i00 + 1 : -1;
        *reinterpret_cast<v8i*>(&e[2][r]) = (vy1 & vx0) ? i00 + Wi : -1;
        *reinterpret_cast<v8i*>(&e[3][r]) = (vy1 & vx1) ? i00 + Wi + 1 : -1;
        *reinterpret_cast<v8i*>(&e00[r]) = (vy0 & vy1 & vx0 & vx1) ? i00 : -1;
        *reinterpret_cast<v8*>(&w[0][r]) = hy * hx * mk;
        *reinterpret_cast<v8*>(&w[1][r]) = hy * lx * mk;
        *reinterpret_cast<v8*>(&w[2][r]) = ly * hx * mk;
        *reinterpret_cast<v8*>(&w[3][r]) = ly * lx * mk;
      }
      const int64_t gc = g * Cg;
      for (int64_t r = 0; r < n; ++r) {
        const T* base = img[r] + gc;
        const T *s0, *s1, *s2, *s3;
        if (e00[r] >= 0) {   // all four corners inside (most samples): one index
          s0 = base + e00[r] * C;
          s1 = s0 + C;
          s2 = s0 + Wi * C;
          s3 = s2 + C;
        } else {
          s0 = e[0][r] >= 0 ? base + e[0][r] * C : zero;
          s1 = e[1][r] >= 0 ? base + e[1][r] * C : zero;
          s2 = e[2][r] >= 0 ? base + e[2][r] * C : zero;
          s3 = e[3][r] >= 0 ? base + e[3][r] * C : zero;
        }
        const float w0 = w[0][r], w1 = w[1][r], w2 = w[2][r], w3 = w[3][r];
        float* __restrict dst = cols + r * kc + k * C + gc;
#pragma omp simd
        for (int64_t c = 0; c < Cg; ++c)
          dst[c] = w0 * to_f32(s0[c]) + w1 * to_f32(s1[c]) + w2 * to_f32(s2[c]) +
                   w3 * to_f32(s3[c]);
      }
    }
  }
}

// Output pixels [begin, end): for each block of kBlock pixels, its columns [n, K*C] are sampled
// into `cols`, multiplied by the kernel [K*C, kp] (kp: Cout rounded up to kCols, zero columns
// beyond Cout) into `acc`, and stored with the bias and the activation. `mask` null: `off` is the
// packed offset/mask tensor (3*dg*K channels per pixel) and the mask is the sigmoid of its last
// dg*K channels, taken per block on the transposed rows. T: float or bf16 (in, off, mask, out).
template <class T>
inline void ForwardBlocks(const zsm::DeformDims& d, const T* in, const T* off, const T* mask,
                          const float* kernel, int64_t kp, const float* bias, int64_t cout,
                          float slope, T* out, int64_t begin, int64_t end) {
  const int64_t kc = d.K() * d.C, gk = int64_t{d.dg} * d.K();
  const bool packed = mask == nullptr;
  std::vector<float> cols(static_cast<size_t>(kBlock * kc));
  std::vector<float> acc(static_cast<size_t>(kBlock * kp));
  const int64_t os = packed ? 3 * gk : 2 * gk;   // offsets' values per pixel
  std::vector<float> tb(static_cast<size_t>(3 * gk * kBlock));
  // bfloat16 offsets/mask are widened here before they are transposed
  std::vector<float> stage(std::is_same<T, float>::value ? 0 : static_cast<size_t>(kBlock * os));
  for (int64_t p0 = begin; p0 < end; p0 += kBlock) {
    const int64_t n = std::min(kBlock, end - p0);
    const int64_t np = (n + kRows - 1) / kRows * kRows;
    {   // the next block's offsets (and mask), fetched while this block is computed: 8% faster
      const int64_t q0 = std::min(p0 + kBlock, end), q1 = std::min(p0 + 2 * kBlock, end);
      prefetch(off + q0 * os, off + q1 * os);
      if (!packed) prefetch(mask + q0 * gk, mask + q1 * gk);
    }
    // this block's offsets and mask, one row per channel: tb[j][r] (kBlock pixels a row)
    transpose(off + p0 * os, os, n, os, tb.data(), stage.data());
    if (!packed) transpose(mask + p0 * gk, gk, n, gk, tb.data() + 2 * gk * kBlock, stage.data());
    if (packed) {   // the mask is the sigmoid of the logits
      float* __restrict mb = tb.data() + 2 * gk * kBlock;
#pragma omp simd
      for (int64_t j = 0; j < gk * kBlock; ++j) mb[j] = 1.f / (1.f + exp_approx(-mb[j]));
    }
    zsm::dispatch_group_width(d.Cg(), [&](auto cg) {
      SampleBlock<decltype(cg)::value, T>(d, in, tb.data(), cols.data(), p0, n);
    });
    if (np > n) std::memset(&cols[n * kc], 0, (np - n) * kc * sizeof(float));
    for (int64_t k0 = 0; k0 < kp; k0 += kCols)
      for (int64_t r0 = 0; r0 < np; r0 += kRows)
        zsm_winograd::micro_kernel(&cols[r0 * kc], static_cast<int>(kc), kernel + k0,
                                   static_cast<int>(kp), &acc[r0 * kp + k0], static_cast<int>(kp),
                                   static_cast<int>(kc));
    for (int64_t r = 0; r < n; ++r) {
      const float* a = &acc[r * kp];
      T* o = out + (p0 + r) * cout;
      for (int64_t c = 0; c < cout; ++c) {
        const float v = a[c] + bias[c];
        store(std::max(v, slope * v), &o[c]);
      }
    }
  }
}

}  // namespace zsm_deform_conv

#endif  // ZSM_TF_DEFORM_CONV_CPU_H_
