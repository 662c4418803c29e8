// Fused top-k region pooling on the CPU (OpenMP): class maximum -> top-k locations ->
// per-location L2 normalisation -> sum, and its backward with respect to the features.
// Per-element math is shared with the CUDA kernels (pyinstance/topk_region_pool.h).
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../bindings/register.h"
#include "pyinstance/checks.h"
#include "pyinstance/cpu_features.h"
#include "pyinstance/dtype.h"
#include "pyinstance/topk_region_pool.h"
#include "topk_region_pool_simd.h"

namespace py = pybind11;

namespace pyinstance::cpu {
namespace {

using region_pool::acc_t;
using region_pool::BFloat16;
using region_pool::dispatch_float;
using region_pool::Geometry;
using region_pool::Half;
using region_pool::make_geometry;

// Below this many elements of work a parallel region costs more than it saves (and on a
// busy machine its barrier waits for a descheduled thread).
bool parallel_worth_it(int64_t work) { return work >= (int64_t{1} << 16); }

// ---- forward --------------------------------------------------------------------------

// Running maximum over `num_rows` class rows (stride H*W) of columns [begin, end), into
// `out`, which holds the maximum so far; returns true on NaN. Bandwidth-bound: one
// sequential pass over the class map.
template <typename S>
bool class_max_rows(const S* rows, int64_t num_rows, const Geometry& g, int64_t begin, int64_t end,
                    Isa isa, acc_t<S>* out) {
  using A = acc_t<S>;
  if constexpr (std::is_same_v<S, float>) {
#if defined(__x86_64__)
    if (isa == Isa::Avx512)
      return region_pool_detail::class_max_f32_avx512(rows + begin, num_rows, g.area(), end - begin,
                                                      out + begin);
    if (isa == Isa::Avx2)
      return region_pool_detail::class_max_f32_avx2(rows + begin, num_rows, g.area(), end - begin,
                                                    out + begin);
#endif
  }
  int nan_seen = 0;  // an int, not a bool: the loop then vectorises
  for (int64_t r = 0; r < num_rows; ++r) {
    const S* row = rows + r * g.area();
    for (int64_t j = begin; j < end; ++j) {
      const A v = region_pool::load(row + j);
      nan_seen |= region_pool::is_nan(v);
      out[j] = region_pool::score_max(out[j], v);
    }
  }
  return nan_seen != 0;
}

// The k best valid locations of one image, by descending score (ties: smaller index).
// Returns the number of valid locations seen (the caller checks it is >= k).
template <typename A>
int64_t select_topk(const A* score, const Geometry& g, int64_t valid_h, int64_t valid_w,
                    int64_t* locations) {
  const int64_t k = g.k;
  constexpr int64_t kInsertionMax = 32;
  int64_t valid = 0;
  if (k <= kInsertionMax) {
    A top_score[kInsertionMax];
    int64_t count = 0;
    for (int64_t i = 0; i < g.area(); ++i) {
      if (!region_pool::location_valid(i, g.width, valid_h, valid_w)) continue;
      ++valid;
      region_pool::topk_insert(top_score, locations, count, k, score[i], i);
    }
    return valid;
  }
  std::vector<int64_t> candidates;
  candidates.reserve(static_cast<size_t>(g.area()));
  for (int64_t i = 0; i < g.area(); ++i)
    if (region_pool::location_valid(i, g.width, valid_h, valid_w)) candidates.push_back(i);
  valid = static_cast<int64_t>(candidates.size());
  if (valid < k) return valid;
  std::partial_sort(candidates.begin(), candidates.begin() + k, candidates.end(),
                    [score](int64_t a, int64_t b) {
                      return region_pool::ranks_before(score[a], a, score[b], b);
                    });
  std::copy(candidates.begin(), candidates.begin() + k, locations);
  return valid;
}

// Gathers features[b, :, locations[l]] into buf (k x C) and returns the per-location
// normalisation coefficients; false when a gathered value is not finite.
template <typename T>
bool gather_normalise(const T* features, const Geometry& g, int64_t b, const int64_t* locations,
                      acc_t<T>* buf, region_pool::NormCoeffs<acc_t<T>>* coeffs) {
  using A = acc_t<T>;
  const T* base = features + b * g.stride_b;
  std::vector<int64_t> offsets(static_cast<size_t>(g.k));
  for (int64_t l = 0; l < g.k; ++l) offsets[l] = g.offset(locations[l]);
  // Each value sits on its own cache line (NCHW): prefetch a few channels ahead, the
  // loads are otherwise latency-bound.
  constexpr int64_t kAhead = 16;
  for (int64_t c = 0; c < g.channels; ++c) {
    const T* column = base + c * g.stride_c;
#if defined(__GNUC__)
    if (c + kAhead < g.channels)
      for (int64_t l = 0; l < g.k; ++l)
        __builtin_prefetch(column + kAhead * g.stride_c + offsets[l]);
#endif
    for (int64_t l = 0; l < g.k; ++l)
      buf[l * g.channels + c] = region_pool::load(column + offsets[l]);
  }
  for (int64_t l = 0; l < g.k; ++l) {
    const A* x = buf + l * g.channels;
    A scale = 0;
    bool finite = true;
    for (int64_t c = 0; c < g.channels; ++c) {
      finite &= region_pool::is_finite(x[c]);
      scale = std::max(scale, x[c] < 0 ? -x[c] : x[c]);
    }
    if (!finite) return false;
    A sumsq = 0;
    if (scale > 0)
      for (int64_t c = 0; c < g.channels; ++c) sumsq += (x[c] / scale) * (x[c] / scale);
    coeffs[l] = region_pool::norm_coeffs(region_pool::scaled_norm(scale, sumsq));
  }
  return true;
}

template <typename T>
bool pool_image(const T* features, const Geometry& g, int64_t b, const int64_t* locations,
                acc_t<T>* buf, region_pool::NormCoeffs<acc_t<T>>* coeffs, T* pooled) {
  using A = acc_t<T>;
  if (!gather_normalise(features, g, b, locations, buf, coeffs)) return false;
  for (int64_t c = 0; c < g.channels; ++c) {
    A sum = 0;
    for (int64_t l = 0; l < g.k; ++l) sum += buf[l * g.channels + c] * coeffs[l].inv_denominator;
    region_pool::store(pooled + b * g.channels + c, sum);
  }
  return true;
}

// One parallel pass over the images: class maximum (streamed), top-k, then gather and
// normalise; no barrier between the stages.
template <typename S, typename T>
void forward_images(const S* scores, const T* features, const int64_t* valid_hw, const Geometry& g,
                    int64_t* locations, T* pooled) {
  const int64_t area = g.area();
  const Isa isa = active_isa();  // may throw: outside the parallel region
  std::vector<char> nan_in(static_cast<size_t>(g.batch), 0), bad(static_cast<size_t>(g.batch), 0);
  std::vector<int64_t> valid_count(static_cast<size_t>(g.batch), 0);
#pragma omp parallel if (parallel_worth_it(g.batch * (g.classes * area + g.k * g.channels * 8)))
  {
    std::vector<acc_t<S>> score(static_cast<size_t>(area));
    std::vector<acc_t<T>> buf(static_cast<size_t>(g.k * g.channels));
    std::vector<region_pool::NormCoeffs<acc_t<T>>> coeffs(static_cast<size_t>(g.k));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < g.batch; ++b) {
      std::fill(score.begin(), score.end(), -std::numeric_limits<acc_t<S>>::infinity());
      nan_in[b] =
          class_max_rows(scores + b * g.classes * area, g.classes, g, 0, area, isa, score.data());
      if (nan_in[b]) continue;
      const int64_t valid_h = valid_hw ? valid_hw[2 * b] : g.height;
      const int64_t valid_w = valid_hw ? valid_hw[2 * b + 1] : g.width;
      int64_t* image_locations = locations + b * g.k;
      valid_count[b] = select_topk(score.data(), g, valid_h, valid_w, image_locations);
      if (valid_count[b] >= g.k)
        bad[b] = !pool_image(features, g, b, image_locations, buf.data(), coeffs.data(), pooled);
    }
  }
  for (int64_t b = 0; b < g.batch; ++b) {
    PYI_CHECK(!nan_in[b], "scores: contains NaN values (image ", b, ")");
    PYI_CHECK(valid_count[b] >= g.k, "k=", g.k, " exceeds the ", valid_count[b],
              " valid locations of image ", b);
    PYI_CHECK(!bad[b], "features: contains NaN or infinite values at a selected location (image ",
              b, ")");
  }
}

// ---- backward ----------------------------------------------------------------------

// Per image: gather the selected columns, their norms and u.g, and write the k gradient
// values of every row into grad_features, which the caller passes zero-filled (the
// Python op allocates it with calloc: untouched, lazily zeroed pages, so the only full
// pass over the B x C x H x W gradient is the OS handing out zero pages).
template <typename T>
void pool_backward(const T* grad_pooled, const T* features, const int64_t* locations,
                   const Geometry& g, T* grad_features) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < g.batch * g.k; ++i)
    PYI_CHECK(locations[i] >= 0 && locations[i] < g.area(), "locations: ", locations[i],
              " out of range [0, ", g.area(), ") in image ", i / g.k);
  std::vector<char> bad(static_cast<size_t>(g.batch), 0);
