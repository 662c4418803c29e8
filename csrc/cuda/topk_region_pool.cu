// Fused top-k region pooling on CUDA, forward and backward, on the caller's stream.
// Per-element math is shared with the CPU kernels (pyinstance/topk_region_pool.h).
//
// Forward:  class_max_kernel (location scores) -> select_kernel (top-k by rank, exact
//           tie rule) -> pool_kernel (per-location norms, normalised sum).
// Backward: grad_coeff_kernel (norms and u.g per location) -> scatter_grad_kernel into the
//           zero-filled gradient the caller passes.
// Status per image (int32): 1 NaN score, 2 non-finite selected feature, 3 too few valid
// locations, 4 location out of range (backward); images with a nonzero status are skipped
// and reported by the Python wrapper.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../bindings/register.h"
#include "pyinstance/checks.h"
#include "pyinstance/cuda_utils.cuh"
#include "pyinstance/dtype.h"
#include "pyinstance/topk_region_pool.h"

namespace py = pybind11;

namespace pyinstance::cuda {

using region_pool::Geometry;

namespace {

using region_pool::acc_t;

constexpr int kThreads = 256;
constexpr int kStatusNan = 1;
constexpr int kStatusBadFeature = 2;
constexpr int kStatusTooFewValid = 3;
constexpr int kStatusBadLocation = 4;

template <typename A>
__device__ A infinity();
template <>
__device__ float infinity<float>() {
  return __int_as_float(0x7f800000);
}
template <>
__device__ double infinity<double>() {
  return __longlong_as_double(0x7ff0000000000000LL);
}

// Block-wide reduction (sum or max) of one value per thread; every thread gets the result.
template <typename A, bool kMax>
__device__ A block_reduce(A value, A* shared) {
  for (int delta = 16; delta > 0; delta /= 2) {
    A other = __shfl_xor_sync(0xffffffffu, value, delta);
    value = kMax ? (other > value ? other : value) : value + other;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // shared may still be read by a previous reduction
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  A total = shared[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w)
    total = kMax ? (shared[w] > total ? shared[w] : total) : total + shared[w];
  return total;
}

// ---- forward -------------------------------------------------------------------------

template <typename S>
__global__ void class_max_kernel(const S* __restrict__ scores, Geometry g,
                                 acc_t<S>* __restrict__ location_score, int* __restrict__ status) {
  using A = acc_t<S>;
  const int64_t b = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= g.area()) return;
  const S* column = scores + b * g.classes * g.area() + j;
  A running = -infinity<A>();
  bool nan_seen = false;
#pragma unroll 8
  for (int64_t r = 0; r < g.classes; ++r) {
    const A v = region_pool::load(column + r * g.area());
    nan_seen |= region_pool::is_nan(v);
    running = region_pool::score_max(running, v);
  }
  location_score[b * g.area() + j] = running;
  if (nan_seen) status[b] = kStatusNan;
}

// Location i goes to slot rank(i) = number of valid locations ranked before it: exactly
// the k best valid locations fill slots 0..k-1, ties broken by the shared rule. Only the
// valid top-left valid_h x valid_w window is visited (no per-pair division).
template <typename A>
__global__ void select_kernel(const A* __restrict__ location_score, Geometry g,
                              const int64_t* __restrict__ valid_hw, int64_t* __restrict__ locations,
                              int* __restrict__ status) {
  const int64_t b = blockIdx.x;
  if (status[b] != 0) return;
  const int64_t valid_h = valid_hw ? valid_hw[2 * b] : g.height;
  const int64_t valid_w = valid_hw ? valid_hw[2 * b + 1] : g.width;
  if (valid_h * valid_w < g.k) {
    if (threadIdx.x == 0) status[b] = kStatusTooFewValid;
    return;
  }
  const A* score = location_score + b * g.area();
  for (int64_t n = threadIdx.x; n < valid_h * valid_w; n += blockDim.x) {
    const int64_t i = (n / valid_w) * g.width + n % valid_w;
    const A s = score[i];
    int64_t rank = 0;
    for (int64_t y = 0; y < valid_h && rank < g.k; ++y)
      for (int64_t j = y * g.width; j < y * g.width + valid_w; ++j)
        rank += region_pool::ranks_before(score[j], j, s, i);
    if (rank < g.k) locations[b * g.k + rank] = i;
  }
}

// Norm of features[b, :, location] by block reductions (max |x|, then sum of squares of
// x / max |x|); false when a value is not finite.
template <typename T>
__device__ bool location_norm(const T* __restrict__ image, const Geometry& g, int64_t offset,
                              acc_t<T>* shared, acc_t<T>* norm) {
  using A = acc_t<T>;
  A scale = 0;
  int finite = 1;
  for (int64_t c = threadIdx.x; c < g.channels; c += blockDim.x) {
    const A x = region_pool::load(image + c * g.stride_c + offset);
    finite &= region_pool::is_finite(x);
    const A magnitude = x < 0 ? -x : x;
    scale = magnitude > scale ? magnitude : scale;
  }
  finite = __syncthreads_and(finite);
  if (!finite) return false;
  scale = block_reduce<A, true>(scale, shared);
  A sumsq = 0;
  if (scale > 0)
    for (int64_t c = threadIdx.x; c < g.channels; c += blockDim.x) {
      const A x = region_pool::load(image + c * g.stride_c + offset) / scale;
      sumsq += x * x;
    }
  sumsq = block_reduce<A, false>(sumsq, shared);
  *norm = region_pool::scaled_norm(scale, sumsq);
  return true;
}

// coeffs[b, l] = (1 / max(||f_l||, eps), unused); then pooled[b, c] = sum_l f_l[c] * coeff.
template <typename T>
__global__ void pool_kernel(const T* __restrict__ features, Geometry g,
                            const int64_t* __restrict__ locations, acc_t<T>* __restrict__ coeffs,
                            T* __restrict__ pooled, int* __restrict__ status) {
  using A = acc_t<T>;
  __shared__ A shared[kThreads / 32];
  const int64_t b = blockIdx.x;
  if (status[b] != 0) return;
  const T* image = features + b * g.stride_b;
  const int64_t* loc = locations + b * g.k;
  A* coeff = coeffs + b * g.k * 2;
  for (int64_t l = 0; l < g.k; ++l) {
    A norm;
    if (!location_norm(image, g, g.offset(loc[l]), shared, &norm)) {
      if (threadIdx.x == 0) status[b] = kStatusBadFeature;
      return;
    }
    if (threadIdx.x == 0) coeff[2 * l] = region_pool::norm_coeffs(norm).inv_denominator;
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < g.channels; c += blockDim.x) {
    A sum = 0;
    for (int64_t l = 0; l < g.k; ++l)
      sum += region_pool::load(image + c * g.stride_c + g.offset(loc[l])) * coeff[2 * l];
    region_pool::store(pooled + b * g.channels + c, sum);
  }
}

// ---- backward ------------------------------------------------------------------------

// coeffs[b, l] = (1 / max(||f_l||, eps), u_l . g or 0 when clamped).
template <typename T>
__global__ void grad_coeff_kernel(const T* __restrict__ grad_pooled, const T* __restrict__ features,
                                  Geometry g, const int64_t* __restrict__ locations,
                                  acc_t<T>* __restrict__ coeffs, int* __restrict__ status) {
  using A = acc_t<T>;
  __shared__ A shared[kThreads / 32];
  const int64_t b = blockIdx.x;
  const T* image = features + b * g.stride_b;
  const T* grad = grad_pooled + b * g.channels;
  for (int64_t l = 0; l < g.k; ++l) {
    const int64_t location = locations[b * g.k + l];
    if (location < 0 || location >= g.area()) {
      if (threadIdx.x == 0) status[b] = kStatusBadLocation;
      return;
    }
    const int64_t offset = g.offset(location);
    A norm;
    if (!location_norm(image, g, offset, shared, &norm)) {
      if (threadIdx.x == 0) status[b] = kStatusBadFeature;
      return;
    }
    const region_pool::NormCoeffs<A> nc = region_pool::norm_coeffs(norm);
    A dot = 0;
    for (int64_t c = threadIdx.x; c < g.channels; c += blockDim.x)
      dot += region_pool::load(image + c * g.stride_c + offset) *
             static_cast<A>(region_pool::load(grad + c));
    dot = block_reduce<A, false>(dot, shared);
    if (threadIdx.x == 0) {
      coeffs[(b * g.k + l) * 2] = nc.inv_denominator;
      coeffs[(b * g.k + l) * 2 + 1] = nc.clamped ? A(0) : dot * nc.inv_denominator;
    }
  }
}

// One thread per (b, l, c): grad_features[b, c, loc_l] (C-contiguous, zero elsewhere).
template <typename T>
__global__ void scatter_grad_kernel(const T* __restrict__ grad_pooled,
                                    const T* __restrict__ features, Geometry g,
                                    const int64_t* __restrict__ locations,
                                    const acc_t<T>* __restrict__ coeffs,
                                    const int* __restrict__ status, T* __restrict__ grad_features) {
  using A = acc_t<T>;
  const int64_t total = g.batch * g.k * g.channels;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = t % g.channels, slot = t / g.channels, b = slot / g.k;
    if (status[b] != 0) continue;
    const int64_t location = locations[slot];
    const A f = region_pool::load(features + b * g.stride_b + c * g.stride_c + g.offset(location));
    const A value = region_pool::normalize_grad(
        static_cast<A>(region_pool::load(grad_pooled + b * g.channels + c)), f, coeffs[2 * slot],
        coeffs[2 * slot + 1]);
    region_pool::store(grad_features + (b * g.channels + c) * g.area() + location, value);
  }
}

// ---- launchers and bindings ----------------------------------------------------------

void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// Grid-stride kernels: at most 65535 * 16 blocks.
unsigned int grid_blocks(int64_t work) { return blocks_for(work, kThreads, 65535 * 16); }

}  // namespace

