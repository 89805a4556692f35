// CUDA kernels of the deformable im2col (same math as the CPU kernels, from deform_im2col.h).
// Framework-free: compiled by nvcc alone, for the TensorFlow op and for cuda_test/.
//
// Forward and grad-input use one thread per column element (pixel, tap, channel), channel fastest,
// so reads of the input and writes of the columns are coalesced; the grad-input scatter uses
// atomicAdd. Offset/mask gradients use one thread per (pixel, group, tap) looping over the group's
// channels.
//
// Every kernel is a grid-stride loop, so it is correct for any grid; kernels are launched through
// ZSM_LAUNCH so that host_shim/cuda_runtime.h can compile this file as plain C++ (g++) and run the
// kernels serially on the CPU (tests/test_cuda_kernels_host.py).
#include <cuda_runtime.h>

#include "deform_im2col.h"
#include "deform_im2col_gpu.h"

namespace zsm {
namespace {

#ifndef ZSM_LAUNCH
#define ZSM_LAUNCH(kernel, blocks, threads, stream) kernel<<<blocks, threads, 0, stream>>>
#endif

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < (1 << 22) ? (b > 0 ? b : 1) : (1 << 22));
}

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
__global__ void forward_kernel(DeformDims d, const T* __restrict__ in, const T* __restrict__ off,
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
__global__ void grad_input_kernel(DeformDims d, const T* __restrict__ off,
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
__global__ void grad_coord_kernel(DeformDims d, const T* __restrict__ in,
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

template <typename T>
int deform_im2col_forward_gpu(void* stream, const DeformDims& d, const T* in, const T* off,
                              const T* mask, T* cols) {
  const int64_t n = d.pixels() * d.K() * d.C;
  if (n == 0) return 0;  // empty columns: nothing to write (and the pointers may be null)
  [[maybe_unused]] cudaStream_t s = static_cast<cudaStream_t>(stream);
  ZSM_LAUNCH(forward_kernel<T>, blocks_for(n), kThreads, s)(d, in, off, mask, cols);
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
    ZSM_LAUNCH(grad_input_kernel<T>, blocks_for(n), kThreads, s)(d, off, mask, grad_cols,
                                                                 grad_in);
  if (m > 0)
    ZSM_LAUNCH(grad_coord_kernel<T>, blocks_for(m), kThreads, s)(d, in, off, mask, grad_cols,
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
