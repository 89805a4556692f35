// A fake libcuda.so.1 for testing the op's driver-API launch path (gpu_launch.h) without a GPU:
// the driver functions gpu_launch.h takes with dlsym, backed by the CUDA kernels of
// deform_im2col_gpu.cu.cc compiled as host code through host_shim/cuda_runtime.h (a launch runs
// every thread of the grid serially on the CPU; "device" memory is host memory).
//
//   g++ -std=c++17 -shared -fPIC -fvisibility=hidden -x c++ -Ihost_shim -I. \
//       host_shim/fake_libcuda.cc deform_im2col_gpu.cu.cc -o DIR/libcuda.so.1
//
// It checks what a real driver checks, and a little more: the context made current around
// loading and every launch is the stream's (else CUDA_ERROR_INVALID_CONTEXT); a loaded cubin is a
// CUDA ELF (EM_CUDA) whose SM the device runs (same major, minor not above; else
// CUDA_ERROR_NO_BINARY_FOR_GPU); a PTX image needs the driver version FAKE_CUDA_DRIVER (default
// 12090; else CUDA_ERROR_UNSUPPORTED_PTX_VERSION); 256 threads per block. The kernels receive
// their parameters from cuLaunchKernel's void** exactly as the real driver does: each args[i] is
// read as the kernel's own i-th parameter type. FAKE_CUDA_CC (default 8.6) is the device's
// compute capability. fake_cuda_report() sums up what happened.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime.h"  // the host shim
#include "deform_im2col.h"

extern "C" {
void zsm_im2col_forward_f32(zsm::DeformDims, const float*, const float*, const float*, float*);
void zsm_im2col_grad_input_f32(zsm::DeformDims, const float*, const float*, const float*, float*);
void zsm_im2col_grad_coord_f32(zsm::DeformDims, const float*, const float*, const float*,
                               const float*, float*, float*);
void zsm_im2col_forward_f64(zsm::DeformDims, const double*, const double*, const double*,
                            double*);
void zsm_im2col_grad_input_f64(zsm::DeformDims, const double*, const double*, const double*,
                               double*);
void zsm_im2col_grad_coord_f64(zsm::DeformDims, const double*, const double*, const double*,
                               const double*, double*, double*);
}

#define FAKE_API extern "C" __attribute__((visibility("default")))

