// Exact dot-product k-NN on the CPU: argument checks, ISA dispatch, heap merging and the
// Python binding. The scan loops live in knn_dot_impl.h (generic instance below, AVX2 and
// AVX-512 instances in knn_dot_avx2.cpp / knn_dot_avx512.cpp).
#include "pyinstance/knn_dot.h"

#include <omp.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "knn_dot_impl.h"
#include "pyinstance/checks.h"
#include "pyinstance/cpu_features.h"
#include "pyinstance/threads.h"
#include "pyinstance/topk.h"

namespace pyinstance::cpu {
namespace knn_detail {
namespace {

// Portable traits: 8 lanes in plain arrays, vectorised by the compiler for the baseline ISA.
struct Generic {
  struct V {
    float v[8];
  };
  static constexpr int W = 8;
  static constexpr int MR = 4;
  static V zero() { return V{}; }
  static V load(const float* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, V a) {
    for (int i = 0; i < W; ++i) p[i] = a.v[i];
  }
  static V set1(float x) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = x;
    return r;
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static V add(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] += b.v[i];
    return a;
  }
  static V load_f16(const uint16_t* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = fp16_to_float(p[i]);
    return r;
  }
  static V load_bf16(const uint16_t* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = bf16_to_float(p[i]);
    return r;
  }
  static uint32_t passes(V s, V t) {
    uint32_t bits = 0;
    for (int i = 0; i < W; ++i) bits |= static_cast<uint32_t>(knn_passes(s.v[i], t.v[i])) << i;
    return bits;
  }
  static bool any_nan(V a) {
    bool nan = false;
    for (int i = 0; i < W; ++i) nan = nan || a.v[i] != a.v[i];
    return nan;
  }
  static V reduce(const V* a) {
    V r;
    for (int i = 0; i < W; ++i) {
      float sum = 0.0f;
      for (int j = 0; j < W; ++j) sum += a[i].v[j];
      r.v[i] = sum;
    }
    return r;
  }
};

}  // namespace

float offer(float* scores, int64_t* indices, int64_t* size, int64_t k, float score, int64_t index) {
  knn_heap_offer(scores, indices, *size, k, score, index);
  return knn_heap_threshold(scores, *size, k);
}

ScanStatus scan_few_generic(const Problem& p, const Heaps& h, int threads) {
  return Scan<Generic>::few_dispatch(p, h, threads);
}

ScanStatus scan_many_generic(const Problem& p, const Heaps& h, int threads) {
  return Scan<Generic>::many(p, h, threads);
}

}  // namespace knn_detail

namespace {

using knn_detail::Heaps;
using knn_detail::Problem;
using knn_detail::ScanStatus;

// Below this many queries per thread the threads split the references instead.
constexpr int64_t kQueriesPerThreadForQuerySplit = 64;

ScanStatus scan(const Problem& p, const Heaps& h, int threads, bool few) {
  switch (active_isa()) {
    case Isa::Avx512:
      return few ? knn_detail::scan_few_avx512(p, h, threads)
                 : knn_detail::scan_many_avx512(p, h, threads);
    case Isa::Avx2:
      return few ? knn_detail::scan_few_avx2(p, h, threads)
                 : knn_detail::scan_many_avx2(p, h, threads);
    default:
      return few ? knn_detail::scan_few_generic(p, h, threads)
                 : knn_detail::scan_many_generic(p, h, threads);
  }
}

double ref_value(const void* refs, DType dtype, int64_t i) {
  if (dtype == DType::Float32) return static_cast<const float*>(refs)[i];
  const uint16_t bits = static_cast<const uint16_t*>(refs)[i];
  return dtype == DType::Float16 ? fp16_to_float(bits) : bf16_to_float(bits);
}

// The slow exact path, taken only when a float32 accumulation overflowed on finite inputs:
// every score summed in float64 (which cannot overflow on float32 inputs) and rounded to
// float32, so a true value beyond float32's range becomes +-inf with its sign, and a true
// value within it (0 from 1e40 - 1e40, say) comes back finite.
void knn_dot_float64(const Problem& p, float* out_scores, int64_t* out_idx, int threads) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < p.Q; ++i) {
    float* hs = out_scores + i * p.k;
    int64_t* hi = out_idx + i * p.k;
    int64_t size = 0;
    const float* q = p.q + i * p.D;
    for (int64_t j = 0; j < p.N; ++j) {
      if (p.exclude != nullptr && p.exclude[i] == j) continue;
      double sum = 0.0;
      for (int64_t d = 0; d < p.D; ++d)
        sum += static_cast<double>(q[d]) * ref_value(p.refs, p.dtype, j * p.D + d);
      knn_heap_offer(hs, hi, size, p.k, static_cast<float>(sum), j);
    }
    knn_heap_sort(hs, hi, size);
  }
}

}  // namespace

