// CPU kernels of the deformable im2col, framework-free (used by the TensorFlow op and, serially, as
// the reference of the standalone CUDA test). Each call covers a range of work units, so the caller
// decides the threading; see deform_im2col.h for layouts and semantics.
//
// Channel loops are over the Cg contiguous channels of one deformable group (NHWC) and reuse one
// bilinear plan (4 corners, 4 weights * mask) per (pixel, group, tap); `#pragma omp simd` (with
// -fopenmp-simd) lets the compiler vectorise them, reductions included.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "deform_im2col.h"

namespace zsm {

// Calls f(std::integral_constant<int, CG>) with CG = cg for common group widths, else CG = 0:
// the kernels below fix Cg = CG at compile time when CG > 0, so that their channel loops become a
// few full-width vector instructions (with a runtime Cg, the compiler may pick vectors wider than
// the group and run the scalar remainder loop only).
template <typename F>
void dispatch_group_width(int64_t cg, F&& f) {
  switch (cg) {
    case 4: return f(std::integral_constant<int, 4>());
    case 8: return f(std::integral_constant<int, 8>());
    case 16: return f(std::integral_constant<int, 16>());
    case 32: return f(std::integral_constant<int, 32>());
    default: return f(std::integral_constant<int, 0>());
  }
}

template <int CG, typename T>
void im2col_forward_cg(const DeformDims& d, const T* in, const T* off, const T* mask, T* cols,
                       int64_t begin, int64_t end) {
  const int K = d.K(), dg = d.dg;
  const int64_t C = d.C, Cg = CG > 0 ? CG : d.Cg(), HW = d.H * d.W, HoWo = d.Ho * d.Wo;
  const std::vector<T> zeros(Cg, T(0));  // read in place of corners outside the image
  for (int64_t pix = begin; pix < end; ++pix) {
    const int64_t b = pix / HoWo, ho = (pix % HoWo) / d.Wo, wo = pix % d.Wo;
    const T* img = in + b * HW * C;
    const T* o = off + pix * 2 * dg * K;
    const T* m = mask + pix * dg * K;
    for (int k = 0; k < K; ++k) {
      for (int g = 0; g < dg; ++g) {
        const int gk = g * K + k;
        T* __restrict dst = cols + (pix * K + k) * C + g * Cg;
        T y, x;
        sample_position(d, ho, wo, k, o[2 * gk], o[2 * gk + 1], &y, &x);
        Plan<T> p;
        if (!make_plan(y, x, d.H, d.W, &p)) {
          std::fill(dst, dst + Cg, T(0));
          continue;
        }
        const T* s[4];
        T w[4];
        for (int j = 0; j < 4; ++j) {
          s[j] = p.idx[j] >= 0 ? img + p.idx[j] * C + g * Cg : zeros.data();
          w[j] = p.w[j] * m[gk];
        }
        const T *__restrict s0 = s[0], *__restrict s1 = s[1], *__restrict s2 = s[2],
                            *__restrict s3 = s[3];
        const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
#pragma omp simd
        for (int64_t c = 0; c < Cg; ++c) dst[c] = w0 * s0[c] + w1 * s1[c] + w2 * s2[c] + w3 * s3[c];
      }
    }
  }
}

// Forward: columns of output pixels [begin, end) (flat index b*Ho*Wo + ho*Wo + wo).
template <typename T>
void im2col_forward_cpu(const DeformDims& d, const T* in, const T* off, const T* mask, T* cols,
                        int64_t begin, int64_t end) {
  dispatch_group_width(d.Cg(), [&](auto cg) {
    im2col_forward_cg<decltype(cg)::value>(d, in, off, mask, cols, begin, end);
  });
}

template <int CG, typename T>
void im2col_backward_cg(const DeformDims& d, const T* in, const T* off, const T* mask,
                        const T* grad_cols, int64_t b, int64_t begin, int64_t end, T* grad_img,
                        T* grad_off, T* grad_mask) {
  const int K = d.K(), dg = d.dg;
  const int64_t C = d.C, Cg = CG > 0 ? CG : d.Cg(), HoWo = d.Ho * d.Wo;
  const std::vector<T> zeros(Cg, T(0));  // read in place of corners outside the image
  std::vector<T> sink(Cg);               // written in place of corners outside the image
  const T* img = in + b * d.H * d.W * C;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t pix = b * HoWo + q, ho = q / d.Wo, wo = q % d.Wo;
    for (int k = 0; k < K; ++k) {
      for (int g = 0; g < dg; ++g) {
        const int gk = g * K + k;
        const int64_t oi = pix * 2 * dg * K + 2 * gk, mi = pix * dg * K + gk;
        T y, x;
        sample_position(d, ho, wo, k, off[oi], off[oi + 1], &y, &x);
        Plan<T> p;
        if (!make_plan(y, x, d.H, d.W, &p)) {
          grad_off[oi] = grad_off[oi + 1] = grad_mask[mi] = T(0);
          continue;
        }
        const T m = mask[mi];
        const T* s[4];
        T* t[4];
        T w[4];
        for (int j = 0; j < 4; ++j) {
          const bool inside = p.idx[j] >= 0;
          s[j] = inside ? img + p.idx[j] * C + g * Cg : zeros.data();
          t[j] = inside ? grad_img + p.idx[j] * C + g * Cg : sink.data();
          w[j] = p.w[j] * m;
        }
        const T* __restrict gc = grad_cols + (pix * K + k) * C + g * Cg;
        const T *__restrict s0 = s[0], *__restrict s1 = s[1], *__restrict s2 = s[2],
                            *__restrict s3 = s[3];
        T *t0 = t[0], *t1 = t[1], *t2 = t[2], *t3 = t[3];
        const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        // The t[j] are distinct pixels of grad_img, except that several may be `sink`.
#pragma omp simd reduction(+ : d0, d1, d2, d3)
        for (int64_t c = 0; c < Cg; ++c) {
          const T v = gc[c];
          d0 += v * s0[c];
          d1 += v * s1[c];
          d2 += v * s2[c];
          d3 += v * s3[c];
          t0[c] += w0 * v;
          t1[c] += w1 * v;
          t2[c] += w2 * v;
          t3[c] += w3 * v;
        }
        const T dots[4] = {d0, d1, d2, d3};
        sample_grads(p, dots, m, &grad_off[oi], &grad_off[oi + 1], &grad_mask[mi]);
      }
    }
  }
}

// Backward over output pixels [begin, end) of image b (index ho*Wo + wo): accumulates into
// grad_img, the [H, W, C] input gradient of image b, and writes grad_off / grad_mask of those
// pixels. Calls on different images, or on disjoint pixel ranges with different grad_img buffers,
// touch disjoint memory and may run concurrently.
template <typename T>
void im2col_backward_cpu(const DeformDims& d, const T* in, const T* off, const T* mask,
                         const T* grad_cols, int64_t b, int64_t begin, int64_t end, T* grad_img,
                         T* grad_off, T* grad_mask) {
  dispatch_group_width(d.Cg(), [&](auto cg) {
    im2col_backward_cg<decltype(cg)::value>(d, in, off, mask, grad_cols, b, begin, end, grad_img,
                                            grad_off, grad_mask);
  });
}

}  // namespace zsm
