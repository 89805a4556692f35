// Framework-free per-sample math of the deformable, modulated im2col (DCNv2), shared by the CPU
// kernels (deform_im2col_cpu.h), the CUDA kernels (deform_im2col_gpu.cu.cc, compiled by NVRTC, nvcc
// or g++ with host_shim/) and the standalone CUDA test (cuda_test/). No TensorFlow here.
//
// Layouts (NHWC): input [B, H, W, C]; offsets [B, Ho, Wo, 2*dg*K] with (dy, dx) of tap k of group g
// at channels 2*(g*K+k), 2*(g*K+k)+1; mask [B, Ho, Wo, dg*K] (channel g*K+k); columns
// [B, Ho, Wo, K*C], tap-major, channel-minor, channel c = g*Cg + cg with Cg = C/dg, K = kh*kw.
//
// Sampling (torchvision / DCNv2): tap k = i*kw + j samples at
//   y = ho*sh - ph + i*dh + dy,  x = wo*sw - pw + j*dw + dx,
// bilinearly, pixels outside the image are zero, and the whole sample (value and gradients) is zero
// when y <= -1, y >= H, x <= -1 or x >= W.
#pragma once

#if defined(__CUDACC_RTC__)
typedef long long int64_t;  // NVRTC has no standard headers; floor/floorf are its builtins
#else
#include <cmath>
#include <cstdint>
#endif

#if defined(__CUDACC__)
#define ZSM_HD __host__ __device__ __forceinline__
#else
#define ZSM_HD inline
#endif

namespace zsm {

// Sizes and attributes of one deformable im2col.
struct DeformDims {
  int64_t B, H, W, C;  // input
  int64_t Ho, Wo;      // output (taken from the offsets)
  int kh, kw, sh, sw, ph, pw, dh, dw, dg;

  ZSM_HD int K() const { return kh * kw; }
  ZSM_HD int64_t Cg() const { return C / dg; }
  ZSM_HD int64_t pixels() const { return B * Ho * Wo; }  // output pixels
};

ZSM_HD float zsm_floor(float v) { return floorf(v); }
ZSM_HD double zsm_floor(double v) { return floor(v); }

// Bilinear sampling plan of one sample: the corners (y0,x0), (y0,x1), (y1,x0), (y1,x1) as pixel
// indices y*W + x into one image (-1 when the corner is outside the image) and their weights.
template <typename T>
struct Plan {
  int64_t idx[4];
  T w[4];   // bilinear weights
  T ly, lx;  // fractional parts of y and x
};

// Sample position of tap k at output pixel (ho, wo) given its offset (dy, dx).
template <typename T>
ZSM_HD void sample_position(const DeformDims& d, int64_t ho, int64_t wo, int k, T dy, T dx,
                            T* y, T* x) {
  *y = static_cast<T>(ho * d.sh - d.ph + (k / d.kw) * d.dh) + dy;
  *x = static_cast<T>(wo * d.sw - d.pw + (k % d.kw) * d.dw) + dx;
}

// Fills the plan of a sample at (y, x) in an H x W image; false when the sample is zero
// (outside (-1, H) x (-1, W), or NaN).
template <typename T>
ZSM_HD bool make_plan(T y, T x, int64_t H, int64_t W, Plan<T>* p) {
  if (!(y > T(-1) && y < T(H) && x > T(-1) && x < T(W))) return false;
  const T fy = zsm_floor(y), fx = zsm_floor(x);
  const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
  const int64_t y1 = y0 + 1, x1 = x0 + 1;
  p->ly = y - fy;
  p->lx = x - fx;
  const T hy = T(1) - p->ly, hx = T(1) - p->lx;
  const bool vy0 = y0 >= 0, vy1 = y1 < H, vx0 = x0 >= 0, vx1 = x1 < W;
  p->idx[0] = (vy0 && vx0) ? y0 * W + x0 : -1;
  p->idx[1] = (vy0 && vx1) ? y0 * W + x1 : -1;
  p->idx[2] = (vy1 && vx0) ? y1 * W + x0 : -1;
  p->idx[3] = (vy1 && vx1) ? y1 * W + x1 : -1;
  p->w[0] = hy * hx;
  p->w[1] = hy * p->lx;
  p->w[2] = p->ly * hx;
  p->w[3] = p->ly * p->lx;
  return true;
}

// Gradients of one sample wrt its y, x and mask from the per-corner dot products
// dot[j] = sum_c grad_column[c] * input[corner j, c] (0 for corners outside the image):
// value = m * sum_j w_j v_j, so d/dm = sum_j w_j dot_j and d/dy = m * sum_j (dw_j/dy) dot_j.
template <typename T>
ZSM_HD void sample_grads(const Plan<T>& p, const T dot[4], T m, T* gy, T* gx, T* gm) {
  const T hy = T(1) - p.ly, hx = T(1) - p.lx;
  *gm = p.w[0] * dot[0] + p.w[1] * dot[1] + p.w[2] * dot[2] + p.w[3] * dot[3];
  *gy = m * (hx * (dot[2] - dot[0]) + p.lx * (dot[3] - dot[1]));
  *gx = m * (hy * (dot[1] - dot[0]) + p.ly * (dot[3] - dot[2]));
}

}  // namespace zsm
