// Host side of the CUDA kernels (deform_im2col_gpu.cu.cc): the launch configuration, shared by
// the runtime-API launchers declared here (nvcc / host shim: the standalone test cuda_test/) and
// the TensorFlow op's driver-API launches (gpu_launch.h). No CUDA or TensorFlow types here;
// `stream` is a cudaStream_t and the return value a cudaError_t (0 = success). All pointers are
// device pointers.
#pragma once

#include "deform_im2col.h"

namespace zsm {

constexpr int kThreads = 256;  // threads per block of every kernel

// Blocks for n work items: ceil(n / kThreads), at least 1, at most 2^22 (grid-stride loops).
inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < (1 << 22) ? (b > 0 ? b : 1) : (1 << 22));
}

// columns [B, Ho, Wo, K*C] from input, offsets, mask.
template <typename T>
int deform_im2col_forward_gpu(void* stream, const DeformDims& d, const T* in, const T* off,
                              const T* mask, T* cols);

// grad_in [B, H, W, C] (overwritten), grad_off, grad_mask from grad_cols [B, Ho, Wo, K*C].
template <typename T>
int deform_im2col_backward_gpu(void* stream, const DeformDims& d, const T* in, const T* off,
                               const T* mask, const T* grad_cols, T* grad_in, T* grad_off,
                               T* grad_mask);

const char* gpu_error_string(int err);

}  // namespace zsm
