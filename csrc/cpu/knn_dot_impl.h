// The knn_dot scan loops, written once over a SIMD traits type S and instantiated per ISA
// (knn_dot.cpp: generic, knn_dot_avx2.cpp, knn_dot_avx512.cpp). Everything here lives in an
// anonymous namespace so each ISA file keeps its own copy.
//
// S provides: V (vector of W floats), W, MR (references per register tile of scan_many),
// zero/load/store/set1/fma/add, load_f16/load_bf16 (W halves -> W floats), passes(s, t) (lane
// bit set where !(s <= t)), any_nan(v), reduce(a) (lane i = sum of the lanes of a[i]); for
// the screening pass H (2W int16) and I (W int32): widen_i8 (2W int8 -> H), load_i16,
// izero, madd(acc, a, b) (acc lane i += a[2i] b[2i] + a[2i+1] b[2i+1]), to_float(I), and
// kByteQuery (true: byte queries through dpbusd, iadd, iload, unbias, ireduce instead).
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#include "knn_dot_kernels.h"

namespace pyinstance::cpu::knn_detail {
namespace {

inline int64_t round_up(int64_t value, int64_t step) { return (value + step - 1) / step * step; }

// Zero-initialised float scratch owned by one thread.
class Scratch {
 public:
  explicit Scratch(int64_t count) : data_(new float[static_cast<size_t>(count)]()) {}
  float* get() const { return data_.get(); }

 private:
  std::unique_ptr<float[]> data_;
};

inline float nan_value() { return std::nanf(""); }

template <class S>
struct Scan {
  using V = typename S::V;
  static constexpr int W = S::W;

  // Lanes [0, n) set.
  static uint32_t low_lanes(int64_t n) {
    return n >= 32 ? 0xffffffffu : (n <= 0 ? 0u : ((1u << n) - 1u));
  }

  // The last n < W half-precision values, converted through a zero-padded vector (no
  // scalar helpers: this file is compiled once per ISA).
  template <bool kHalf>
  static void tail_halves(const uint16_t* in, int64_t n, float* dst) {
    uint16_t padded[W] = {};
    alignas(64) float out[W];
    for (int64_t i = 0; i < n; ++i) padded[i] = in[i];
    S::store(out, kHalf ? S::load_f16(padded) : S::load_bf16(padded));
    for (int64_t i = 0; i < n; ++i) dst[i] = out[i];
  }

  // W reference values of storage type T (float, Half or BFloat16, see dispatch_float in
  // pyinstance/dtype.h) from `base` + i, as floats.
  template <class T>
  static V load_ref(const void* base, int64_t i) {
    if constexpr (std::is_same_v<T, float>) {
      return S::load(static_cast<const float*>(base) + i);
    } else if constexpr (std::is_same_v<T, Half>) {
      return S::load_f16(static_cast<const uint16_t*>(base) + i);
    } else {
      static_assert(std::is_same_v<T, BFloat16>, "storage type: float, Half or BFloat16");
      return S::load_bf16(static_cast<const uint16_t*>(base) + i);
    }
  }

  // count reference values of storage type T from `src` to float32 in `dst`.
  template <class T>
  static void to_float(const void* src, int64_t count, float* dst) {
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(dst, src, count * 4);
    } else {
      int64_t i = 0;
      for (; i + W <= count; i += W) S::store(dst + i, load_ref<T>(src, i));
      if (i < count)
        tail_halves<std::is_same_v<T, Half>>(static_cast<const uint16_t*>(src) + i, count - i,
                                             dst + i);
    }
  }

  static bool all_finite(const float* src, int64_t count) {
    V bad = S::zero();
    const V zero = S::zero();
    int64_t i = 0;
    for (; i + W <= count; i += W) bad = S::fma(S::load(src + i), zero, bad);
    bool finite = !S::any_nan(bad);
    for (; i < count; ++i) finite = finite && std::isfinite(src[i]);
    return finite;
  }

