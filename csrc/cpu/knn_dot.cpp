// Exact dot-product k-NN on the CPU: argument checks, ISA dispatch, heap merging and the
// Python binding. The scan loops live in knn_dot_impl.h (generic instance below, AVX2 and
// AVX-512 instances in knn_dot_avx2.cpp / knn_dot_avx512.cpp).
#include "pyinstance/knn_dot.h"

#include <omp.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
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
  static constexpr bool kByteQuery = false;
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
  struct H {
    int16_t v[16];
  };
  struct I {
    int32_t v[8];
  };
  static H widen_i8(const int8_t* p) {
    H r;
    for (int i = 0; i < 2 * W; ++i) r.v[i] = p[i];
    return r;
  }
  static H load_i16(const int16_t* p) {
    H r;
    for (int i = 0; i < 2 * W; ++i) r.v[i] = p[i];
    return r;
  }
  static I izero() { return I{}; }
  static I madd(I acc, H a, H b) {
    for (int i = 0; i < W; ++i)
      acc.v[i] += int32_t{a.v[2 * i]} * b.v[2 * i] + int32_t{a.v[2 * i + 1]} * b.v[2 * i + 1];
    return acc;
  }
  static V to_float(I a) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = static_cast<float>(a.v[i]);
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

void keep(Candidates& list, int64_t row, float upper) {
  list.rows.push_back(row);
  list.uppers.push_back(upper);
}

PYI_KNN_ISA_DEFINE(generic, Generic)

}  // namespace knn_detail

namespace {

using knn_detail::Heaps;
using knn_detail::Problem;
using knn_detail::ScanStatus;

// Below this many queries per thread the threads split the references instead.
constexpr int64_t kQueriesPerThreadForQuerySplit = 64;

ScanStatus scan(const Problem& p, const Heaps& h, int threads, bool few) {
  ScanStatus status = ScanStatus::Ok;
  dispatch_float<false>(p.dtype, "refs", [&](auto tag) {
    using T = decltype(tag);
    switch (active_isa()) {
      case Isa::Avx512:
        status = few ? knn_detail::scan_few_avx512<T>(p, h, threads)
                     : knn_detail::scan_many_avx512<T>(p, h, threads);
        break;
      case Isa::Avx2:
        status = few ? knn_detail::scan_few_avx2<T>(p, h, threads)
                     : knn_detail::scan_many_avx2<T>(p, h, threads);
        break;
      default:
        status = few ? knn_detail::scan_few_generic<T>(p, h, threads)
                     : knn_detail::scan_many_generic<T>(p, h, threads);
    }
  });
  return status;
}

// The slow exact path, taken only when a float32 accumulation overflowed on finite inputs:
// every score summed in float64 (which cannot overflow on float32 inputs) and rounded to
// float32, so a true value beyond float32's range becomes +-inf with its sign, and a true
// value within it (0 from 1e40 - 1e40, say) comes back finite.
void knn_dot_float64(const Problem& p, float* out_scores, int64_t* out_idx, int threads) {
  dispatch_float<false>(p.dtype, "refs", [&](auto tag) {
    using T = decltype(tag);
    const T* refs = static_cast<const T*>(p.refs);
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
          sum += static_cast<double>(q[d]) * static_cast<double>(load(refs + j * p.D + d));
        knn_heap_offer(hs, hi, size, p.k, static_cast<float>(sum), j);
      }
      knn_heap_sort(hs, hi, size);
    }
  });
}

// The argument checks every entry point shares.
void check_problem(const Problem& p, const float* out_scores, const int64_t* out_idx) {
  dispatch_float<false>(p.dtype, "refs", [](auto) {});
  PYI_CHECK(p.Q >= 0, "queries: expected Q >= 0 rows, got ", p.Q);
  PYI_CHECK(p.N >= 1, "refs: expected at least one reference row, got N=", p.N);
  PYI_CHECK(p.D >= 1, "expected descriptor dimension D >= 1, got ", p.D);
  PYI_CHECK(p.k >= 1 && p.k <= p.N, "k: expected 1 <= k <= N=", p.N, ", got ", p.k);
  if (p.Q == 0) return;
  PYI_CHECK(p.q != nullptr && p.refs != nullptr && out_scores != nullptr && out_idx != nullptr,
            "knn_dot: null data pointer");
  if (p.exclude != nullptr) {
    bool any = false;
    for (int64_t i = 0; i < p.Q; ++i) {
      PYI_CHECK(p.exclude[i] >= -1 && p.exclude[i] < p.N,
                "exclude: entries must be -1 or in [0, N=", p.N, "), got ", p.exclude[i],
                " at position ", i);
      any = any || p.exclude[i] >= 0;
    }
    PYI_CHECK(!any || p.k <= p.N - 1, "k: expected k <= N - 1 = ", p.N - 1,
              " when exclude removes a reference, got ", p.k);
  }
  for (int64_t i = 0; i < p.Q * p.D; ++i) {
    PYI_CHECK(std::isfinite(p.q[i]), "queries: contains NaN or infinite values");
  }
}

