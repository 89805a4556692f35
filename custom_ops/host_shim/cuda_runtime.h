// Host shim of the small part of the CUDA runtime that deform_im2col_gpu.cu.cc and
// cuda_test/test_gpu_vs_cpu.cu use, so that both compile as plain C++ (g++, no nvcc, no GPU):
//
//   g++ -std=c++17 -x c++ -Icustom_ops/host_shim -Icustom_ops
//       custom_ops/cuda_test/test_gpu_vs_cpu.cu custom_ops/deform_im2col_gpu.cu.cc
//
// A kernel launch runs every thread of the grid one after another (block 0 thread 0, block 0
// thread 1, ...), so each thread's grid-stride loop runs with its real blockIdx / threadIdx /
// blockDim / gridDim. "Device" memory is host memory; streams are tags. cudaMemsetAsync on a null
// pointer fails as on a GPU, and zsm_shim::max_blocks caps the grid so that the grid-stride loops
// really loop. Serial execution makes atomicAdd a plain add. Not a CUDA emulator: no shared
// memory, no __syncthreads, no warps (the kernels use none of them).
#pragma once

#define ZSM_HOST_SHIM 1

#include <cstdint>
#include <cstdlib>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
constexpr unsigned cudaStreamNonBlocking = 1;
struct CUstream_st {
  int id;
};
typedef CUstream_st* cudaStream_t;

namespace zsm_shim {
inline cudaError_t last_error = cudaSuccess;
inline unsigned max_blocks = 0;  // 0: no cap; else the grid has at most this many blocks
inline long launches = 0;        // kernel launches so far

// ZSM_LAUNCH(kernel, blocks, threads, stream)(args...): runs all threads of the grid serially.
template <typename Kernel>
struct Launch {
  Kernel kernel;
  unsigned blocks, threads;
  template <typename... Args>
  void operator()(Args&&... args) const {
    if (blocks == 0 || threads == 0 || threads > 1024) {
      last_error = cudaErrorInvalidConfiguration;
      return;
    }
    ++launches;
    gridDim = dim3{max_blocks && blocks > max_blocks ? max_blocks : blocks, 1, 1};
    blockDim = dim3{threads, 1, 1};
    for (unsigned b = 0; b < gridDim.x; ++b)
      for (unsigned t = 0; t < threads; ++t) {
        blockIdx = dim3{b, 0, 0};
        threadIdx = dim3{t, 0, 0};
        kernel(args...);
      }
  }
};
template <typename Kernel>
Launch<Kernel> launch(Kernel kernel, int64_t blocks, int64_t threads) {
  return Launch<Kernel>{kernel, static_cast<unsigned>(blocks), static_cast<unsigned>(threads)};
}

// A launch that runs nothing (and reports success): compiling with
// -D'ZSM_LAUNCH(k,b,t,s)=::zsm_shim::launch_nothing' checks that the test catches unrun kernels.
struct LaunchNothing {
  template <typename... Args>
  void operator()(Args&&...) const {}
};
inline constexpr LaunchNothing launch_nothing{};
}  // namespace zsm_shim

#ifndef ZSM_LAUNCH
#define ZSM_LAUNCH(kernel, blocks, threads, stream) ::zsm_shim::launch(kernel, blocks, threads)
#endif

template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = zsm_shim::last_error;
  zsm_shim::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error (host shim)";
    case cudaErrorInvalidValue: return "invalid argument (host shim)";
    case cudaErrorMemoryAllocation: return "out of memory (host shim)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (host shim)";
  }
  return "unknown error (host shim)";
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  *p = static_cast<T*>(std::malloc(bytes ? bytes : 1));
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  if (p == nullptr) return cudaErrorInvalidValue;
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  return cudaMemsetAsync(p, value, bytes);
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  if (bytes && (dst == nullptr || src == nullptr)) return cudaErrorInvalidValue;
  if (bytes) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static CUstream_st stream{1};
  *s = &stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