  // Non-finite inputs and overflow are found through the scores: `bad` gathers score * 0
  // over every score, so it turns NaN exactly when a score is NaN or infinite. With finite
  // queries that means a NaN or infinite reference value or a float32 overflow;
  // check_rows() tells the two apart (it runs only in that rare case).
  template <class T>
  static bool check_rows(const void* rows, int64_t count) {
    if constexpr (std::is_same_v<T, float>) {
      return all_finite(static_cast<const float*>(rows), count);
    } else {
      Scratch converted(count);
      to_float<T>(rows, count, converted.get());
      return all_finite(converted.get(), count);
    }
  }

  // ---- Few queries: threads split the references. ---------------------------------------
  // Register tile: RB references x QB queries, W accumulators vectorised along D, reduced
  // to one vector whose lane r * QB + j is <query j, reference r>. A single query reads
  // its rows in place, front to back (f16/bf16 converted in registers); several queries
  // first copy each block into an L1-sized float32 buffer that all query groups reuse.
  struct FewState {
    const Problem& p;
    const float* queries;  // Qp x Dp, zero padded
    int64_t Qp, Dp;
    float* hs;
    int64_t* hi;
    int64_t* hn;
    V bad;
    const int64_t* ids;  // index of each row of the scanned block, or nullptr: n0 + position
  };

  template <int QB, class T>
  static void few_block(FewState& st, const void* rows, int64_t count, int64_t n0) {
    constexpr int RB = W / QB;
    const int64_t Q = st.p.Q, k = st.p.k, Dp = st.Dp;
    alignas(64) float thr[W];
    alignas(64) float sc[W];
    const V zero = S::zero();
    for (int64_t qg = 0; qg < st.Qp; qg += QB) {
      uint32_t qlanes = 0;
      for (int j = 0; j < QB; ++j) {
        const int64_t q = std::min(qg + j, Q - 1);
        const float t0 = st.hn[q] < k ? nan_value() : st.hs[q * k];
        for (int r = 0; r < RB; ++r) {
          thr[r * QB + j] = t0;
          if (qg + j < Q) qlanes |= 1u << (r * QB + j);
        }
      }
      const float* qrow = st.queries + qg * Dp;
      for (int64_t rg = 0; rg < count; rg += RB) {
        V acc[W];
        if constexpr (QB == 1) {
          // One query: walk each row front to back (sequential reads stream best), two
          // accumulators per row to halve the FMA dependency chain.
          for (int r = 0; r < RB; ++r) {
            V a0 = S::zero(), a1 = S::zero();
            int64_t d = 0;
            for (; d + 2 * W <= Dp; d += 2 * W) {
              a0 = S::fma(load_ref<T>(rows, (rg + r) * Dp + d), S::load(qrow + d), a0);
              a1 = S::fma(load_ref<T>(rows, (rg + r) * Dp + d + W), S::load(qrow + d + W), a1);
            }
            if (d < Dp) a0 = S::fma(load_ref<T>(rows, (rg + r) * Dp + d), S::load(qrow + d), a0);
            acc[r] = S::add(a0, a1);
          }
        } else {
          for (int i = 0; i < W; ++i) acc[i] = S::zero();
          for (int64_t d = 0; d < Dp; d += W) {
            V qv[QB];
            for (int j = 0; j < QB; ++j) qv[j] = S::load(qrow + j * Dp + d);
            for (int r = 0; r < RB; ++r) {
              const V rv = load_ref<T>(rows, (rg + r) * Dp + d);
              for (int j = 0; j < QB; ++j) acc[r * QB + j] = S::fma(rv, qv[j], acc[r * QB + j]);
            }
          }
        }
        const V s = S::reduce(acc);
        st.bad = S::fma(s, zero, st.bad);
        uint32_t lanes = S::passes(s, S::load(thr)) & qlanes;
        if (count - rg < RB) lanes &= low_lanes((count - rg) * QB);
        if (!lanes) continue;
        S::store(sc, s);
        while (lanes) {
          const int lane = __builtin_ctz(lanes);
          lanes &= lanes - 1;
          const int r = lane / QB, j = lane % QB;
          const int64_t q = qg + j, index = st.ids ? st.ids[rg + r] : n0 + rg + r;
          if (st.p.exclude && st.p.exclude[q] == index) continue;
          // Lanes of one reference come before the next reference's: index order holds.
          const float t1 = offer(st.hs + q * k, st.hi + q * k, st.hn + q, k, sc[lane], index);
          for (int rr = 0; rr < RB; ++rr) thr[rr * QB + j] = t1;
        }
      }
    }
  }