// Whether the screening pass may use AVX512_VNNI byte products.
bool vnni_screen(int64_t stride) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return active_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512vnni") && stride <= 32768;
#else
  return false;
#endif
}

// The queries quantised for the screening pass (knn_detail::QueryCodes): int16 codes, or,
// with `bytes`, signed-byte codes stored biased as unsigned bytes, with the coefficients of
// the error bound, all rounded up.
class QueryScreen {
 public:
  QueryScreen(const Problem& p, int64_t stride, bool bytes)
      : codes_(bytes ? 0 : round_up4(p.Q) * stride, 0),
        bytes_(bytes ? round_up4(p.Q) * stride : 0, 128) {
    constexpr double u = 1.0 / (1 << 24);
    const double terms = static_cast<double>(p.D + 4), gamma = terms * u / (1 - terms * u);
    // int16: |code| <= limit keeps every int32 partial sum of 127 * limit * stride exact.
    const double limit =
        bytes ? 127.0 : std::min(32767.0, std::floor(2147483647.0 / (127.0 * stride)));
    for (int64_t i = 0; i < p.Q; ++i) {
      const float* q = p.q + i * p.D;
      double norm = 0.0, top = 0.0;
      for (int64_t d = 0; d < p.D; ++d) {
        norm += static_cast<double>(q[d]) * q[d];
        top = std::max(top, std::fabs(static_cast<double>(q[d])));
      }
      const float scale = static_cast<float>(top / limit);
      double error = 0.0, approx_norm = 0.0;
      for (int64_t d = 0; d < p.D; ++d) {
        const double code =
            scale > 0 ? std::clamp(std::nearbyint(q[d] / static_cast<double>(scale)), -limit, limit)
                      : 0.0;
        if (bytes)
          bytes_[i * stride + d] = static_cast<uint8_t>(128 + code);
        else
          codes_[i * stride + d] = static_cast<int16_t>(code);
        const double approx = code * scale, rest = q[d] - approx;
        error += rest * rest;
        approx_norm += approx * approx;
      }
      scales_.push_back(scale);
      code_norms_.push_back(up(std::sqrt(approx_norm)));
      errors_.push_back(up(std::sqrt(error) + gamma * std::sqrt(norm)));
    }
  }

  knn_detail::QueryCodes view(int64_t D) const {
    // Subnormal products may be flushed: at most 2^-126 each, D + 4 of them, twice over.
    const float tiny = static_cast<float>(D + 4) * 2 * std::numeric_limits<float>::min();
    return {codes_.data(), scales_.data(), code_norms_.data(), errors_.data(), tiny, bytes_.data()};
  }

 private:
  static int64_t round_up4(int64_t n) { return (n + 3) / 4 * 4; }
  static float up(double value) {
    return std::nextafter(static_cast<float>(value * (1.0 + 1e-6)), INFINITY);
  }
  std::vector<int16_t> codes_;
  std::vector<uint8_t> bytes_;
  std::vector<float> scales_, code_norms_, errors_;
};

void screen(const Problem& p, const knn_detail::Screen& s, const knn_detail::QueryCodes& qc,
            const Heaps& h, knn_detail::Candidates* lists, int threads, bool vnni) {
  if (vnni) return knn_detail::screen_vnni(p, s, qc, h, lists, threads);
  switch (active_isa()) {
    case Isa::Avx512:
      return knn_detail::screen_avx512(p, s, qc, h, lists, threads);
    case Isa::Avx2:
      return knn_detail::screen_avx2(p, s, qc, h, lists, threads);
    default:
      return knn_detail::screen_generic(p, s, qc, h, lists, threads);
  }
}

using RescoreFn = ScanStatus (*)(const Problem&, int64_t, const int64_t*, int64_t, float*, int64_t*,
                                 int64_t*);

RescoreFn rescore_fn(DType dtype) {
  RescoreFn fn = nullptr;
  dispatch_float<false>(dtype, "refs", [&](auto tag) {
    using T = decltype(tag);
    switch (active_isa()) {
      case Isa::Avx512:
        fn = knn_detail::rescore_avx512<T>;
        break;
      case Isa::Avx2:
        fn = knn_detail::rescore_avx2<T>;
        break;
      default:
        fn = knn_detail::rescore_generic<T>;
    }
  });
  return fn;
}

}  // namespace

