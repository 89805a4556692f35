// CUDA kernels of the deformable im2col (same math as the CPU kernels, from deform_im2col.h).
// Framework-free, and one file for three compilers:
//   * NVRTC (zsm_tf/ops/nvrtc.py, no nvcc): the kernels only (__CUDACC_RTC__), to cubins and PTX
//     that the TensorFlow op embeds and launches through the CUDA driver API (gpu_launch.h);
//   * nvcc: the kernels plus the runtime-API launchers below, for the standalone test cuda_test/;
//   * g++ with host_shim/cuda_runtime.h: the same, run serially on the CPU
//     (tests/test_cuda_kernels_host.py).
// The kernels are extern "C" (unmangled names, see ZSM_KERNEL_NAMES) so that the driver API finds
// them by name; their parameters are what gpu_launch.h passes (tests/test_nvrtc.py compares the
// PTX parameter sizes with the host's).
//
// Forward and grad-input use one thread per column element (pixel, tap, channel), channel fastest,
// so reads of the input and writes of the columns are coalesced; the grad-input scatter uses
// atomicAdd. Offset/mask gradients use one thread per (pixel, group, tap) looping over the group's
// channels.
//
// Every kernel is a grid-stride loop, so it is correct for any grid; the launchers below launch
// through ZSM_LAUNCH so that host_shim/cuda_runtime.h can run the kernels serially on the CPU.
#if !defined(__CUDACC_RTC__)
#include <cuda_runtime.h>
#endif

#include "deform_im2col.h"
#if !defined(__CUDACC_RTC__)
#include "deform_im2col_gpu.h"
#endif

namespace zsm {
namespace {

// Plan of sample (pix, g, k); false when the sample is zero.
template <typename T>
__device__ __forceinline__ bool plan_of(const DeformDims& d, const T* off, int64_t pix, int g,
                                        int k, Plan<T>* p) {
  const int K = d.K();
  const int64_t oi = pix * 2 * d.dg * K + 2 * (g * K + k);
  const int64_t q = pix % (d.Ho * d.Wo);
  T y, x;
  sample_position(d, q / d.Wo, q % d.Wo, k, off[oi], off[oi + 1], &y, &x);
  return make_plan(y, x, d.H, d.W, p);
}

template <typename T>
__device__ __forceinline__ void forward_body(DeformDims d, const T* __restrict__ in, const T* __restrict__ off,
                               const T* __restrict__ mask, T* __restrict__ cols) {
  const int K = d.K();
  const int64_t n = d.pixels() * K * d.C, HW = d.H * d.W, Cg = d.Cg();
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = e % d.C, pix = e / (d.C * K);
    const int k = static_cast<int>((e / d.C) % K), g = static_cast<int>(c / Cg);
    Plan<T> p;
    T v = T(0);
    if (plan_of(d, off, pix, g, k, &p)) {
      const T* img = in + (pix / (d.Ho * d.Wo)) * HW * d.C + c;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (p.idx[j] >= 0) v += p.w[j] * img[p.idx[j] * d.C];
      v *= mask[pix * d.dg * K + g * K + k];
    }
    cols[e] = v;
  }
}

template <typename T>
__device__ __forceinline__ void grad_input_body(DeformDims d, const T* __restrict__ off,
                                  const T* __restrict__ mask, const T* __restrict__ grad_cols,
                                  T* __restrict__ grad_in) {
  const int K = d.K();
  const int64_t n = d.pixels() * K * d.C, HW = d.H * d.W, Cg = d.Cg();
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = e % d.C, pix = e / (d.C * K);
    const int k = static_cast<int>((e / d.C) % K), g = static_cast<int>(c / Cg);
    Plan<T> p;
    if (!plan_of(d, off, pix, g, k, &p)) continue;
    const T v = grad_cols[e] * mask[pix * d.dg * K + g * K + k];
    T* gimg = grad_in + (pix / (d.Ho * d.Wo)) * HW * d.C + c;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (p.idx[j] >= 0) atomicAdd(gimg + p.idx[j] * d.C, p.w[j] * v);
  }
}

template <typename T>
__device__ __forceinline__ void grad_coord_body(DeformDims d, const T* __restrict__ in,
                                  const T* __restrict__ off, const T* __restrict__ mask,
                                  const T* __restrict__ grad_cols, T* __restrict__ grad_off,
                                  T* __restrict__ grad_mask) {
  const int K = d.K();
  const int64_t n = d.pixels() * d.dg * K, HW = d.H * d.W, Cg = d.Cg();
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t pix = e / (d.dg * K);
    const int gk = static_cast<int>(e % (d.dg * K)), g = gk / K, k = gk % K;
    Plan<T> p;
    T gy = T(0), gx = T(0), gm = T(0);
    if (plan_of(d, off, pix, g, k, &p)) {
      const T* img = in + (pix / (d.Ho * d.Wo)) * HW * d.C + g * Cg;
      const T* gc = grad_cols + (pix * K + k) * d.C + g * Cg;
      T dots[4] = {T(0), T(0), T(0), T(0)};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (p.idx[j] < 0) continue;
        const T* s = img + p.idx[j] * d.C;
        for (int64_t c = 0; c < Cg; ++c) dots[j] += gc[c] * s[c];
      }
      sample_grads(p, dots, mask[e], &gy, &gx, &gm);
    }
    grad_off[2 * e] = gy;
    grad_off[2 * e + 1] = gx;
    grad_mask[e] = gm;
  }
}

}  // namespace
}  // namespace zsm