  template <int QB, class T>
  static ScanStatus few(const Problem& p, const Heaps& h, int threads) {
    constexpr int RB = W / QB;
    const int64_t Q = p.Q, N = p.N, D = p.D, k = p.k;
    const int64_t Dp = round_up(D, W), Qp = round_up(Q, QB);
    Scratch queries(Qp * Dp);
    for (int64_t q = 0; q < Q; ++q) std::memcpy(queries.get() + q * Dp, p.q + q * D, D * 4);
    // References per block: about 16 KiB of float32 (stays in L1 across query groups).
    const int64_t block = std::max<int64_t>(RB, (16384 / (Dp * 4)) / RB * RB);
    const int64_t blocks = (N + block - 1) / block;
    const size_t elem = sizeof(T);
    std::atomic<bool> finite{true}, overflow{false};

#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      Scratch buffer(block * Dp);
      FewState st{p,
                  queries.get(),
                  Qp,
                  Dp,
                  h.scores + t * Q * k,
                  h.indices + t * Q * k,
                  h.sizes + t * Q,
                  S::zero(),
                  nullptr};
      const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
      for (int64_t b = b0; b < b1 && finite.load(std::memory_order_relaxed); ++b) {
        const int64_t n0 = b * block, count = std::min(block, N - n0);
        const char* rows = static_cast<const char*>(p.refs) + n0 * D * elem;
        if (QB == 1 && D == Dp && count == block) {
          few_block<QB, T>(st, rows, count, n0);
        } else {
          // Several query groups re-read the block: copy (convert) it once, front to back,
          // into an L1-sized buffer.
          float* dst = buffer.get();
          for (int64_t r = 0; r < count; ++r) to_float<T>(rows + r * D * elem, D, dst + r * Dp);
          std::memset(dst + count * Dp, 0, (block - count) * Dp * 4);
          few_block<QB, float>(st, dst, count, n0);
        }
        if (S::any_nan(st.bad)) {
          if (check_rows<T>(rows, count * D))
            overflow.store(true);
          else
            finite.store(false);
          st.bad = S::zero();
        }
      }
    }
    return status(finite.load(), overflow.load());
  }

  static ScanStatus status(bool finite, bool overflow) {
    return !finite ? ScanStatus::NonFinite : (overflow ? ScanStatus::Overflow : ScanStatus::Ok);
  }

  // ---- Many queries: threads split the queries. ------------------------------------------
  // Queries are packed in panels of NQ = 2W ([d][NQ]); a register tile is MR references x
  // NQ queries, each reference value broadcast from its row (no reference packing).
  static constexpr int MR = S::MR;
  static constexpr int NQ = 2 * W;

  static void tile(const float* panel, const float* rows, int64_t D, V (&acc)[MR][2]) {
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = S::zero();
    for (int64_t d = 0; d < D; ++d) {
      const V q0 = S::load(panel + d * NQ), q1 = S::load(panel + d * NQ + W);
      for (int m = 0; m < MR; ++m) {
        const V b = S::set1(rows[m * D + d]);
        acc[m][0] = S::fma(b, q0, acc[m][0]);
        acc[m][1] = S::fma(b, q1, acc[m][1]);
      }
    }
  }