#pragma omp parallel if (parallel_worth_it(g.batch * g.k * g.channels * 8))
  {
    std::vector<A> buf(static_cast<size_t>(g.k * g.channels));
    std::vector<region_pool::NormCoeffs<A>> coeffs(static_cast<size_t>(g.k));
    std::vector<A> u_dot_g(static_cast<size_t>(g.k));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < g.batch; ++b) {
      const int64_t* loc = locations + b * g.k;
      if (!gather_normalise(features, g, b, loc, buf.data(), coeffs.data())) {
        bad[b] = 1;
        continue;
      }
      const T* grad = grad_pooled + b * g.channels;
      for (int64_t l = 0; l < g.k; ++l) {
        A dot = 0;
        const A* x = buf.data() + l * g.channels;
        for (int64_t c = 0; c < g.channels; ++c) dot += x[c] * region_pool::load(grad + c);
        u_dot_g[l] = coeffs[l].clamped ? A(0) : dot * coeffs[l].inv_denominator;
      }
      T* out = grad_features + b * g.channels * g.area();
      for (int64_t c = 0; c < g.channels; ++c) {
        const A grad_c = region_pool::load(grad + c);
        for (int64_t l = 0; l < g.k; ++l)
          region_pool::store(out + c * g.area() + loc[l],
                             region_pool::normalize_grad(grad_c, buf[l * g.channels + c],
                                                         coeffs[l].inv_denominator, u_dot_g[l]));
      }
    }
  }
  for (int64_t b = 0; b < g.batch; ++b)
    PYI_CHECK(!bad[b], "features: contains NaN or infinite values at a selected location (image ",
              b, ")");
}

}  // namespace

