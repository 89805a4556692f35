// Launches the CUDA kernels of deform_im2col_gpu.cu.cc through the CUDA driver API, from GPU
// images (cubins and PTX, compiled by NVRTC or nvcc, see zsm_tf/ops/custom_op.py) embedded in the
// op library by a generated gpu_images.cc. No CUDA header, no CUDA library linked: the dozen
// driver functions used are declared here and taken from libcuda.so.1 (the NVIDIA driver) with
// dlopen on first use, as PyTorch's LazyNVRTC and Triton do. No TensorFlow here either: errors
// are returned as strings (empty = success) and the op turns them into op errors.
//
// Per CUDA context (taken from the op's stream, made current around loading and every launch):
// the image for the device is chosen once (a cubin of the same major and the highest minor <= the
// device's, else the newest PTX not above it), loaded with cuModuleLoadData, and its kernels looked
// up by name. A PTX image needs a driver at least as new as the compiler that made it: a load
// failing for that says so.
#pragma once

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "deform_im2col.h"
#include "deform_im2col_gpu.h"

namespace zsm_cu {

// --- the CUDA driver API subset used (declarations of cuda.h, CUDA 12) ---
typedef int CUresult;  // CUDA_SUCCESS = 0
typedef int CUdevice;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef struct CUstream_st* CUstream;
typedef unsigned long long CUdeviceptr;
constexpr int kAttrCcMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrCcMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
constexpr CUresult kErrorUnsupportedPtxVersion = 222;  // CUDA_ERROR_UNSUPPORTED_PTX_VERSION

struct Driver {
  void* handle = nullptr;
  std::string error;  // why the driver cannot be used (empty when it can)
  int version = 0;    // cuDriverGetVersion, e.g. 12040
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*cuGetErrorName)(CUresult, const char**) = nullptr;
  CUresult (*cuStreamGetCtx)(CUstream, CUcontext*) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext*) = nullptr;
  CUresult (*cuCtxPushCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxPopCurrent)(CUcontext*) = nullptr;
  CUresult (*cuCtxGetDevice)(CUdevice*) = nullptr;
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice) = nullptr;
  CUresult (*cuModuleLoadData)(CUmodule*, const void*) = nullptr;
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream) = nullptr;
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void**, void**) = nullptr;

  // "name (code): message" of a driver error.
  std::string Message(CUresult r) const {
    const char *name = nullptr, *text = nullptr;
    if (cuGetErrorName) cuGetErrorName(r, &name);
    if (cuGetErrorString) cuGetErrorString(r, &text);
    return std::string(name ? name : "CUDA error") + " (" + std::to_string(r) + "): " +
           (text ? text : "unknown");
  }
};

// The driver, loaded once (thread-safe); driver().error says why it is unusable.
inline const Driver& driver() {
  static const Driver d = [] {
    Driver d;
    d.handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (d.handle == nullptr) {
      const char* e = dlerror();
      d.error = std::string("cannot load the CUDA driver libcuda.so.1: ") + (e ? e : "?");
      return d;
    }
    std::string missing;
    auto sym = [&](auto* fn, const char* name) {
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(d.handle, name));
      if (*fn == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
    };
    sym(&d.cuInit, "cuInit");
    sym(&d.cuDriverGetVersion, "cuDriverGetVersion");
    sym(&d.cuGetErrorString, "cuGetErrorString");
    sym(&d.cuGetErrorName, "cuGetErrorName");
    sym(&d.cuStreamGetCtx, "cuStreamGetCtx");
    sym(&d.cuCtxGetCurrent, "cuCtxGetCurrent");
    sym(&d.cuCtxPushCurrent, "cuCtxPushCurrent_v2");
    sym(&d.cuCtxPopCurrent, "cuCtxPopCurrent_v2");
    sym(&d.cuCtxGetDevice, "cuCtxGetDevice");
    sym(&d.cuDeviceGetAttribute, "cuDeviceGetAttribute");
    sym(&d.cuModuleLoadData, "cuModuleLoadData");
    sym(&d.cuModuleGetFunction, "cuModuleGetFunction");
    sym(&d.cuMemsetD8Async, "cuMemsetD8Async");
    sym(&d.cuLaunchKernel, "cuLaunchKernel");
    if (!missing.empty()) {
      d.error = "libcuda.so.1 lacks " + missing + " (NVIDIA driver too old)";
      return d;
    }
    CUresult r = d.cuInit(0);
    if (r == 0) r = d.cuDriverGetVersion(&d.version);
    if (r != 0) d.error = "CUDA driver initialisation failed: " + d.Message(r);
    return d;
  }();
  return d;
}