void topk_region_pool_forward(const void* features, DType features_dtype, const void* scores,
                              DType scores_dtype, const Geometry& g, const int64_t* valid_hw,
                              void* pooled, int64_t* locations, void* scratch, void* coeffs,
                              int* status, cudaStream_t stream) {
  dispatch_float(scores_dtype, "scores", [&](auto tag) {
    using S = decltype(tag);
    using A = acc_t<S>;
    auto* location_score = static_cast<A*>(scratch);
    const dim3 grid(grid_blocks(g.area()), static_cast<unsigned int>(g.batch));
    class_max_kernel<S>
        <<<grid, kThreads, 0, stream>>>(static_cast<const S*>(scores), g, location_score, status);
    check_launch("class_max_kernel");
    select_kernel<A><<<static_cast<unsigned int>(g.batch), kThreads, 0, stream>>>(
        location_score, g, valid_hw, locations, status);
    check_launch("select_kernel");
  });
  dispatch_float(features_dtype, "features", [&](auto tag) {
    using T = decltype(tag);
    pool_kernel<T><<<static_cast<unsigned int>(g.batch), kThreads, 0, stream>>>(
        static_cast<const T*>(features), g, locations, static_cast<acc_t<T>*>(coeffs),
        static_cast<T*>(pooled), status);
    check_launch("pool_kernel");
  });
}

