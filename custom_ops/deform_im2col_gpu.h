// Host-side declarations of the CUDA launchers (deform_im2col_gpu.cu.cc). No CUDA or TensorFlow
// types here, so plain C++ (the TensorFlow op, g++) can call them; `stream` is a cudaStream_t and
// the return value a cudaError_t (0 = success). All pointers are device pointers.
#pragma once

#include "deform_im2col.h"

namespace zsm {

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