// --- the embedded images (defined by the generated gpu_images.cc) ---
struct GpuImage {
  const char* target;  // "sm_80" (cubin) or "compute_90" (PTX)
  int sm;              // 80, 90, ...
  int ptx;             // 1: PTX text (NUL-terminated), 0: cubin
  const unsigned char* data;
  size_t size;
};
extern const GpuImage kImages[];
extern const int kImageCount;
extern const char kCompiler[];     // "nvrtc 12.9" / "nvcc 12.5"
extern const int kCompilerVersion;  // 12090: a PTX image needs cuDriverGetVersion() >= this

// The image for a device of compute capability major.minor: the cubin of the same major with the
// highest minor <= minor, else the PTX of the highest SM <= the device's; -1 when none fits.
inline int ChooseImage(const GpuImage* images, int n, int major, int minor) {
  int best = -1;
  for (int i = 0; i < n; ++i)
    if (!images[i].ptx && images[i].sm / 10 == major && images[i].sm % 10 <= minor &&
        (best < 0 || images[i].sm > images[best].sm))
      best = i;
  if (best >= 0) return best;
  for (int i = 0; i < n; ++i)
    if (images[i].ptx && images[i].sm <= major * 10 + minor &&
        (best < 0 || images[i].sm > images[best].sm))
      best = i;
  return best;
}

// --- the kernels: names (as in the images) and the parameters passed to each ---
enum Kernel { kForwardF32, kGradInputF32, kGradCoordF32, kForwardF64, kGradInputF64,
              kGradCoordF64, kNumKernels };
inline const char* const kKernelNames[kNumKernels] = {
    "zsm_im2col_forward_f32", "zsm_im2col_grad_input_f32", "zsm_im2col_grad_coord_f32",
    "zsm_im2col_forward_f64", "zsm_im2col_grad_input_f64", "zsm_im2col_grad_coord_f64"};

// What each launch passes, in the kernel's parameter order (cuLaunchKernel checks nothing: these
// sizes are compared with the PTX's .param sizes by tests/test_nvrtc.py).
template <typename T>
using ForwardParams = std::tuple<zsm::DeformDims, const T*, const T*, const T*, T*>;
template <typename T>
using GradInputParams = std::tuple<zsm::DeformDims, const T*, const T*, const T*, T*>;
template <typename T>
using GradCoordParams =
    std::tuple<zsm::DeformDims, const T*, const T*, const T*, const T*, T*, T*>;

template <typename Tuple, size_t... I>
std::string ParamSizes(std::index_sequence<I...>) {
  std::string s;
  ((s += (I ? "," : "") + std::to_string(sizeof(std::tuple_element_t<I, Tuple>)) + ":" +
         std::to_string(alignof(std::tuple_element_t<I, Tuple>))),
   ...);
  return s;
}
template <typename Tuple>
std::string ParamSizes() {
  return ParamSizes<Tuple>(std::make_index_sequence<std::tuple_size_v<Tuple>>());
}