void knn_dot(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N, int64_t D,
             int64_t k, const int64_t* exclude, float* out_scores, int64_t* out_idx, int threads) {
  const Problem problem{q, refs, ref_dtype, Q, N, D, k, exclude};
  check_problem(problem, out_scores, out_idx);
  if (Q == 0) return;
  const int T = resolve_threads(threads);
  const bool few = Q < kQueriesPerThreadForQuerySplit * T;
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

void knn_dot_screened(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N,
                      int64_t D, int64_t k, const int64_t* exclude, const int8_t* codes,
                      int64_t code_stride, const float* scales, const float* slacks,
                      const float* norms, const int32_t* sums, float* out_scores, int64_t* out_idx,
                      int threads) {
  const Problem problem{q, refs, ref_dtype, Q, N, D, k, exclude};
  check_problem(problem, out_scores, out_idx);
  PYI_CHECK(code_stride >= D && code_stride % 64 == 0,
            "codes: expected a row stride that is a multiple of 64 and >= D=", D, ", got ",
            code_stride);
  PYI_CHECK(codes != nullptr && scales != nullptr && slacks != nullptr && norms != nullptr &&
                sums != nullptr,
            "knn_dot_screened: null screen pointer");
  const int T = resolve_threads(threads);
  if (Q == 0) return;
  if (Q >= kQueriesPerThreadForQuerySplit * T) {
    // Many queries are compute-bound: the plain scan is as fast.
    knn_dot(q, refs, ref_dtype, Q, N, D, k, exclude, out_scores, out_idx, threads);
    return;
  }
  const bool vnni = vnni_screen(code_stride);
  const QueryScreen queries(problem, code_stride, vnni);
  std::vector<float> lower(static_cast<size_t>(T) * Q * k);
  std::vector<int64_t> lower_rows(static_cast<size_t>(T) * Q * k);
  std::vector<int64_t> sizes(static_cast<size_t>(T) * Q, 0);
  std::vector<knn_detail::Candidates> lists(static_cast<size_t>(T) * Q);
  screen(problem, knn_detail::Screen{codes, code_stride, scales, slacks, norms, sums},
         queries.view(D), Heaps{lower.data(), lower_rows.data(), sizes.data()}, lists.data(), T,
         vnni);
  const RescoreFn rescore = rescore_fn(ref_dtype);
  std::atomic<bool> exact{true};
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
  for (int64_t i = 0; i < Q; ++i) {
    // The k-th largest lower bound over all threads: k rows score at least that much, so a
    // row whose upper bound is below it cannot be among the k best (ties included).
    std::vector<float> ls(k);
    std::vector<int64_t> li(k);
    int64_t size = 0;
    for (int t = 0; t < T; ++t) {
      const int64_t slot = t * Q + i;
      for (int64_t j = 0; j < sizes[slot]; ++j)
        knn_heap_offer(ls.data(), li.data(), size, k, lower[slot * k + j],
                       lower_rows[slot * k + j]);
    }
    const float bound = size == k ? ls[0] : -INFINITY;
    std::vector<int64_t> rows;
    for (int t = 0; t < T; ++t) {
      const knn_detail::Candidates& list = lists[t * Q + i];
      for (size_t j = 0; j < list.rows.size(); ++j)
        if (list.uppers[j] >= bound) rows.push_back(list.rows[j]);
    }
    std::sort(rows.begin(), rows.end());
    int64_t found = 0;
    const ScanStatus status = rescore(problem, i, rows.data(), static_cast<int64_t>(rows.size()),
                                      out_scores + i * k, out_idx + i * k, &found);
    if (status != ScanStatus::Ok || found != k) {
      exact.store(false);
    } else {
      knn_heap_sort(out_scores + i * k, out_idx + i * k, k);
    }
  }
  // NaN or infinite references, or an overflow: the plain scan reports or recomputes them.
  if (!exact.load()) knn_dot(q, refs, ref_dtype, Q, N, D, k, exclude, out_scores, out_idx, threads);
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
      "knn_dot_screened",
      [](uintptr_t q, uintptr_t refs, int ref_dtype, int64_t Q, int64_t N, int64_t D, int64_t k,
         uintptr_t exclude, uintptr_t codes, int64_t code_stride, uintptr_t scales,
         uintptr_t slacks, uintptr_t norms, uintptr_t sums, uintptr_t out_scores, uintptr_t out_idx,
         int threads) {
        pybind11::gil_scoped_release release;
        cpu::knn_dot_screened(
            reinterpret_cast<const float*>(q), reinterpret_cast<const void*>(refs),
            static_cast<DType>(ref_dtype), Q, N, D, k, reinterpret_cast<const int64_t*>(exclude),
            reinterpret_cast<const int8_t*>(codes), code_stride,
            reinterpret_cast<const float*>(scales), reinterpret_cast<const float*>(slacks),
            reinterpret_cast<const float*>(norms), reinterpret_cast<const int32_t*>(sums),
            reinterpret_cast<float*>(out_scores), reinterpret_cast<int64_t*>(out_idx), threads);
      },
      pybind11::arg("queries"), pybind11::arg("refs"), pybind11::arg("ref_dtype"),
      pybind11::arg("Q"), pybind11::arg("N"), pybind11::arg("D"), pybind11::arg("k"),
      pybind11::arg("exclude"), pybind11::arg("codes"), pybind11::arg("code_stride"),
      pybind11::arg("scales"), pybind11::arg("slacks"), pybind11::arg("norms"),
      pybind11::arg("sums"), pybind11::arg("out_scores"), pybind11::arg("out_indices"),
      pybind11::arg("threads"),
      "knn_dot through an int8 screening copy of refs (codes, code_stride, scales, slacks, norms "
      "as "
      "pyinstance.ops.knn_screen builds them): the same results as knn_dot. Releases the GIL.");
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