  template <class T>
  static ScanStatus many(const Problem& p, const Heaps& h, int threads) {
    const int64_t Q = p.Q, N = p.N, D = p.D, k = p.k;
    const int64_t panels = (Q + NQ - 1) / NQ;
    Scratch thresholds(panels * NQ);
    for (int64_t i = 0; i < panels * NQ; ++i) thresholds.get()[i] = nan_value();
    // References per tile: about 256 KiB of float32 (stays in L2 across the panels).
    const int64_t tile_refs = std::max<int64_t>(MR, (262144 / (D * 4)) / MR * MR);
    // Panels packed at a time per thread: about 4 MiB.
    const int64_t panel_block = std::max<int64_t>(1, (4 << 20) / (D * NQ * 4));
    const size_t elem = sizeof(T);
    const int nthreads = static_cast<int>(std::min<int64_t>(threads, panels));
    std::atomic<bool> finite{true}, overflow{false};

#pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t p0 = panels * t / nt, p1 = panels * (t + 1) / nt;
      const int64_t my_block = std::min(panel_block, std::max<int64_t>(p1 - p0, 1));
      Scratch packed(my_block * D * NQ);
      Scratch buffer(tile_refs * D);
      alignas(64) float sc[NQ];
      V acc[MR][2];
      for (int64_t pb = p0; pb < p1 && finite.load(std::memory_order_relaxed); pb += my_block) {
        const int64_t pe = std::min(pb + my_block, p1);
        for (int64_t pi = pb; pi < pe; ++pi) {
          float* panel = packed.get() + (pi - pb) * D * NQ;
          for (int l = 0; l < NQ; ++l) {
            const int64_t q = pi * NQ + l;
            for (int64_t d = 0; d < D; ++d) panel[d * NQ + l] = q < Q ? p.q[q * D + d] : 0.0f;
          }
        }
        for (int64_t n0 = 0; n0 < N; n0 += tile_refs) {
          const int64_t count = std::min(tile_refs, N - n0);
          const int64_t padded = round_up(count, MR);
          const float* rows;
          if (std::is_same_v<T, float> && padded == count) {
            rows = static_cast<const float*>(p.refs) + n0 * D;
          } else {
            to_float<T>(static_cast<const char*>(p.refs) + n0 * D * elem, count * D, buffer.get());
            std::memset(buffer.get() + count * D, 0, (padded - count) * D * 4);
            rows = buffer.get();
          }
          V bad = S::zero();  // see check_rows()
          const V zero = S::zero();
          for (int64_t pi = pb; pi < pe; ++pi) {
            const float* panel = packed.get() + (pi - pb) * D * NQ;
            float* thr = thresholds.get() + pi * NQ;
            const uint32_t valid = low_lanes(Q - pi * NQ);
            const uint32_t valid0 = valid & low_lanes(W), valid1 = valid >> W;
            V t0 = S::load(thr), t1 = S::load(thr + W);
            for (int64_t g = 0; g < padded; g += MR) {
              tile(panel, rows + g * D, D, acc);
              const int live = static_cast<int>(std::min<int64_t>(MR, count - g));
              for (int m = 0; m < live; ++m) {
                bad = S::fma(acc[m][0], zero, bad);
                bad = S::fma(acc[m][1], zero, bad);
              }
              for (int m = 0; m < live; ++m) {
                uint32_t lanes = (S::passes(acc[m][0], t0) & valid0) |
                                 ((S::passes(acc[m][1], t1) & valid1) << W);
                if (!lanes) continue;
                S::store(sc, acc[m][0]);
                S::store(sc + W, acc[m][1]);
                const int64_t index = n0 + g + m;
                while (lanes) {
                  const int lane = __builtin_ctz(lanes);
                  lanes &= lanes - 1;
                  const int64_t q = pi * NQ + lane;
                  if (p.exclude && p.exclude[q] == index) continue;
                  thr[lane] =
                      offer(h.scores + q * k, h.indices + q * k, h.sizes + q, k, sc[lane], index);
                }
                t0 = S::load(thr);
                t1 = S::load(thr + W);
              }
            }
          }
          if (S::any_nan(bad)) {
            if (!all_finite(rows, count * D)) {
              finite.store(false);
              break;
            }
            overflow.store(true);
          }
        }
      }
    }
    return status(finite.load(), overflow.load());
  }

  template <class T>
  static ScanStatus few_typed(const Problem& p, const Heaps& h, int threads) {
    if (p.Q == 1) return few<1, T>(p, h, threads);
    if (p.Q == 2) return few<2, T>(p, h, threads);
    return few<4, T>(p, h, threads);
  }

  // ---- Screened search (knn_dot_screened): an integer pass bounds every score, then the
  // few rows whose bounds reach the k-th best lower bound are scored exactly. ------------
  // Per row lane values of a W-lane tile: lane r * QB + j holds values[rg + r].
  template <int QB>
  static V row_lanes(const float* values, int64_t rg) {
    if constexpr (QB == 1) {
      return S::load(values + rg);
    } else {
      alignas(64) float lanes[W];
      for (int r = 0; r < W / QB; ++r)
        for (int j = 0; j < QB; ++j) lanes[r * QB + j] = values[rg + r];
      return S::load(lanes);
    }
  }

  // How far ahead of the codes being read the screening pass prefetches (bytes): the
  // hardware prefetchers stop at 4 KiB page boundaries and fall behind a pass that spends
  // so few cycles per byte (prefetches never fault, also past the end of the codes).
  static constexpr int64_t kCodeAhead = 4096;

  // Lane r * QB + j of the result: the screened score of row rg + r for query qg + j,
  // (<query codes, row codes> summed exactly in int32) * query scale * row scale.
  template <int QB>
  static V screen_score(const Screen& sc, const QueryCodes& qc, int64_t qg, V qscale, int64_t rg) {
    constexpr int RB = W / QB;
    const int64_t Sp = sc.stride;
    const V zero = S::zero();
    if constexpr (S::kByteQuery) {
      // Byte codes biased by +128: subtract 128 * (sum of the row's codes). Integer sums
      // are exact in any order.
      const uint8_t* qrow = qc.bytes + qg * Sp;
      typename S::I acc[W];
      alignas(64) int32_t sums[W];
      if constexpr (QB == 1) {
        // Two accumulators per row halve the dependency chain.
        for (int r = 0; r < RB; ++r) {
          const int8_t* row = sc.codes + (rg + r) * Sp;
          typename S::I a0 = S::izero(), a1 = S::izero();
          int64_t d = 0;
          for (; d + 128 <= Sp; d += 128) {
            __builtin_prefetch(row + d + kCodeAhead);
            __builtin_prefetch(row + d + 64 + kCodeAhead);
            a0 = S::dpbusd(a0, qrow + d, row + d);
            a1 = S::dpbusd(a1, qrow + d + 64, row + d + 64);
          }
          if (d < Sp) {
            __builtin_prefetch(row + d + kCodeAhead);
            a0 = S::dpbusd(a0, qrow + d, row + d);
          }
          acc[r] = S::iadd(a0, a1);
          sums[r] = sc.sums[rg + r];
        }
      } else {
        // Each 64 codes of a row, read once, meet the QB queries.
        for (int i = 0; i < W; ++i) acc[i] = S::izero();
        for (int64_t d = 0; d < Sp; d += 64) {
          for (int r = 0; r < RB; ++r) {
            const int8_t* row = sc.codes + (rg + r) * Sp + d;
            __builtin_prefetch(row + kCodeAhead);
            for (int j = 0; j < QB; ++j)
              acc[r * QB + j] = S::dpbusd(acc[r * QB + j], qrow + j * Sp + d, row);
          }
        }
        for (int r = 0; r < RB; ++r)
          for (int j = 0; j < QB; ++j) sums[r * QB + j] = sc.sums[rg + r];
      }
      const V total = S::to_float(S::unbias(S::ireduce(acc), S::iload(sums)));
      return S::fma(total, S::fma(qscale, row_lanes<QB>(sc.scales, rg), zero), zero);
    } else {
      V acc[W];
      const int16_t* qrow = qc.codes + qg * Sp;
      if constexpr (QB == 1) {
        for (int r = 0; r < RB; ++r) {
          const int8_t* row = sc.codes + (rg + r) * Sp;
          typename S::I a0 = S::izero(), a1 = S::izero();
          for (int64_t d = 0; d < Sp; d += 4 * W) {
            __builtin_prefetch(row + d + kCodeAhead);
            a0 = S::madd(a0, S::widen_i8(row + d), S::load_i16(qrow + d));
            a1 = S::madd(a1, S::widen_i8(row + d + 2 * W), S::load_i16(qrow + d + 2 * W));
          }
          acc[r] = S::add(S::to_float(a0), S::to_float(a1));
        }
      } else {
        typename S::I ia[W];
        for (int i = 0; i < W; ++i) ia[i] = S::izero();
        for (int64_t d = 0; d < Sp; d += 2 * W) {
          typename S::H qv[QB];
          for (int j = 0; j < QB; ++j) qv[j] = S::load_i16(qrow + j * Sp + d);
          for (int r = 0; r < RB; ++r) {
            __builtin_prefetch(sc.codes + (rg + r) * Sp + d + kCodeAhead);
            const auto rv = S::widen_i8(sc.codes + (rg + r) * Sp + d);
            for (int j = 0; j < QB; ++j) ia[r * QB + j] = S::madd(ia[r * QB + j], rv, qv[j]);
          }
        }
        for (int i = 0; i < W; ++i) acc[i] = S::to_float(ia[i]);
      }
      return S::fma(S::reduce(acc), S::fma(qscale, row_lanes<QB>(sc.scales, rg), zero), zero);
    }
  }

  template <int QB>
  static void screen_block(const Problem& p, const Screen& sc, const QueryCodes& qc, const Heaps& h,
                           Candidates* lists, int64_t n0, int64_t n1) {
    constexpr int RB = W / QB;
    const int64_t Q = p.Q, k = p.k;
    const float inf = std::numeric_limits<float>::infinity();
    alignas(64) float heap_thr[W];  // the heap's threshold: NaN while not full
    alignas(64) float keep_thr[W];  // the same, -inf while not full
    alignas(64) float scale[W], coef_a[W], coef_e[W], lo[W], hi[W];
    const V zero = S::zero(), minus = S::set1(-1.0f), tiny = S::set1(qc.tiny);
    for (int64_t qg = 0; qg < round_up(Q, QB); qg += QB) {
      uint32_t qlanes = 0;
      for (int j = 0; j < QB; ++j) {
        const int64_t q = std::min(qg + j, Q - 1);
        const float t0 = h.sizes[q] < k ? nan_value() : h.scores[q * k];
        for (int r = 0; r < RB; ++r) {
          heap_thr[r * QB + j] = t0;
          keep_thr[r * QB + j] = t0 == t0 ? t0 : -inf;
          scale[r * QB + j] = qc.scales[q];
          coef_a[r * QB + j] = qc.code_norms[q];
          coef_e[r * QB + j] = qc.errors[q];
          if (qg + j < Q) qlanes |= 1u << (r * QB + j);
        }
      }
      const V qs = S::load(scale), ca = S::load(coef_a), ce = S::load(coef_e);
      for (int64_t rg = n0; rg < n1; rg += RB) {
        const V a = screen_score<QB>(sc, qc, qg, qs, rg);
        const V b =
            S::fma(ca, row_lanes<QB>(sc.slacks, rg), S::fma(ce, row_lanes<QB>(sc.norms, rg), tiny));
        const V upper = S::add(a, b);
        // upper >= keep_thr: not (keep_thr > upper)
        uint32_t lanes = ~S::passes(S::load(keep_thr), upper) & qlanes;
        if (n1 - rg < RB) lanes &= low_lanes((n1 - rg) * QB);
        if (!lanes) continue;
        S::store(hi, upper);
        S::store(lo, S::fma(b, minus, a));
        while (lanes) {
          const int lane = __builtin_ctz(lanes);
          lanes &= lanes - 1;
          const int r = lane / QB, j = lane % QB;
          const int64_t q = qg + j, index = rg + r;
          if (p.exclude && p.exclude[q] == index) continue;
          keep(lists[q], index, hi[lane]);
          if (!(lo[lane] <= heap_thr[lane])) {
            const float t1 =
                offer(h.scores + q * k, h.indices + q * k, h.sizes + q, k, lo[lane], index);
            for (int rr = 0; rr < RB; ++rr) {
              heap_thr[rr * QB + j] = t1;
              keep_thr[rr * QB + j] = t1 == t1 ? t1 : -inf;
            }
          }
        }
      }
    }
  }

  template <int QB>
  static void screen_qb(const Problem& p, const Screen& sc, const QueryCodes& qc, const Heaps& h,
                        Candidates* lists, int threads) {
    const int64_t Q = p.Q, N = p.N;
    // Rows per block: about 16 KiB of codes, whole tiles (L1) for the query groups to share.
    constexpr int64_t RB = W / QB;
    const int64_t block = round_up(std::max<int64_t>(1, 16384 / sc.stride), RB);
    const int64_t blocks = (N + block - 1) / block;
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const Heaps mine{h.scores + t * Q * p.k, h.indices + t * Q * p.k, h.sizes + t * Q};
      const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
      for (int64_t b = b0; b < b1; ++b)
        screen_block<QB>(p, sc, qc, mine, lists + t * Q, b * block, std::min(N, (b + 1) * block));
    }
  }

  static void screen(const Problem& p, const Screen& sc, const QueryCodes& qc, const Heaps& h,
                     Candidates* lists, int threads) {
    if (p.Q == 1) {
      screen_qb<1>(p, sc, qc, h, lists, threads);
    } else if (p.Q == 2) {
      screen_qb<2>(p, sc, qc, h, lists, threads);
    } else {
      screen_qb<4>(p, sc, qc, h, lists, threads);
    }
  }

  // Query q's exact scores against `count` rows, through few_block with the query group
  // width few_typed() picks for p.Q, so each score is the one the plain scan computes.
  template <int QB, class T>
  static ScanStatus rescore_qb(const Problem& p, int64_t q, const int64_t* rows, int64_t count,
                               float* scores, int64_t* indices, int64_t* size) {
    constexpr int RB = W / QB;
    const int64_t D = p.D, Dp = round_up(D, W), padded = round_up(count, RB);
    Scratch query(QB * Dp);
    std::memcpy(query.get(), p.q + q * D, D * 4);
    // Every value is written once (the rows, then their zero padding): no zero-fill first.
    std::unique_ptr<float[]> buffer(new float[static_cast<size_t>(padded * Dp)]);
    for (int64_t i = 0; i < count; ++i) {
      float* dst = buffer.get() + i * Dp;
      to_float<T>(static_cast<const char*>(p.refs) + rows[i] * D * sizeof(T), D, dst);
      std::memset(dst + D, 0, (Dp - D) * 4);
    }
    std::memset(buffer.get() + count * Dp, 0, (padded - count) * Dp * 4);
    const Problem one{p.q + q * D, nullptr, p.dtype, 1,
                      count,       D,       p.k,     p.exclude ? p.exclude + q : nullptr};
    FewState st{one, query.get(), QB, Dp, scores, indices, size, S::zero(), rows};
    few_block<QB, float>(st, buffer.get(), count, 0);
    if (!S::any_nan(st.bad)) return ScanStatus::Ok;
    return all_finite(buffer.get(), padded * Dp) ? ScanStatus::Overflow : ScanStatus::NonFinite;
  }

  template <class T>
  static ScanStatus rescore(const Problem& p, int64_t q, const int64_t* rows, int64_t count,
                            float* scores, int64_t* indices, int64_t* size) {
    if (p.Q == 1) return rescore_qb<1, T>(p, q, rows, count, scores, indices, size);
    if (p.Q == 2) return rescore_qb<2, T>(p, q, rows, count, scores, indices, size);
    return rescore_qb<4, T>(p, q, rows, count, scores, indices, size);
  }
};

}  // namespace
}  // namespace pyinstance::cpu::knn_detail
