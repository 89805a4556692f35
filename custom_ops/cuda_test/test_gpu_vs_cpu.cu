// Standalone check (no TensorFlow) that the CUDA kernels of deform_im2col_gpu.cu.cc match the CPU
// kernels of deform_im2col_cpu.h: forward, input / offset / mask gradients, float and double, over
// the cases of main() (batch > 1, several deformable groups, asymmetric stride / padding /
// dilation, zero, integer, half-integer and far-outside offsets, empty tensors).
//
// Every output buffer is filled with NaN (all bits set) before the kernels run, and a NaN
// anywhere counts as a mismatch, so a kernel that leaves an element unwritten fails. The kernels
// run on a non-default (non-blocking) stream, twice: the forward columns and the offset / mask
// gradients must be bit-identical between the runs (the input gradient uses atomicAdd, whose
// order may change the float rounding, so it is compared within the tolerance only).
//
//   make -C custom_ops cuda-test      (nvcc; prints SKIP and exits 0 without a CUDA device)
//   tests/test_cuda_kernels_host.py   (the same file compiled by g++ against host_shim/, no GPU)
//   tests/test_nvrtc.py               (-DZSM_DRIVER_LAUNCH: the kernels launched as the TensorFlow
//                                      op launches them, through gpu_launch.h and the driver API,
//                                      from NVRTC's images; with g++ against host_shim/ and
//                                      host_shim/fake_libcuda.cc as libcuda.so.1, no GPU)
//
// Exit status 0 when all cases match, else 1. Lines: "ok|FAIL <type> <case> ... columns <err>
// grad_input <err> grad_offsets <err> grad_mask <err> repeat <identical|DIFFERENT>".
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "deform_im2col_cpu.h"
#include "deform_im2col_gpu.h"
#ifdef ZSM_DRIVER_LAUNCH
#include <dlfcn.h>

#include <string>

#include "gpu_launch.h"
#endif

