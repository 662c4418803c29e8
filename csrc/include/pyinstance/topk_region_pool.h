// Per-element math of the fused top-k region pooling op, shared by the CPU kernels
// (csrc/cpu/topk_region_pool*.cpp) and the CUDA kernels (csrc/cuda/topk_region_pool.cu),
// so the CPU tests exercise exactly what the GPU runs.
//
// Semantics (pyinstance.ops.topk_region_pool):
//   score(b, i)   = max over classes of scores[b, :, i]          (i = y * W + x)
//   selected      = the k valid locations with the highest score; ties: smaller i first;
//                   listed by descending score
//   u_l           = f_l / max(||f_l||, eps)                       (f_l = features[b, :, i_l])
//   pooled[b]     = sum_l u_l
//   d pooled / d f_l applied to g = (g - u_l (u_l . g)) / ||f_l||  when ||f_l|| > eps,
//                                  = g / eps                       otherwise
//   (the same as torch.nn.functional.normalize's gradient).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "pyinstance/checks.h"
#include "pyinstance/dtype.h"
#include "pyinstance/macros.h"

namespace pyinstance::region_pool {

// Denominator floor of the normalisation, as in torch.nn.functional.normalize.
constexpr double kNormEps = 1e-12;

using pyinstance::BFloat16;
using pyinstance::dispatch_float;
using pyinstance::Half;
using pyinstance::load;
using pyinstance::store;

// Geometry of one call. Features are read through their strides (channels-last works
// without a copy); scores are C-contiguous B x K x H x W.
struct Geometry {
  int64_t batch, channels, height, width, classes, k;
  int64_t stride_b, stride_c, stride_h, stride_w;
  PYI_HD int64_t area() const { return height * width; }
  PYI_HD int64_t offset(int64_t location) const {
    return (location / width) * stride_h + (location % width) * stride_w;
  }
};

// Host side of the bindings: checks the shapes and builds the Geometry. The CUDA binding
// passes its grid limit as max_batch; the CPU has none.
inline Geometry make_geometry(int64_t batch, int64_t channels, int64_t height, int64_t width,
                              int64_t classes, int64_t k, const std::vector<int64_t>& strides,
                              int64_t max_batch = std::numeric_limits<int64_t>::max()) {
  PYI_CHECK(batch > 0 && channels > 0 && height > 0 && width > 0,
            "features: expected a non-empty B x C x H x W array");
  PYI_CHECK(batch <= max_batch, "features: batch ", batch, " exceeds the CUDA grid limit ",
            max_batch);
  PYI_CHECK(classes > 0, "scores: expected at least one class");
  PYI_CHECK(k >= 1 && k <= height * width, "k: expected 1 <= k <= H*W = ", height * width, ", got ",
            k);
  PYI_CHECK(strides.size() == 4, "features: expected 4 strides, got ", strides.size());
  return Geometry{batch, channels,   height,     width,      classes,
                  k,     strides[0], strides[1], strides[2], strides[3]};
}

// Arithmetic type for a storage type: double for double, float otherwise.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

template <typename A>
PYI_HD bool is_nan(A v) {
  return v != v;
}
template <typename A>
PYI_HD bool is_finite(A v) {
  return v - v == A(0);  // false for inf and NaN
}

// Location score: the running maximum over classes (NaN never wins; callers flag NaN).
template <typename S>
PYI_HD S score_max(S running, S value) {
  return value > running ? value : running;
}

// Selection order: higher score first, equal scores by smaller flat index.
template <typename S>
PYI_HD bool ranks_before(S score_a, int64_t index_a, S score_b, int64_t index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// Inserts (score, index) into the lists top_score/top_index (`count` of at most k entries,
// ordered by ranks_before). ranks_before is a strict total order on distinct indices, so
// the result does not depend on the order in which candidates arrive.
template <typename S>
PYI_HD void topk_insert(S* top_score, int64_t* top_index, int64_t& count, int64_t k, S score,
                        int64_t index) {
  if (count == k && !ranks_before(score, index, top_score[k - 1], top_index[k - 1])) return;
  int64_t pos = count < k ? count++ : k - 1;
  while (pos > 0 && ranks_before(score, index, top_score[pos - 1], top_index[pos - 1])) {
    top_score[pos] = top_score[pos - 1];
    top_index[pos] = top_index[pos - 1];
    --pos;
  }
  top_score[pos] = score;
  top_index[pos] = index;
}

// Is flat location `index` of an H x W grid (row length `width`) inside the valid
// top-left valid_h x valid_w window of a padded image?
PYI_HD bool location_valid(int64_t index, int64_t width, int64_t valid_h, int64_t valid_w) {
  return index / width < valid_h && index % width < valid_w;
}

// Overflow-free Euclidean norm from max |x| (`scale`) and sum((x / scale)^2).
template <typename A>
PYI_HD A scaled_norm(A scale, A scaled_sumsq) {
  return scale > A(0) ? scale * static_cast<A>(sqrt(static_cast<double>(scaled_sumsq))) : A(0);
}

// Normalisation of one location, from its norm: u = f * inv_denominator, and the
// coefficient `projection` enters the backward as g - u * projection (0 when clamped).
template <typename A>
struct NormCoeffs {
  A inv_denominator;
  bool clamped;
};

template <typename A>
PYI_HD NormCoeffs<A> norm_coeffs(A norm) {
  const A eps = static_cast<A>(kNormEps);
  NormCoeffs<A> c;
  c.clamped = !(norm > eps);
  c.inv_denominator = A(1) / (c.clamped ? eps : norm);
  return c;
}

// d/df of f * inv_denominator (clamped or not) applied to g, for one element:
// (g - u_c * u_dot_g) * inv_denominator with u_c = f_c * inv_denominator;
// u_dot_g must be 0 when the denominator was clamped.
template <typename A>
PYI_HD A normalize_grad(A g, A f, A inv_denominator, A u_dot_g) {
  return (g - f * inv_denominator * u_dot_g) * inv_denominator;
}

}  // namespace pyinstance::region_pool

// ---- Entry points (csrc/cpu/topk_region_pool.cpp, csrc/cuda/topk_region_pool.cu) ----------
// Forward: the k best locations of every image by descending score (ties: smaller index)
// into locations (B x k int64) and the sum of their L2-normalised feature vectors into
// pooled (B x C, the features' dtype). features: any strides (g); scores: C-contiguous
// B x classes x H x W; valid_hw: nullptr or B x 2 int64 (height, width) of each image's
// valid top-left window. Backward: the gradient w.r.t. features at those locations into
// grad_features, a C-contiguous B x C x H x W buffer the caller passes zero-filled.
// Both return nothing: the CPU throws std::invalid_argument on NaN scores, non-finite
// selected features, too few valid locations or locations out of range; CUDA reports the
// same per image in `status` (codes in topk_region_pool.cu), which the caller turns into
// errors.

namespace pyinstance::cpu {

void topk_region_pool_forward(const void* features, DType features_dtype, const void* scores,
                              DType scores_dtype, const region_pool::Geometry& g,
                              const int64_t* valid_hw, void* pooled, int64_t* locations);
void topk_region_pool_backward(const void* grad_pooled, const void* features, DType dtype,
                               const region_pool::Geometry& g, const int64_t* locations,
                               void* grad_features);

}  // namespace pyinstance::cpu

#if defined(__CUDACC__)
#include <cuda_runtime_api.h>

namespace pyinstance::cuda {

// scratch: B x H*W accumulators of the scores' arithmetic type; coeffs (forward) / scratch
// (backward): B x k x 2 of the features'; status: B int32, zero-filled.
void topk_region_pool_forward(const void* features, DType features_dtype, const void* scores,
                              DType scores_dtype, const region_pool::Geometry& g,
                              const int64_t* valid_hw, void* pooled, int64_t* locations,
                              void* scratch, void* coeffs, int* status, cudaStream_t stream);
void topk_region_pool_backward(const void* grad_pooled, const void* features, DType dtype,
                               const region_pool::Geometry& g, const int64_t* locations,
                               void* grad_features, void* scratch, int* status,
                               cudaStream_t stream);

}  // namespace pyinstance::cuda
#endif