// "name=size:align,size:align,...;" for every kernel, from the tuples the launches pass.
inline std::string KernelParamSizes() {
  const std::string sizes[kNumKernels] = {
      ParamSizes<ForwardParams<float>>(),   ParamSizes<GradInputParams<float>>(),
      ParamSizes<GradCoordParams<float>>(), ParamSizes<ForwardParams<double>>(),
      ParamSizes<GradInputParams<double>>(), ParamSizes<GradCoordParams<double>>()};
  std::string s;
  for (int k = 0; k < kNumKernels; ++k) s += std::string(kKernelNames[k]) + "=" + sizes[k] + ";";
  return s;
}

// --- modules: one per CUDA context ---
struct Module {
  CUcontext ctx = nullptr;
  CUmodule module = nullptr;
  CUfunction fn[kNumKernels] = {};
  int image = -1;
  std::string error;    // set when the module cannot be used in this context
  std::string warning;  // set once, for the caller to log (PTX on an older driver)
};

// The current context while alive: pushes ctx, pops it on destruction.
class ScopedContext {
 public:
  ScopedContext(const Driver& d, CUcontext ctx) : d_(d) { ok_ = d.cuCtxPushCurrent(ctx) == 0; }
  ~ScopedContext() {
    CUcontext unused;
    if (ok_) d_.cuCtxPopCurrent(&unused);
  }
  bool ok() const { return ok_; }

 private:
  const Driver& d_;
  bool ok_;
};

inline std::string LoadModule(const Driver& d, Module* m) {
  CUdevice dev;
  int major = 0, minor = 0;
  CUresult r = d.cuCtxGetDevice(&dev);
  if (r == 0) r = d.cuDeviceGetAttribute(&major, kAttrCcMajor, dev);
  if (r == 0) r = d.cuDeviceGetAttribute(&minor, kAttrCcMinor, dev);
  if (r != 0) return "cannot query the GPU: " + d.Message(r);
  std::string targets;
  for (int i = 0; i < kImageCount; ++i) targets += std::string(i ? ", " : "") + kImages[i].target;
  m->image = ChooseImage(kImages, kImageCount, major, minor);
  const std::string gpu = "sm_" + std::to_string(major * 10 + minor);
  if (m->image < 0)
    return "no GPU image fits this " + gpu + " GPU (built for " + targets +
           "): rebuild the op on this machine (ZSM_TF_CUDA_ARCH=" + gpu + ")";
  const GpuImage& im = kImages[m->image];
  const bool old_driver = im.ptx && d.version < kCompilerVersion;
  const std::string driver_v = std::to_string(d.version / 1000) + "." +
                               std::to_string(d.version % 1000 / 10);
  if (old_driver)
    m->warning = "zsm_tf: this " + gpu + " GPU has no cubin (built for " + targets +
                 ") and runs the " + im.target + " PTX of " + kCompiler + ", newer than the "
                 "CUDA driver (" + driver_v + "): loading may fail; update the NVIDIA driver or "
                 "rebuild with ZSM_TF_CUDA_ARCH=" + gpu;
  r = d.cuModuleLoadData(&m->module, im.data);
  if (r != 0) {
    std::string e = "loading the " + std::string(im.target) + " image (" + kCompiler + ") on this " +
                    gpu + " GPU failed: " + d.Message(r);
    if (r == kErrorUnsupportedPtxVersion || old_driver)
      e += "; the CUDA driver (" + driver_v + ") is older than " + kCompiler +
           ": update the NVIDIA driver or rebuild with ZSM_TF_CUDA_ARCH=" + gpu;
    return e;
  }
  for (int k = 0; k < kNumKernels; ++k) {
    r = d.cuModuleGetFunction(&m->fn[k], m->module, kKernelNames[k]);
    if (r != 0) return std::string("kernel ") + kKernelNames[k] + " not found: " + d.Message(r);
  }
  return "";
}

