// What the deformable ops (ZsmTf>DeformableIm2col and its gradient in deform_im2col_op.cc,
// ZsmTf>DeformableConv2D and its packed form in deform_conv_op.cc) share about their attrs and
// shapes: reading kernel_size, strides, padding, dilation (pairs (h, w)) and deformable_groups
// into zsm::DeformDims, the shape-function merge of input [B,H,W,C], offsets [B,Ho,Wo,2*dg*K] and
// mask [B,Ho,Wo,dg*K], and the run-time check of the same shapes (which fills the sizes).
// The packed form passes offsets and mask logits as one tensor [B,Ho,Wo,3*dg*K] (no mask).
#ifndef ZSM_TF_DEFORM_ATTRS_H_
#define ZSM_TF_DEFORM_ATTRS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

#include "deform_im2col.h"

// The attrs in an op's registration: REGISTER_OP(...).Input(...)ZSM_DEFORM_ATTRS.Doc(...)
#define ZSM_DEFORM_ATTRS                     \
  .Attr("kernel_size: list(int)")            \
  .Attr("strides: list(int) = [1, 1]")       \
  .Attr("padding: list(int) = [0, 0]")       \
  .Attr("dilation: list(int) = [1, 1]")      \
  .Attr("deformable_groups: int >= 1 = 1")

namespace tensorflow {
namespace deform_attrs {

inline absl::Status ReadPair(const char* name, const std::vector<int32_t>& v, int lo, int* a,
                             int* b) {
  if (v.size() != 2 || v[0] < lo || v[1] < lo)
    return errors::InvalidArgument(name, " must be a list of 2 ints >= ", lo);
  *a = v[0];
  *b = v[1];
  return absl::OkStatus();
}

// The attrs, from an InferenceContext or an OpKernelConstruction, into d's kh..dg.
template <typename Ctx>
absl::Status Read(Ctx* c, zsm::DeformDims* d) {
  std::vector<int32_t> ks, st, pd, dl;
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &ks));
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &st));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &pd));
  TF_RETURN_IF_ERROR(c->GetAttr("dilation", &dl));
  TF_RETURN_IF_ERROR(c->GetAttr("deformable_groups", &d->dg));
  TF_RETURN_IF_ERROR(ReadPair("kernel_size", ks, 1, &d->kh, &d->kw));
  TF_RETURN_IF_ERROR(ReadPair("strides", st, 1, &d->sh, &d->sw));
  TF_RETURN_IF_ERROR(ReadPair("padding", pd, 0, &d->ph, &d->pw));
  TF_RETURN_IF_ERROR(ReadPair("dilation", dl, 1, &d->dh, &d->dw));
  return absl::OkStatus();
}

// Shape function part: inputs 0 (input), 1 (offsets, or the packed offset_mask when mask_input <
// 0) and mask_input (mask) merged and checked; b, ho, wo: the output's first three dimensions
// (unknown ones stay unknown), ch: the input's channels (checked divisible by dg when known).
inline absl::Status MergeSampling(shape_inference::InferenceContext* c, const zsm::DeformDims& d,
                                  int mask_input, shape_inference::DimensionHandle* b,
                                  shape_inference::DimensionHandle* ho,
                                  shape_inference::DimensionHandle* wo,
                                  shape_inference::DimensionHandle* ch) {
  using shape_inference::DimensionHandle;
  using shape_inference::ShapeHandle;
  const int64_t gk = int64_t{d.dg} * d.K();
  ShapeHandle in, off;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &in));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &off));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(in, 0), c->Dim(off, 0), b));
  *ho = c->Dim(off, 1);
  *wo = c->Dim(off, 2);
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(off, 3), (mask_input < 0 ? 3 : 2) * gk, &unused));
  if (mask_input >= 0) {
    ShapeHandle msk;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(mask_input), 4, &msk));
    TF_RETURN_IF_ERROR(c->Merge(*b, c->Dim(msk, 0), b));
    TF_RETURN_IF_ERROR(c->Merge(*ho, c->Dim(msk, 1), ho));
    TF_RETURN_IF_ERROR(c->Merge(*wo, c->Dim(msk, 2), wo));
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(msk, 3), gk, &unused));
  }
  *ch = c->Dim(in, 3);
  if (c->ValueKnown(*ch) && c->Value(*ch) % d.dg != 0)
    return errors::InvalidArgument("input channels (", c->Value(*ch),
                                   ") must be divisible by deformable_groups (", d.dg, ")");
  return absl::OkStatus();
}

// Run-time check of input, offsets (or the packed offset_mask when mask is null) and mask; *d:
// the attrs of `attrs` with the sizes filled in.
inline absl::Status CheckSampling(const zsm::DeformDims& attrs, const Tensor& in,
                                  const Tensor& off, const Tensor* mask, zsm::DeformDims* d) {
  if (in.dims() != 4 || off.dims() != 4 || (mask != nullptr && mask->dims() != 4))
    return errors::InvalidArgument(
        "input, offsets and mask must be 4-D (NHWC), got ", in.shape().DebugString(), ", ",
        off.shape().DebugString(), mask ? ", " + mask->shape().DebugString() : std::string());
  *d = attrs;
  d->B = in.dim_size(0);
  d->H = in.dim_size(1);
  d->W = in.dim_size(2);
  d->C = in.dim_size(3);
  d->Ho = off.dim_size(1);
  d->Wo = off.dim_size(2);
  if (d->C % d->dg != 0)
    return errors::InvalidArgument("input channels (", d->C,
                                   ") must be divisible by deformable_groups (", d->dg, ")");
  const int64_t gk = int64_t{d->dg} * d->K();
  const TensorShape off_shape({d->B, d->Ho, d->Wo, (mask ? 2 : 3) * gk});
  if (off.shape() != off_shape)
    return errors::InvalidArgument(mask ? "offsets" : "offset_mask", " must be [", d->B,
                                   ", Ho, Wo, ", off_shape.dim_size(3), "], got ",
                                   off.shape().DebugString());
  if (mask != nullptr) {
    const TensorShape mask_shape({d->B, d->Ho, d->Wo, gk});
    if (mask->shape() != mask_shape)
      return errors::InvalidArgument("mask must be ", mask_shape.DebugString(), ", got ",
                                     mask->shape().DebugString());
  }
  return absl::OkStatus();
}

}  // namespace deform_attrs
}  // namespace tensorflow

#endif  // ZSM_TF_DEFORM_ATTRS_H_
