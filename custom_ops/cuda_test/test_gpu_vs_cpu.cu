// Standalone check (no TensorFlow) that the CUDA kernels of deform_im2col_gpu.cu.cc match the CPU
// kernels of deform_im2col_cpu.h, forward and backward, float and double, on random problems with
// strides, padding, dilation, groups and offsets reaching far outside the image.
//
//   make -C custom_ops cuda-test      (or: make -C custom_ops/cuda_test run)
//
// Exit status 0 when all cases match (or, printing SKIP, when there is no CUDA device), else 1.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "deform_im2col_cpu.h"
#include "deform_im2col_gpu.h"

namespace {

#define CHECK_CUDA(expr)                                                              \
  do {                                                                                \
    cudaError_t e_ = (expr);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    CHECK_CUDA(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)));
    CHECK_CUDA(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> get() const {
    std::vector<T> host(n);
    CHECK_CUDA(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

// max |a - b| / (1 + max |b|)
template <typename T>
double rel_err(const std::vector<T>& a, const std::vector<T>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / (1 + scale);
}

template <typename T>
bool run_case(const zsm::DeformDims& d, double offset_scale, unsigned seed, double tol) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform;
  const int K = d.K();
  std::vector<T> in(d.B * d.H * d.W * d.C), off(d.pixels() * 2 * d.dg * K),
      mask(d.pixels() * d.dg * K), grad_cols(d.pixels() * K * d.C);
  for (auto& v : in) v = T(normal(rng));
  for (auto& v : off) v = T(normal(rng) * offset_scale);
  for (auto& v : mask) v = T(uniform(rng));
  for (auto& v : grad_cols) v = T(normal(rng));

  // CPU reference, serial.
  std::vector<T> cols(grad_cols.size()), grad_in(in.size(), T(0)), grad_off(off.size()),
      grad_mask(mask.size());
  zsm::im2col_forward_cpu(d, in.data(), off.data(), mask.data(), cols.data(), 0, d.pixels());
  for (int64_t b = 0; b < d.B; ++b)
    zsm::im2col_backward_cpu(d, in.data(), off.data(), mask.data(), grad_cols.data(), b, 0,
                             d.Ho * d.Wo, grad_in.data() + b * d.H * d.W * d.C, grad_off.data(),
                             grad_mask.data());

  DeviceBuffer<T> d_in(in), d_off(off), d_mask(mask), d_gcols(grad_cols), d_cols(cols),
      d_gin(grad_in), d_goff(grad_off), d_gmask(grad_mask);
  int err = zsm::deform_im2col_forward_gpu<T>(nullptr, d, d_in.ptr, d_off.ptr, d_mask.ptr,
                                              d_cols.ptr);
  if (!err)
    err = zsm::deform_im2col_backward_gpu<T>(nullptr, d, d_in.ptr, d_off.ptr, d_mask.ptr,
                                             d_gcols.ptr, d_gin.ptr, d_goff.ptr, d_gmask.ptr);
  if (err) {
    std::printf("launch failed: %s\n", zsm::gpu_error_string(err));
    return false;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  const double e[4] = {rel_err(d_cols.get(), cols), rel_err(d_gin.get(), grad_in),
                       rel_err(d_goff.get(), grad_off), rel_err(d_gmask.get(), grad_mask)};
  const bool ok = *std::max_element(e, e + 4) <= tol;
  std::printf("%s %-6s B%ld H%ld W%ld C%ld dg%d k%dx%d s%d,%d p%d,%d d%d,%d off*%.0f: columns %.1e "
              "grad_input %.1e grad_offsets %.1e grad_mask %.1e\n",
              ok ? "ok  " : "FAIL", sizeof(T) == 4 ? "float" : "double", long(d.B), long(d.H),
              long(d.W), long(d.C), d.dg, d.kh, d.kw, d.sh, d.sw, d.ph, d.pw, d.dh, d.dw,
              offset_scale, e[0], e[1], e[2], e[3]);
  return ok;
}

zsm::DeformDims dims(int64_t B, int64_t H, int64_t W, int64_t C, int dg, int kh, int kw, int s,
                     int p, int dil) {
  const int64_t Ho = (H + 2 * p - dil * (kh - 1) - 1) / s + 1;
  const int64_t Wo = (W + 2 * p - dil * (kw - 1) - 1) / s + 1;
  return {B, H, W, C, Ho, Wo, kh, kw, s, s, p, p, dil, dil, dg};
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  const zsm::DeformDims cases[] = {
      dims(2, 9, 13, 16, 4, 3, 3, 1, 1, 1),    // the golden modulated case
      dims(1, 11, 10, 12, 2, 3, 3, 2, 1, 2),   // strided, dilated
      dims(3, 5, 6, 4, 1, 1, 1, 1, 0, 1),      // 1x1
      dims(2, 17, 23, 24, 3, 3, 2, 1, 2, 1),   // odd sizes, non-square kernel
      dims(4, 64, 112, 64, 8, 3, 3, 1, 1, 1),  // the benchmark size
  };
  const double scales[] = {2.0, 1.5, 1.0, 20.0, 3.0};
  bool ok = true;
  for (int i = 0; i < 5; ++i) {
    ok &= run_case<float>(cases[i], scales[i], 100 + i, 1e-4);
    ok &= run_case<double>(cases[i], scales[i], 200 + i, 1e-10);
  }
  std::printf(ok ? "all cases match\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