// The module of stream's context (loading it on first use) with that context made current by
// *scope; "" on success, else why not.
inline std::string Enter(CUstream stream, const Module** out, std::unique_ptr<ScopedContext>* scope,
                         std::string* warning) {
  const Driver& d = driver();
  if (!d.error.empty()) return d.error;
  CUcontext ctx = nullptr;
  CUresult r = d.cuStreamGetCtx(stream, &ctx);
  if (r != 0 || ctx == nullptr) r = d.cuCtxGetCurrent(&ctx);
  if (r != 0 || ctx == nullptr) return "no CUDA context for the op's stream: " + d.Message(r);
  scope->reset(new ScopedContext(d, ctx));
  if (!(*scope)->ok()) return "cannot make the op's CUDA context current";
  static std::mutex mu;
  // A few contexts at most, kept for the process lifetime (never destroyed: no exit-time races).
  static std::vector<Module*>* modules = new std::vector<Module*>;
  std::lock_guard<std::mutex> lock(mu);
  for (const Module* m : *modules)
    if (m->ctx == ctx) {
      *out = m;
      return m->error;
    }
  Module* m = new Module;
  m->ctx = ctx;
  m->error = LoadModule(d, m);
  *warning = m->warning;
  modules->push_back(m);
  *out = m;
  return m->error;
}

template <typename Tuple>
std::string Launch(const Module& m, Kernel k, int64_t n, CUstream stream, Tuple params) {
  const Driver& d = driver();
  const CUresult r = std::apply(
      [&](auto&... p) {
        void* args[] = {static_cast<void*>(&p)...};
        return d.cuLaunchKernel(m.fn[k], zsm::blocks_for(n), 1, 1, zsm::kThreads, 1, 1, 0, stream,
                                args, nullptr);
      },
      params);
  return r == 0 ? "" : std::string("launching ") + kKernelNames[k] + ": " + d.Message(r);
}

template <typename T>
constexpr int kDtypeOffset = sizeof(T) == 4 ? 0 : 3;  // f32 kernels first, then f64

// columns from input, offsets, mask (device pointers) on stream; "" on success.
template <typename T>
std::string Forward(CUstream stream, const zsm::DeformDims& dims, const T* in, const T* off,
                    const T* mask, T* cols, std::string* warning) {
  const int64_t n = dims.pixels() * dims.K() * dims.C;
  if (n == 0) return "";
  const Module* m = nullptr;
  std::unique_ptr<ScopedContext> scope;
  std::string e = Enter(stream, &m, &scope, warning);
  if (!e.empty()) return e;
  return Launch(*m, Kernel(kForwardF32 + kDtypeOffset<T>), n, stream,
                ForwardParams<T>(dims, in, off, mask, cols));
}

// grad_in (overwritten), grad_off, grad_mask from grad_cols; "" on success.
template <typename T>
std::string Backward(CUstream stream, const zsm::DeformDims& dims, const T* in, const T* off,
                     const T* mask, const T* grad_cols, T* grad_in, T* grad_off, T* grad_mask,
                     std::string* warning) {
  const int64_t n_in = dims.B * dims.H * dims.W * dims.C;
  const int64_t n = dims.pixels() * dims.K() * dims.C, m = dims.pixels() * dims.dg * dims.K();
  if (n_in == 0 && m == 0) return "";  // nothing to write (pointers may be null)
  const Module* mod = nullptr;
  std::unique_ptr<ScopedContext> scope;
  std::string e = Enter(stream, &mod, &scope, warning);
  if (!e.empty()) return e;
  const Driver& d = driver();
  if (n_in > 0) {
    const CUresult r = d.cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(grad_in), 0,
                                         sizeof(T) * n_in, stream);
    if (r != 0) return "zeroing grad_input: " + d.Message(r);
  }
  if (n > 0 && n_in > 0)  // no input pixels: every sample is outside, grad_in is empty
    e = Launch(*mod, Kernel(kGradInputF32 + kDtypeOffset<T>), n, stream,
               GradInputParams<T>(dims, off, mask, grad_cols, grad_in));
  if (e.empty() && m > 0)
    e = Launch(*mod, Kernel(kGradCoordF32 + kDtypeOffset<T>), m, stream,
               GradCoordParams<T>(dims, in, off, mask, grad_cols, grad_off, grad_mask));
  return e;
}

}  // namespace zsm_cu
