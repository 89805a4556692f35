// TensorFlow op of the Winograd 3x3 convolution (winograd_conv.h), CPU only, inference only:
//
//   ZsmTf>WinogradConv3x3(inputs: N tensors [B,H,W,C_i], kernel [3,3,C,K], bias [K])
//       -> output [B,H,W,K] = max(conv, negative_slope * conv), conv = 3x3 "same" conv + bias
//          of the inputs' channel concatenation (C = sum C_i; the concatenation is never made)
//
// attrs: tile (m: 2, 4 or 6), negative_slope (1: no activation, 0: ReLU, 0.1: LeakyReLU(0.1)),
// shuffle (r: the output pixel-shuffled as PyTorch's nn.PixelShuffle(r) does, written in place:
// [B, rH, rW, K/r^2], K a multiple of 8 r^2; 1: none).
// The op transforms the kernel itself (U = G g G^T), so it is one graph node, cheap to trace;
// each node keeps its last U with a copy of the kernel it came from and reuses it while the
// kernel's values are the same (a ConvLSTM step runs the same nodes with the same weights), so
// changed weights are always seen. There is no gradient (training uses the stock convolution) and no XLA or GPU kernel. Built into the same
// library as the deformable op (zsm_tf/ops/custom_op.py).
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#include "winograd_conv.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("ZsmTf>WinogradConv3x3")
    .Input("inputs: N * float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("output: float")
    .Attr("N: int >= 1")
    .Attr("tile: int = 2")
    .Attr("negative_slope: float = 1.0")
    .Attr("shuffle: int = 1")
    .SetShapeFn([](InferenceContext* c) {
      const int n = c->num_inputs() - 2;
      int r = 1;
      TF_RETURN_IF_ERROR(c->GetAttr("shuffle", &r));
      ShapeHandle in, bias;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &in));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(n + 1), 1, &bias));
      if (r == 1) {
        ShapeHandle out;
        TF_RETURN_IF_ERROR(c->ReplaceDim(in, 3, c->Dim(bias, 0), &out));
        c->set_output(0, out);
        return absl::OkStatus();
      }
      DimensionHandle h, w, k;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(in, 1), r, &h));
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(in, 2), r, &w));
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(bias, 0), r * r, /*evenly_divisible=*/true, &k));
      c->set_output(0, c->MakeShape({c->Dim(in, 0), h, w, k}));
      return absl::OkStatus();
    })
    .Doc("3x3 stride-1 'same' convolution + bias (+ leaky ReLU) by Winograd F(m x m, 3 x 3).");