// The kernels, one per (function, dtype): extern "C" __global__, launched by name.
#define ZSM_KERNELS(T, S)                                                                        \
  extern "C" __global__ void zsm_im2col_forward_##S(zsm::DeformDims d, const T* __restrict__ in, \
                                                    const T* __restrict__ off,                   \
                                                    const T* __restrict__ mask,                  \
                                                    T* __restrict__ cols) {                      \
    zsm::forward_body<T>(d, in, off, mask, cols);                                                \
  }                                                                                              \
  extern "C" __global__ void zsm_im2col_grad_input_##S(                                          \
      zsm::DeformDims d, const T* __restrict__ off, const T* __restrict__ mask,                  \
      const T* __restrict__ grad_cols, T* __restrict__ grad_in) {                                \
    zsm::grad_input_body<T>(d, off, mask, grad_cols, grad_in);                                   \
  }                                                                                              \
  extern "C" __global__ void zsm_im2col_grad_coord_##S(                                          \
      zsm::DeformDims d, const T* __restrict__ in, const T* __restrict__ off,                    \
      const T* __restrict__ mask, const T* __restrict__ grad_cols, T* __restrict__ grad_off,     \
      T* __restrict__ grad_mask) {                                                               \
    zsm::grad_coord_body<T>(d, in, off, mask, grad_cols, grad_off, grad_mask);                   \
  }
ZSM_KERNELS(float, f32)
ZSM_KERNELS(double, f64)
#undef ZSM_KERNELS

#if !defined(__CUDACC_RTC__)
// Runtime-API launchers (nvcc, host shim): the standalone test's entry points.
namespace zsm {
namespace {

#ifndef ZSM_LAUNCH
#define ZSM_LAUNCH(kernel, blocks, threads, stream) kernel<<<blocks, threads, 0, stream>>>
#endif

template <typename T>
struct Kernels;
template <>
struct Kernels<float> {
  static constexpr auto forward = zsm_im2col_forward_f32;
  static constexpr auto grad_input = zsm_im2col_grad_input_f32;
  static constexpr auto grad_coord = zsm_im2col_grad_coord_f32;
};
template <>
struct Kernels<double> {
  static constexpr auto forward = zsm_im2col_forward_f64;
  static constexpr auto grad_input = zsm_im2col_grad_input_f64;
  static constexpr auto grad_coord = zsm_im2col_grad_coord_f64;
};

}  // namespace


template <typename T>
int deform_im2col_forward_gpu(void* stream, const DeformDims& d, const T* in, const T* off,
                              const T* mask, T* cols) {
  const int64_t n = d.pixels() * d.K() * d.C;
  if (n == 0) return 0;  // empty columns: nothing to write (and the pointers may be null)
  [[maybe_unused]] cudaStream_t s = static_cast<cudaStream_t>(stream);
  ZSM_LAUNCH(Kernels<T>::forward, blocks_for(n), kThreads, s)(d, in, off, mask, cols);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int deform_im2col_backward_gpu(void* stream, const DeformDims& d, const T* in, const T* off,
                               const T* mask, const T* grad_cols, T* grad_in, T* grad_off,
                               T* grad_mask) {
  [[maybe_unused]] cudaStream_t s = static_cast<cudaStream_t>(stream);
  // Empty tensors may come with null pointers: touch only non-empty buffers.
  const int64_t n_in = d.B * d.H * d.W * d.C;
  if (n_in > 0) {
    const cudaError_t err = cudaMemsetAsync(grad_in, 0, sizeof(T) * n_in, s);
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  const int64_t n = d.pixels() * d.K() * d.C, m = d.pixels() * d.dg * d.K();
  if (n > 0 && n_in > 0)  // no input pixels: every sample is outside, grad_in is empty
    ZSM_LAUNCH(Kernels<T>::grad_input, blocks_for(n), kThreads, s)(d, off, mask, grad_cols,
                                                                 grad_in);
  if (m > 0)
    ZSM_LAUNCH(Kernels<T>::grad_coord, blocks_for(m), kThreads, s)(d, in, off, mask, grad_cols,
                                                                 grad_off, grad_mask);
  return static_cast<int>(cudaGetLastError());
}

const char* gpu_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

#define ZSM_INSTANTIATE(T)                                                                    \
  template int deform_im2col_forward_gpu<T>(void*, const DeformDims&, const T*, const T*,     \
                                            const T*, T*);                                    \
  template int deform_im2col_backward_gpu<T>(void*, const DeformDims&, const T*, const T*,    \
                                             const T*, const T*, T*, T*, T*);
ZSM_INSTANTIATE(float)
ZSM_INSTANTIATE(double)
#undef ZSM_INSTANTIATE

}  // namespace zsm
#endif  // !__CUDACC_RTC__