namespace {

#define CHECK_CUDA(expr)                                                              \
  do {                                                                                \
    cudaError_t e_ = (expr);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

// A device buffer; an empty one has a null pointer, as TensorFlow gives for empty tensors.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t size) : n(size) {
    if (n) CHECK_CUDA(cudaMalloc(&ptr, n * sizeof(T)));
  }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (n) CHECK_CUDA(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  void fill_nan(cudaStream_t s) {  // all bits set: a NaN in float and in double
    if (n) CHECK_CUDA(cudaMemsetAsync(ptr, 0xFF, n * sizeof(T), s));
  }
  std::vector<T> get() const {
    std::vector<T> host(n);
    if (n) CHECK_CUDA(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

// max |a - b| / (1 + max |b|); infinite when a NaN appears or the sizes differ.
template <typename T>
double rel_err(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = double(a[i]), y = double(b[i]);
    if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::fabs(x - y));
    scale = std::max(scale, std::fabs(y));
  }
  return diff / (1 + scale);
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || !std::memcmp(a.data(), b.data(), a.size() * sizeof(T)));
}

enum class Offsets { kRandom, kZero, kInteger, kHalfInteger };

struct Case {
  const char* name;
  zsm::DeformDims d;
  Offsets kind;
  double scale;  // of random offsets (normal * scale) or the range of integer ones
  bool big;      // skipped by the host shim (serial execution)
};

template <typename T>
struct Outputs {
  std::vector<T> cols, grad_in, grad_off, grad_mask;
};

#ifdef ZSM_DRIVER_LAUNCH
std::string driver_error;  // the last launch error of the driver route

// A function of the fake libcuda.so.1 (host_shim/fake_libcuda.cc), null with a real driver.
void* fake(const char* name) {
  void* h = dlopen("libcuda.so.1", RTLD_NOW);
  return h ? dlsym(h, name) : nullptr;
}
void set_max_blocks(unsigned n) {
  if (auto f = reinterpret_cast<void (*)(unsigned)>(fake("fake_cuda_set_max_blocks"))) f(n);
}
zsm_cu::CUstream cu(cudaStream_t s) { return reinterpret_cast<zsm_cu::CUstream>(s); }
#endif

// One run of the GPU kernels on stream s, outputs NaN-filled first.
template <typename T>
Outputs<T> run_gpu(const zsm::DeformDims& d, cudaStream_t s, const DeviceBuffer<T>& in,
                   const DeviceBuffer<T>& off, const DeviceBuffer<T>& mask,
                   const DeviceBuffer<T>& grad_cols, int* err) {
  DeviceBuffer<T> cols(grad_cols.n), gin(in.n), goff(off.n), gmask(mask.n);
  cols.fill_nan(s);
  gin.fill_nan(s);
  goff.fill_nan(s);
  gmask.fill_nan(s);
#ifdef ZSM_DRIVER_LAUNCH  // as the TensorFlow op launches them (gpu_launch.h)
  std::string warning;
  driver_error = zsm_cu::Forward<T>(cu(s), d, in.ptr, off.ptr, mask.ptr, cols.ptr, &warning);
  if (driver_error.empty())
    driver_error = zsm_cu::Backward<T>(cu(s), d, in.ptr, off.ptr, mask.ptr, grad_cols.ptr,
                                       gin.ptr, goff.ptr, gmask.ptr, &warning);
  *err = driver_error.empty() ? 0 : 1;
#else
  *err = zsm::deform_im2col_forward_gpu<T>(s, d, in.ptr, off.ptr, mask.ptr, cols.ptr);
  if (!*err)
    *err = zsm::deform_im2col_backward_gpu<T>(s, d, in.ptr, off.ptr, mask.ptr, grad_cols.ptr,
                                              gin.ptr, goff.ptr, gmask.ptr);
#endif
  CHECK_CUDA(cudaStreamSynchronize(s));
  return {cols.get(), gin.get(), goff.get(), gmask.get()};
}

template <typename T>
bool run_case(const Case& c, unsigned seed, double tol, cudaStream_t s) {
  const zsm::DeformDims& d = c.d;
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform;
  std::uniform_int_distribution<int> integer(-int(c.scale), int(c.scale));
  const int K = d.K();
  std::vector<T> in(d.B * d.H * d.W * d.C), off(d.pixels() * 2 * d.dg * K),
      mask(d.pixels() * d.dg * K), grad_cols(d.pixels() * K * d.C);
  for (auto& v : in) v = T(normal(rng));
  for (auto& v : off) {
    switch (c.kind) {
      case Offsets::kRandom: v = T(normal(rng) * c.scale); break;
      case Offsets::kZero: v = T(0); break;
      case Offsets::kInteger: v = T(integer(rng)); break;
      case Offsets::kHalfInteger: v = T(integer(rng) + 0.5); break;
    }
  }
  for (auto& v : mask) v = T(uniform(rng));
  for (auto& v : grad_cols) v = T(normal(rng));

  // CPU reference, serial.
  Outputs<T> ref{std::vector<T>(grad_cols.size()), std::vector<T>(in.size(), T(0)),
                 std::vector<T>(off.size()), std::vector<T>(mask.size())};
  zsm::im2col_forward_cpu(d, in.data(), off.data(), mask.data(), ref.cols.data(), 0, d.pixels());
  for (int64_t b = 0; b < d.B; ++b)
    zsm::im2col_backward_cpu(d, in.data(), off.data(), mask.data(), grad_cols.data(), b, 0,
                             d.Ho * d.Wo, ref.grad_in.data() + b * d.H * d.W * d.C,
                             ref.grad_off.data(), ref.grad_mask.data());

  const DeviceBuffer<T> d_in(in), d_off(off), d_mask(mask), d_gcols(grad_cols);
  CHECK_CUDA(cudaDeviceSynchronize());  // uploads done before the non-blocking stream starts
  int err = 0, err2 = 0;
  const Outputs<T> got = run_gpu(d, s, d_in, d_off, d_mask, d_gcols, &err);
#if defined(ZSM_DRIVER_LAUNCH)
  set_max_blocks(3);  // the fake driver's grid cap
#elif defined(ZSM_HOST_SHIM)
  zsm_shim::max_blocks = 3;  // the second run on a small grid: every grid-stride loop loops
#endif
  const Outputs<T> again = run_gpu(d, s, d_in, d_off, d_mask, d_gcols, &err2);
#if defined(ZSM_DRIVER_LAUNCH)
  set_max_blocks(0);
#elif defined(ZSM_HOST_SHIM)
  zsm_shim::max_blocks = 0;
#endif
  if (err || err2) {
#ifdef ZSM_DRIVER_LAUNCH
    const char* why = driver_error.c_str();
#else
    const char* why = zsm::gpu_error_string(err ? err : err2);
#endif
    std::printf("FAIL %-6s %s: launch failed: %s\n", sizeof(T) == 4 ? "float" : "double", c.name,
                why);
    return false;
  }
  const double e[4] = {rel_err(got.cols, ref.cols), rel_err(got.grad_in, ref.grad_in),
                       rel_err(got.grad_off, ref.grad_off), rel_err(got.grad_mask, ref.grad_mask)};
  const bool repeat = same_bits(got.cols, again.cols) && same_bits(got.grad_off, again.grad_off) &&
                      same_bits(got.grad_mask, again.grad_mask) &&
                      rel_err(again.grad_in, ref.grad_in) <= tol;
  const bool ok = *std::max_element(e, e + 4) <= tol && repeat;
  std::printf("%s %-6s %s B%ld H%ld W%ld C%ld Ho%ld Wo%ld dg%d k%dx%d s%d,%d p%d,%d d%d,%d: "
              "columns %.1e grad_input %.1e grad_offsets %.1e grad_mask %.1e repeat %s\n",
              ok ? "ok  " : "FAIL", sizeof(T) == 4 ? "float" : "double", c.name, long(d.B),
              long(d.H), long(d.W), long(d.C), long(d.Ho), long(d.Wo), d.dg, d.kh, d.kw, d.sh,
              d.sw, d.ph, d.pw, d.dh, d.dw, e[0], e[1], e[2], e[3],
              repeat ? "identical" : "DIFFERENT");
  return ok;
}

// Dims with Ho, Wo from the convolution formula (0 when the window does not fit).
zsm::DeformDims dims(int64_t B, int64_t H, int64_t W, int64_t C, int dg, int kh, int kw, int sh,
                     int sw, int ph, int pw, int dh, int dw) {
  const int64_t Ho = std::max<int64_t>(0, (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1);
  const int64_t Wo = std::max<int64_t>(0, (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1);
  const bool fits = H + 2 * ph >= dh * (kh - 1) + 1 && W + 2 * pw >= dw * (kw - 1) + 1;
  return {B, H, W, C, fits ? Ho : 0, fits ? Wo : 0, kh, kw, sh, sw, ph, pw, dh, dw, dg};
}

}  // namespace

#ifdef ZSM_DRIVER_LAUNCH
// "--load": one small forward through the driver route; prints its error and warning (the fake
// driver's FAKE_CUDA_CC / FAKE_CUDA_DRIVER pick the image and whether it loads).
// "--launch-error": the same with the fake driver failing the launch.
int driver_only(bool launch_error) {
  if (launch_error)
    if (auto f = reinterpret_cast<void (*)(int)>(fake("fake_cuda_fail_next_launch"))) f(700);
  const zsm::DeformDims d = dims(1, 4, 4, 2, 1, 3, 3, 1, 1, 1, 1, 1, 1);
  const std::vector<float> in(32, 1.f), off(16 * 18, 0.f), mask(16 * 9, 1.f);
  const DeviceBuffer<float> d_in(in), d_off(off), d_mask(mask);
  DeviceBuffer<float> cols(16 * 9 * 2);
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::string warning;
  const std::string e = zsm_cu::Forward<float>(cu(s), d, d_in.ptr, d_off.ptr, d_mask.ptr,
                                               cols.ptr, &warning);
  std::printf("error: %s\nwarning: %s\n", e.c_str(), warning.c_str());
  if (auto f = reinterpret_cast<const char* (*)()>(fake("fake_cuda_report"))) std::printf("%s\n", f());
  return e.empty() ? 0 : 3;
}
#endif

int main(int argc, char** argv) {
#ifdef ZSM_DRIVER_LAUNCH
  if (argc > 1) return driver_only(std::strcmp(argv[1], "--launch-error") == 0);
#else
  (void)argc;
  (void)argv;
#endif
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  using O = Offsets;
  const Case cases[] = {
      {"golden-modulated", dims(2, 9, 13, 16, 4, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 2.0, false},
      {"strided-dilated", dims(1, 11, 10, 12, 2, 3, 3, 2, 2, 1, 1, 2, 2), O::kRandom, 1.5, false},
      {"1x1", dims(3, 5, 6, 4, 1, 1, 1, 1, 1, 0, 0, 1, 1), O::kRandom, 1.0, false},
      {"asymmetric-a", dims(2, 17, 23, 24, 3, 3, 2, 2, 1, 0, 2, 1, 2), O::kRandom, 1.0, false},
      {"asymmetric-b", dims(2, 12, 9, 8, 2, 2, 3, 1, 3, 2, 1, 2, 1), O::kRandom, 2.0, false},
      {"zero-offsets", dims(2, 8, 7, 6, 3, 3, 3, 1, 1, 1, 1, 1, 1), O::kZero, 0.0, false},
      {"integer-offsets", dims(2, 8, 9, 8, 2, 3, 3, 1, 1, 1, 1, 1, 1), O::kInteger, 3.0, false},
      {"half-integer", dims(2, 8, 9, 8, 2, 3, 3, 1, 1, 1, 1, 1, 1), O::kHalfInteger, 3.0, false},
      {"far-outside", dims(1, 6, 7, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 20.0, false},
      {"very-far", dims(2, 5, 5, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 1e4, false},
      {"group-width-32", dims(2, 6, 5, 64, 2, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 2.0, false},
      {"one-pixel", dims(1, 1, 1, 2, 1, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 0.7, false},
      {"empty-batch", dims(0, 5, 6, 8, 2, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 1.0, false},
      {"empty-channels", dims(2, 5, 6, 0, 1, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 1.0, false},
      {"empty-output", dims(2, 1, 1, 4, 1, 3, 3, 1, 1, 0, 0, 1, 1), O::kRandom, 1.0, false},
      {"empty-input", dims(1, 0, 0, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1), O::kRandom, 1.0, false},
      {"benchmark-size", dims(4, 64, 112, 64, 8, 3, 3, 1, 1, 1, 1, 1, 1), O::kRandom, 3.0, true},
  };
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  bool ok = true;
  int n = 0;
  for (const Case& c : cases) {
#ifdef ZSM_HOST_SHIM
    if (c.big) continue;
#endif
    ok &= run_case<float>(c, 100 + n, 1e-5, stream);
    ok &= run_case<double>(c, 200 + n, 1e-12, stream);
    ++n;
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
#ifdef ZSM_DRIVER_LAUNCH
  if (auto f = reinterpret_cast<const char* (*)()>(fake("fake_cuda_report"))) std::printf("%s\n", f());
#endif
  std::printf(ok ? "all %d cases match\n" : "MISMATCH (%d cases)\n", n);
  return ok ? 0 : 1;
}