class WinogradConv3x3Op : public OpKernel {
 public:
  explicit WinogradConv3x3Op(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("tile", &tile_));
    OP_REQUIRES_OK(c, c->GetAttr("negative_slope", &slope_));
    OP_REQUIRES_OK(c, c->GetAttr("shuffle", &shuffle_));
    OP_REQUIRES(c, shuffle_ >= 1 && shuffle_ <= 8,
                errors::InvalidArgument("shuffle must be in [1, 8], got ", shuffle_));
    OP_REQUIRES(c, tile_ == 2 || tile_ == 4 || tile_ == 6,
                errors::InvalidArgument("tile must be 2, 4 or 6, got ", tile_));
    OP_REQUIRES(c, slope_ >= 0.f && slope_ <= 1.f,
                errors::InvalidArgument("negative_slope must be in [0, 1], got ", slope_));
  }

  void Compute(OpKernelContext* c) override {
    OpInputList xs;
    OP_REQUIRES_OK(c, c->input_list("inputs", &xs));
    const Tensor& x = xs[0];
    const Tensor& kernel = c->input(xs.size());
    const Tensor& bias = c->input(xs.size() + 1);
    const int a = tile_ + 2;
    std::vector<const float*> parts;
    std::vector<int64_t> part_channels;
    int64_t channels = 0;
    for (int i = 0; i < xs.size(); ++i) {
      const Tensor& xi = xs[i];
      OP_REQUIRES(c, xi.dims() == 4, errors::InvalidArgument("inputs must be [N, H, W, C]"));
      OP_REQUIRES(c, i == 0 || (xi.dim_size(0) == x.dim_size(0) && xi.dim_size(1) == x.dim_size(1)
                                && xi.dim_size(2) == x.dim_size(2)),
                  errors::InvalidArgument("inputs must share N, H, W: ", x.shape().DebugString(),
                                          " vs ", xi.shape().DebugString()));
      OP_REQUIRES(c, xi.dim_size(3) % 8 == 0,
                  errors::InvalidArgument("input channels must be a multiple of 8, got ",
                                          xi.dim_size(3)));
      parts.push_back(xi.flat<float>().data());
      part_channels.push_back(xi.dim_size(3));
      channels += xi.dim_size(3);
    }
    OP_REQUIRES(c, bias.dims() == 1 && bias.dim_size(0) > 0,
                errors::InvalidArgument("bias must be [K], got ", bias.shape().DebugString()));
    const int64_t filters = bias.dim_size(0);
    OP_REQUIRES(c, kernel.shape() == TensorShape({3, 3, channels, filters}),
                errors::InvalidArgument("kernel must be [3, 3, ", channels, ", ", filters,
                                        "], got ", kernel.shape().DebugString()));
    const int r = shuffle_;
    OP_REQUIRES(c, r == 1 || filters % (8 * r * r) == 0,
                errors::InvalidArgument("with shuffle ", r, " the filters must be a multiple of ",
                                        8 * r * r, ", got ", filters));
    zsm_winograd::Shape s{x.dim_size(0), x.dim_size(1), x.dim_size(2), channels, filters,
                          zsm_winograd::padded_outputs<zsm_winograd::Winograd<4>::kChunk>(filters)};
    Tensor* y = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(
                          0, TensorShape({s.n, s.h * r, s.w * r, s.k / (r * r)}), &y));
    // with a shuffle the op computes the outputs in the order (i r + j) K/r^2 + c, so that each
    // sub-pixel's channels are contiguous: out[k'] = kernel's output order[k'] = c r^2 + i r + j
    std::vector<int64_t> order(filters);
    const int64_t kr = filters / (r * r);
    for (int64_t k = 0; k < filters; ++k) order[k] = (k % kr) * r * r + k / kr;
    if (y->NumElements() == 0) return;
    const auto* w = c->device()->tensorflow_cpu_worker_threads();
    const float* gp = kernel.flat<float>().data();
    std::shared_ptr<const std::vector<float>> u;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const size_t n = static_cast<size_t>(kernel.NumElements());
      if (!u_ || g_.size() != n || std::memcmp(g_.data(), gp, n * sizeof(float)) != 0) {
        auto fresh = std::make_shared<std::vector<float>>(static_cast<size_t>(a * a) * s.c * s.kp);
        float* up = fresh->data();
        const float* g = gp;
        std::vector<float> permuted;
        if (r > 1) {   // the kernel's output channels in the op's order
          permuted.resize(n);
          for (int64_t i = 0; i < 9 * channels; ++i)
            for (int64_t k = 0; k < filters; ++k)
              permuted[i * filters + k] = gp[i * filters + order[k]];
          g = permuted.data();
        }
        WithTile(tile_, [&](auto m) { Transform<decltype(m)::value>(w, s, g, up); });
        g_.assign(gp, gp + n);
        u_ = std::move(fresh);
      }
      u = u_;
    }
    const float* bp = bias.flat<float>().data();
    std::vector<float> bias_permuted;
    if (r > 1) {
      bias_permuted.resize(filters);
      for (int64_t k = 0; k < filters; ++k) bias_permuted[k] = bp[order[k]];
      bp = bias_permuted.data();
    }
    float* yp = y->flat<float>().data();
    const int n_parts = static_cast<int>(parts.size());
    WithTile(tile_, [&](auto m) {
      Run<decltype(m)::value>(w, s, parts.data(), part_channels.data(), n_parts, u->data(), bp,
                              yp, slope_, r);
    });
  }

 private:
  // f(std::integral_constant<int, m>()) for the op's tile m (2, 4 or 6, checked at construction)
  template <class F>
  static void WithTile(int tile, F&& f) {
    if (tile == 2) {
      f(std::integral_constant<int, 2>());
    } else if (tile == 4) {
      f(std::integral_constant<int, 4>());
    } else {
      f(std::integral_constant<int, 6>());
    }
  }

  template <int M>
  static void Transform(const DeviceBase::CpuWorkerThreads* w, const zsm_winograd::Shape& s,
                        const float* g, float* u) {
    Shard(w->num_threads, w->workers, s.c, s.kp * zsm_winograd::Winograd<M>::P * 12,
          [&](int64_t begin, int64_t end) {
            zsm_winograd::Winograd<M>::transform_kernel(s, g, u, begin, end);
          });
  }

  template <int M>
  static void Run(const DeviceBase::CpuWorkerThreads* w, const zsm_winograd::Shape& s,
                  const float* const* xs, const int64_t* cs, int parts, const float* u,
                  const float* bias, float* y, float slope, int shuffle) {
    using W = zsm_winograd::Winograd<M>;
    const int64_t rows = s.n * W::tile_rows(s);
    const int64_t cost = W::tile_cols(s) * W::P * s.c * s.kp * 2;  // per row of tiles
    Shard(w->num_threads, w->workers, rows, cost, [&](int64_t begin, int64_t end) {
      W::run(s, xs, cs, parts, u, bias, y, begin, end, slope, shuffle);
    });
  }

  int tile_ = 2;
  float slope_ = 1.f;
  int shuffle_ = 1;
  std::mutex mu_;
  std::vector<float> g_;                          // the kernel u_ was made from
  std::shared_ptr<const std::vector<float>> u_;   // its transform [P, C, Kp]
};

REGISTER_KERNEL_BUILDER(Name("ZsmTf>WinogradConv3x3").Device(DEVICE_CPU), WinogradConv3x3Op);

}  // namespace
}  // namespace tensorflow