void topk_region_pool_backward(const void* grad_pooled, const void* features, DType dtype,
                               const Geometry& g, const int64_t* locations, void* grad_features,
                               void* scratch, int* status, cudaStream_t stream) {
  dispatch_float(dtype, "features", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const auto* grad = static_cast<const T*>(grad_pooled);
    const auto* feat = static_cast<const T*>(features);
    auto* coeff = static_cast<A*>(scratch);
    auto* out = static_cast<T*>(grad_features);
    grad_coeff_kernel<T><<<static_cast<unsigned int>(g.batch), kThreads, 0, stream>>>(
        grad, feat, g, locations, coeff, status);
    check_launch("grad_coeff_kernel");
    scatter_grad_kernel<T><<<grid_blocks(g.batch * g.k * g.channels), kThreads, 0, stream>>>(
        grad, feat, g, locations, coeff, status, out);
    check_launch("scatter_grad_kernel");
  });
}

}  // namespace pyinstance::cuda

namespace pyinstance::bindings {

void register_topk_region_pool_cuda(py::module_& m) {
  m.def(
      "topk_region_pool_forward",
      [](uintptr_t features, int features_dtype, int64_t batch, int64_t channels, int64_t height,
         int64_t width, const std::vector<int64_t>& strides, uintptr_t scores, int scores_dtype,
         int64_t classes, int64_t k, uintptr_t valid_hw, uintptr_t pooled, uintptr_t locations,
         uintptr_t scratch, uintptr_t coeffs, uintptr_t status, uintptr_t stream, int device) {
        const region_pool::Geometry g =
            region_pool::make_geometry(batch, channels, height, width, classes, k, strides, 65535);
        py::gil_scoped_release release;
        const cuda::DeviceGuard guard(device);
        cuda::topk_region_pool_forward(
            reinterpret_cast<const void*>(features), static_cast<DType>(features_dtype),
            reinterpret_cast<const void*>(scores), static_cast<DType>(scores_dtype), g,
            reinterpret_cast<const int64_t*>(valid_hw), reinterpret_cast<void*>(pooled),
            reinterpret_cast<int64_t*>(locations), reinterpret_cast<void*>(scratch),
            reinterpret_cast<void*>(coeffs), reinterpret_cast<int*>(status),
            cuda::as_stream(stream));
      },
      py::arg("features"), py::arg("features_dtype"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("strides"), py::arg("scores"),
      py::arg("scores_dtype"), py::arg("classes"), py::arg("k"), py::arg("valid_hw"),
      py::arg("pooled"), py::arg("locations"), py::arg("scratch"), py::arg("coeffs"),
      py::arg("status"), py::arg("stream"), py::arg("device"),
      "GPU top-k region pooling forward on `stream` of `device` (same contract as "
      "_C.topk_region_pool_forward; per-image errors in `status`).");
  m.def(
      "topk_region_pool_backward",
      [](uintptr_t grad_pooled, uintptr_t features, int dtype, int64_t batch, int64_t channels,
         int64_t height, int64_t width, const std::vector<int64_t>& strides, uintptr_t locations,
         int64_t k, uintptr_t grad_features, uintptr_t scratch, uintptr_t status, uintptr_t stream,
         int device) {
        const region_pool::Geometry g =
            region_pool::make_geometry(batch, channels, height, width, 1, k, strides, 65535);
        py::gil_scoped_release release;
        const cuda::DeviceGuard guard(device);
        cuda::topk_region_pool_backward(
            reinterpret_cast<const void*>(grad_pooled), reinterpret_cast<const void*>(features),
            static_cast<DType>(dtype), g, reinterpret_cast<const int64_t*>(locations),
            reinterpret_cast<void*>(grad_features), reinterpret_cast<void*>(scratch),
            reinterpret_cast<int*>(status), cuda::as_stream(stream));
      },
      py::arg("grad_pooled"), py::arg("features"), py::arg("dtype"), py::arg("batch"),
      py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("strides"),
      py::arg("locations"), py::arg("k"), py::arg("grad_features"), py::arg("scratch"),
      py::arg("status"), py::arg("stream"), py::arg("device"),
      "GPU top-k region pooling backward on `stream` of `device` (same contract as "
      "_C.topk_region_pool_backward; per-image errors in `status`).");
}

}  // namespace pyinstance::bindings