void knn_dot(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N, int64_t D,
             int64_t k, const int64_t* exclude, float* out_scores, int64_t* out_idx, int threads) {
  PYI_CHECK(
      ref_dtype == DType::Float32 || ref_dtype == DType::Float16 || ref_dtype == DType::BFloat16,
      "refs: expected dtype float32, float16 or bfloat16 (code ", static_cast<int>(ref_dtype), ")");
  PYI_CHECK(Q >= 0, "queries: expected Q >= 0 rows, got ", Q);
  PYI_CHECK(N >= 1, "refs: expected at least one reference row, got N=", N);
  PYI_CHECK(D >= 1, "expected descriptor dimension D >= 1, got ", D);
  PYI_CHECK(k >= 1 && k <= N, "k: expected 1 <= k <= N=", N, ", got ", k);
  if (Q == 0) return;
  PYI_CHECK(q != nullptr && refs != nullptr && out_scores != nullptr && out_idx != nullptr,
            "knn_dot: null data pointer");
  if (exclude != nullptr) {
    bool any = false;
    for (int64_t i = 0; i < Q; ++i) {
      PYI_CHECK(exclude[i] >= -1 && exclude[i] < N, "exclude: entries must be -1 or in [0, N=", N,
                "), got ", exclude[i], " at position ", i);
      any = any || exclude[i] >= 0;
    }
    PYI_CHECK(!any || k <= N - 1, "k: expected k <= N - 1 = ", N - 1,
              " when exclude removes a reference, got ", k);
  }
  for (int64_t i = 0; i < Q * D; ++i) {
    PYI_CHECK(std::isfinite(q[i]), "queries: contains NaN or infinite values");
  }
  const int T = resolve_threads(threads);
  const bool few = Q < kQueriesPerThreadForQuerySplit * T;
  const Problem problem{q, refs, ref_dtype, Q, N, D, k, exclude};
  ScanStatus status;
  if (few) {
    // One heap slot per thread, merged below.
    std::vector<float> scores(static_cast<size_t>(T) * Q * k);
    std::vector<int64_t> indices(static_cast<size_t>(T) * Q * k);
    std::vector<int64_t> sizes(static_cast<size_t>(T) * Q, 0);
    status = scan(problem, Heaps{scores.data(), indices.data(), sizes.data()}, T, true);
    if (status == ScanStatus::Ok) {
      for (int64_t i = 0; i < Q; ++i) {
        float* hs = out_scores + i * k;
        int64_t* hi = out_idx + i * k;
        int64_t size = 0;
        for (int t = 0; t < T; ++t) {
          const int64_t slot = t * Q + i;
          for (int64_t j = 0; j < sizes[slot]; ++j)
            knn_heap_offer(hs, hi, size, k, scores[slot * k + j], indices[slot * k + j]);
        }
        PYI_CHECK(size == k, "knn_dot: internal error, ", size, " of k=", k, " neighbours found");
        knn_heap_sort(hs, hi, k);
      }
    }
  } else {
    // Heaps live directly in the outputs: no memory beyond Q * k.
    std::vector<int64_t> sizes(Q, 0);
    status = scan(problem, Heaps{out_scores, out_idx, sizes.data()}, T, false);
    if (status == ScanStatus::Ok) {
#pragma omp parallel for num_threads(T) schedule(static)
      for (int64_t i = 0; i < Q; ++i) knn_heap_sort(out_scores + i * k, out_idx + i * k, sizes[i]);
      for (int64_t i = 0; i < Q; ++i)
        PYI_CHECK(sizes[i] == k, "knn_dot: internal error, ", sizes[i], " of k=", k,
                  " neighbours found");
    }
  }
  PYI_CHECK(status != ScanStatus::NonFinite, "refs: contains NaN or infinite values");
  if (status == ScanStatus::Overflow) knn_dot_float64(problem, out_scores, out_idx, T);
}

}  // namespace pyinstance::cpu

namespace pyinstance::bindings {

void register_knn_dot(pybind11::module_& m) {
  m.def(
      "knn_dot",
      [](uintptr_t q, uintptr_t refs, int ref_dtype, int64_t Q, int64_t N, int64_t D, int64_t k,
         uintptr_t exclude, uintptr_t out_scores, uintptr_t out_idx, int threads) {
        pybind11::gil_scoped_release release;
        cpu::knn_dot(
            reinterpret_cast<const float*>(q), reinterpret_cast<const void*>(refs),
            static_cast<DType>(ref_dtype), Q, N, D, k, reinterpret_cast<const int64_t*>(exclude),
            reinterpret_cast<float*>(out_scores), reinterpret_cast<int64_t*>(out_idx), threads);
      },
      pybind11::arg("queries"), pybind11::arg("refs"), pybind11::arg("ref_dtype"),
      pybind11::arg("Q"), pybind11::arg("N"), pybind11::arg("D"), pybind11::arg("k"),
      pybind11::arg("exclude"), pybind11::arg("out_scores"), pybind11::arg("out_indices"),
      pybind11::arg("threads"),
      "Top-k dot products of Q float32 queries against N references (float32/float16/"
      "bfloat16), all contiguous, given as data pointers (exclude: 0 for none). Writes Q x k "
      "scores (descending) and int64 indices; ties go to the smaller index. Releases the GIL.");
  m.def(
      "knn_order_key",
      [](float score, int64_t index) {
        const uint64_t key = knn_order_key(score, index);
        return pybind11::make_tuple(key, knn_key_score(key), knn_key_index(key));
      },
      pybind11::arg("score"), pybind11::arg("index"),
      "(key, score, index): the 64-bit order key of a candidate used by the CUDA selection "
      "(pyinstance/topk.h; smaller is better) and the score and index decoded from it.");
}

}  // namespace pyinstance::bindings