namespace {

typedef int CUresult;
constexpr CUresult kOk = 0, kInvalidValue = 1, kInvalidImage = 200, kInvalidContext = 201,
                   kNoBinary = 209, kUnsupportedPtx = 222, kNotFound = 500,
                   kInvalidHandle = 400, kIllegalAddress = 700;

struct Ctx {
  int tag;
} g_ctx{42};
thread_local std::vector<Ctx*> g_stack;  // this thread's context stack

int g_major = 8, g_minor = 6, g_driver = 12090;
unsigned g_max_blocks = 0;
CUresult g_fail_next_launch = kOk;
long g_loads = 0, g_launches = 0, g_memsets = 0, g_pushes = 0, g_pops = 0, g_bad_ctx = 0;
std::string g_loaded;  // "cubin sm_80" / "ptx"

struct Init {
  Init() {
    if (const char* cc = std::getenv("FAKE_CUDA_CC")) std::sscanf(cc, "%d.%d", &g_major, &g_minor);
    if (const char* v = std::getenv("FAKE_CUDA_DRIVER")) g_driver = std::atoi(v);
  }
} g_init;

bool current_ok() {
  if (!g_stack.empty() && g_stack.back() == &g_ctx) return true;
  ++g_bad_ctx;
  return false;
}

// Runs kernel k on a grid, its parameters read from args as the real driver does.
template <typename... P, size_t... I>
void run(void (*k)(P...), unsigned grid, unsigned block, void** args, std::index_sequence<I...>) {
  zsm_shim::max_blocks = g_max_blocks;
  zsm_shim::launch(k, grid, block)(
      *static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(args[I])...);
}
template <typename... P>
void run(void (*k)(P...), unsigned grid, unsigned block, void** args) {
  run(k, grid, block, args, std::index_sequence_for<P...>());
}

struct Function {
  const char* name;
  void (*launch)(unsigned, unsigned, void**);
};
#define FAKE_FN(name) \
  {#name, [](unsigned g, unsigned b, void** a) { run(name, g, b, a); }}
const Function kFunctions[] = {FAKE_FN(zsm_im2col_forward_f32), FAKE_FN(zsm_im2col_grad_input_f32),
                               FAKE_FN(zsm_im2col_grad_coord_f32), FAKE_FN(zsm_im2col_forward_f64),
                               FAKE_FN(zsm_im2col_grad_input_f64),
                               FAKE_FN(zsm_im2col_grad_coord_f64)};

}  // namespace

FAKE_API CUresult cuInit(unsigned) { return kOk; }
FAKE_API CUresult cuDriverGetVersion(int* v) {
  *v = g_driver;
  return kOk;
}
FAKE_API CUresult cuGetErrorName(CUresult r, const char** s) {
  switch (r) {
    case kOk: *s = "CUDA_SUCCESS"; return kOk;
    case kInvalidValue: *s = "CUDA_ERROR_INVALID_VALUE"; return kOk;
    case kInvalidImage: *s = "CUDA_ERROR_INVALID_IMAGE"; return kOk;
    case kInvalidContext: *s = "CUDA_ERROR_INVALID_CONTEXT"; return kOk;
    case kNoBinary: *s = "CUDA_ERROR_NO_BINARY_FOR_GPU"; return kOk;
    case kUnsupportedPtx: *s = "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"; return kOk;
    case kInvalidHandle: *s = "CUDA_ERROR_INVALID_HANDLE"; return kOk;
    case kNotFound: *s = "CUDA_ERROR_NOT_FOUND"; return kOk;
    case kIllegalAddress: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; return kOk;
  }
  *s = nullptr;
  return kInvalidValue;
}
FAKE_API CUresult cuGetErrorString(CUresult r, const char** s) {
  switch (r) {
    case kUnsupportedPtx: *s = "the provided PTX was compiled with an unsupported toolchain."; return kOk;
    case kIllegalAddress: *s = "an illegal memory access was encountered"; return kOk;
    case kNoBinary: *s = "no kernel image is available for execution on the device"; return kOk;
    case kInvalidContext: *s = "invalid device context"; return kOk;
  }
  *s = "fake driver error";
  return kOk;
}
FAKE_API CUresult cuStreamGetCtx(void* stream, Ctx** ctx) {
  if (stream == nullptr) return kInvalidHandle;
  *ctx = &g_ctx;
  return kOk;
}
FAKE_API CUresult cuCtxGetCurrent(Ctx** ctx) {
  *ctx = g_stack.empty() ? nullptr : g_stack.back();
  return kOk;
}
FAKE_API CUresult cuCtxPushCurrent_v2(Ctx* ctx) {
  if (ctx != &g_ctx) return kInvalidContext;
  g_stack.push_back(ctx);
  ++g_pushes;
  return kOk;
}
FAKE_API CUresult cuCtxPopCurrent_v2(Ctx** ctx) {
  if (g_stack.empty()) return kInvalidContext;
  *ctx = g_stack.back();
  g_stack.pop_back();
  ++g_pops;
  return kOk;
}
FAKE_API CUresult cuCtxGetDevice(int* dev) {
  if (!current_ok()) return kInvalidContext;
  *dev = 0;
  return kOk;
}
FAKE_API CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
  if (dev != 0) return kInvalidValue;
  if (attr == 75) *v = g_major;
  else if (attr == 76) *v = g_minor;
  else return kInvalidValue;
  return kOk;
}
FAKE_API CUresult cuModuleLoadData(void** module, const void* image) {
  if (!current_ok()) return kInvalidContext;
  const unsigned char* p = static_cast<const unsigned char*>(image);
  ++g_loads;
  if (std::memcmp(p, "\x7f" "ELF", 4) == 0) {
    unsigned short machine;
    unsigned flags;
    std::memcpy(&machine, p + 18, 2);
    std::memcpy(&flags, p + 48, 4);
    if (machine != 190) return kInvalidImage;
    const int sm = p[8] >= 8 ? (flags >> 8) & 0xff : flags & 0xff;  // EI_ABIVERSION 8: sm_100+
    if (sm / 10 != g_major || sm % 10 > g_minor) return kNoBinary;
    g_loaded = "cubin sm_" + std::to_string(sm);
  } else {
    if (std::strstr(reinterpret_cast<const char*>(p), ".version") == nullptr) return kInvalidImage;
    if (g_driver < 12090) return kUnsupportedPtx;
    g_loaded = "ptx";
  }
  *module = &g_ctx;
  return kOk;
}
FAKE_API CUresult cuModuleGetFunction(const Function** fn, void* module, const char* name) {
  if (module != &g_ctx) return kInvalidHandle;
  for (const Function& f : kFunctions)
    if (std::strcmp(f.name, name) == 0) {
      *fn = &f;
      return kOk;
    }
  return kNotFound;
}
FAKE_API CUresult cuMemsetD8Async(unsigned long long ptr, unsigned char v, size_t n, void*) {
  if (!current_ok()) return kInvalidContext;
  if (ptr == 0) return kInvalidValue;
  std::memset(reinterpret_cast<void*>(ptr), v, n);
  ++g_memsets;
  return kOk;
}
FAKE_API CUresult cuLaunchKernel(const Function* f, unsigned gx, unsigned gy, unsigned gz,
                                 unsigned bx, unsigned by, unsigned bz, unsigned shmem,
                                 void* stream, void** args, void** extra) {
  if (!current_ok()) return kInvalidContext;
  if (f == nullptr || stream == nullptr || args == nullptr || extra != nullptr || gx == 0 ||
      gy != 1 || gz != 1 || bx != 256 || by != 1 || bz != 1 || shmem != 0)
    return kInvalidValue;
  if (g_fail_next_launch != kOk) {
    const CUresult r = g_fail_next_launch;
    g_fail_next_launch = kOk;
    return r;
  }
  f->launch(gx, bx, args);
  ++g_launches;
  return kOk;
}

// --- test controls ---
FAKE_API void fake_cuda_set_max_blocks(unsigned n) { g_max_blocks = n; }
FAKE_API void fake_cuda_fail_next_launch(int r) { g_fail_next_launch = r; }
FAKE_API const char* fake_cuda_report() {
  static std::string s;
  s = "fake driver: loaded " + (g_loaded.empty() ? std::string("nothing") : g_loaded) +
      " loads " + std::to_string(g_loads) + " launches " + std::to_string(g_launches) +
      " memsets " + std::to_string(g_memsets) + " pushes " + std::to_string(g_pushes) + " pops " +
      std::to_string(g_pops) + " bad_context " + std::to_string(g_bad_ctx) + " depth " +
      std::to_string(g_stack.size());
  return s.c_str();
}