// ---- entry points (pyinstance/topk_region_pool.h) and bindings -----------------------

void topk_region_pool_forward(const void* features, DType features_dtype, const void* scores,
                              DType scores_dtype, const Geometry& g, const int64_t* valid_hw,
                              void* pooled, int64_t* locations) {
  dispatch_float(scores_dtype, "scores", [&](auto score_tag) {
    using S = decltype(score_tag);
    dispatch_float(features_dtype, "features", [&](auto feature_tag) {
      using T = decltype(feature_tag);
      forward_images(static_cast<const S*>(scores), static_cast<const T*>(features), valid_hw, g,
                     locations, static_cast<T*>(pooled));
    });
  });
}

void topk_region_pool_backward(const void* grad_pooled, const void* features, DType dtype,
                               const Geometry& g, const int64_t* locations, void* grad_features) {
  dispatch_float(dtype, "features", [&](auto tag) {
    using T = decltype(tag);
    pool_backward(static_cast<const T*>(grad_pooled), static_cast<const T*>(features), locations, g,
                  static_cast<T*>(grad_features));
  });
}

}  // namespace pyinstance::cpu

namespace pyinstance::bindings {

void register_topk_region_pool(py::module_& m) {
  m.def(
      "topk_region_pool_forward",
      [](uintptr_t features, int features_dtype, int64_t batch, int64_t channels, int64_t height,
         int64_t width, const std::vector<int64_t>& strides, uintptr_t scores, int scores_dtype,
         int64_t classes, int64_t k, uintptr_t valid_hw, uintptr_t pooled, uintptr_t locations) {
        const region_pool::Geometry g =
            region_pool::make_geometry(batch, channels, height, width, classes, k, strides);
        py::gil_scoped_release release;
        cpu::topk_region_pool_forward(
            reinterpret_cast<const void*>(features), static_cast<DType>(features_dtype),
            reinterpret_cast<const void*>(scores), static_cast<DType>(scores_dtype), g,
            reinterpret_cast<const int64_t*>(valid_hw), reinterpret_cast<void*>(pooled),
            reinterpret_cast<int64_t*>(locations));
      },
      py::arg("features"), py::arg("features_dtype"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("strides"), py::arg("scores"),
      py::arg("scores_dtype"), py::arg("classes"), py::arg("k"), py::arg("valid_hw"),
      py::arg("pooled"), py::arg("locations"),
      "Top-k region pooling forward: writes pooled (B x C, features dtype) and locations "
      "(B x k int64). scores: C-contiguous B x classes x H x W; valid_hw: B x 2 int64 or 0.");
  m.def(
      "topk_region_pool_backward",
      [](uintptr_t grad_pooled, uintptr_t features, int dtype, int64_t batch, int64_t channels,
         int64_t height, int64_t width, const std::vector<int64_t>& strides, uintptr_t locations,
         int64_t k, uintptr_t grad_features) {
        const region_pool::Geometry g =
            region_pool::make_geometry(batch, channels, height, width, 1, k, strides);
        py::gil_scoped_release release;
        cpu::topk_region_pool_backward(
            reinterpret_cast<const void*>(grad_pooled), reinterpret_cast<const void*>(features),
            static_cast<DType>(dtype), g, reinterpret_cast<const int64_t*>(locations),
            reinterpret_cast<void*>(grad_features));
      },
      py::arg("grad_pooled"), py::arg("features"), py::arg("dtype"), py::arg("batch"),
      py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("strides"),
      py::arg("locations"), py::arg("k"), py::arg("grad_features"),
      "Top-k region pooling backward: writes the gradient at the selected locations into "
      "grad_features, a C-contiguous B x C x H x W buffer the caller passes zero-filled.");
}

}  // namespace pyinstance::bindings
