// CPU triplet mining (pyinstance.ops.triplet_mine): blocked similarity tiles reduced on the
// fly into per-anchor state; no B x B similarity matrix and never B x B x B masks.
//
// The Python wrapper groups the references by label (a stable sort), so the positives of an
// anchor are order[pos_start[a]:pos_end[a]] (minus the anchor itself when mining within the
// batch), in increasing index order; positive pair q of anchor a has the global number
// pair_off[a] + q. Positive similarities that are compared with negatives come from the same
// tile kernel as the negatives' (positive_pairs); batch_hard's, compared only with each other,
// from direct dot products. Negatives stream through tiles of kBlockJ references x kBlockI anchors.
// Within the batch the similarity matrix is symmetric, so each tile above the diagonal is computed
// once and feeds both its rows and its columns (half the multiply-adds). Reductions use total
// orders (ties to the smaller index), so per-thread partial states merge into the same result for
// every thread count. The hardest-negative search (batch_hard, hard_negative) filters tiles
// against per-anchor thresholds and, on CPUs with AVX512_BF16, screens with bf16 tiles at
// twice the speed, re-scoring in float32 the few candidates the error bound cannot rule out.
#include <omp.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <unordered_set>
#include <vector>

#include "pyinstance/checks.h"
#include "pyinstance/dot_tile.h"
#include "pyinstance/threads.h"
#include "pyinstance/triplet_mine.h"

namespace py = pybind11;

namespace pyinstance::cpu {

using triplet::Output;
using triplet::Problem;
using triplet::SemihardFallback;
using triplet::Strategy;

namespace {

constexpr int64_t kBlockJ = 128;      // references per packed block
constexpr int64_t kBlockI = 48;       // anchors per tile (a multiple of every ISA's row count)
constexpr int64_t kSerialRows = 512;  // per-anchor loops below this size skip OpenMP
constexpr int64_t kWorkPerThread = int64_t{1} << 24;  // multiply-adds worth a thread

// Eight interleaved partial sums: the compiler vectorises this at the baseline ISA. Used only
// where the values are compared with each other, never with tile similarities: re-scored
// screened candidates (bf16 tiles) and batch_hard's positives.
float dot(const float* x, const float* y, int64_t dim) {
  float acc[8] = {};
  int64_t k = 0;
  for (; k + 8 <= dim; k += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[k + l] * y[k + l];
  for (; k < dim; ++k) acc[0] += x[k] * y[k];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Calls fn(q, p) for the positives of anchor a in increasing index order (q = pair rank).
template <class Fn>
void for_each_positive(const Problem& pb, int64_t a, Fn&& fn) {
  int64_t q = 0;
  for (int64_t t = pb.pos_start[a]; t < pb.pos_end[a]; ++t) {
    const int64_t p = pb.order[t];
    if (pb.same_set && p == a) continue;
    fn(q++, p);
  }
}

// Threads for one call: the bindings have already checked the range (resolve_threads).
int thread_count(int threads) { return resolve_threads(threads); }

// Every positive pair, in pair order: its positive and its similarity.
struct PositivePairs {
  std::vector<int64_t> index;
  std::vector<float> sim;
};

// Copies rows idx[0..count) of x (dim columns) into dst, one after the other.
void gather_rows(const float* x, const int64_t* idx, int64_t count, int64_t dim, float* dst) {
  for (int64_t r = 0; r < count; ++r)
    std::copy(x + idx[r] * dim, x + (idx[r] + 1) * dim, dst + r * dim);
}

// Positive pairs of every anchor, their similarities computed by the same tile kernel as the
// negatives' (dot_rows_for(active_isa()), one fixed summation order per entry): a pair's
// similarity is the same float whichever role it plays, so identical vectors tie exactly.
// Anchors with the same positive range (the same label) form a group; consecutive small
// groups share one tile (at most kDotPanel anchors and kDotPanel references), so the work
// stays proportional to the pair count and a batch of 4-image classes packs one panel per
// four classes.
PositivePairs positive_pairs(const Problem& pb, int threads) {
  const auto npairs = static_cast<size_t>(pb.pair_off[pb.na]);
  PositivePairs pairs{std::vector<int64_t>(npairs), std::vector<float>(npairs)};
  std::vector<int64_t> anchors;  // anchors with positives, grouped by positive range
  anchors.reserve(pb.na);
  for (int64_t a = 0; a < pb.na; ++a)
    if (pb.pair_off[a + 1] > pb.pair_off[a]) anchors.push_back(a);
  std::stable_sort(anchors.begin(), anchors.end(),
                   [&](int64_t x, int64_t y) { return pb.pos_start[x] < pb.pos_start[y]; });
  // Tile batches: [batch[b], batch[b + 1]) indexes `anchors`; each batch is one group, or
  // consecutive groups with at most kDotPanel anchors and kDotPanel references in all.
  std::vector<int64_t> batch;
  int64_t batch_rows = 0, batch_cols = 0;
  for (size_t g = 0; g < anchors.size(); ++g) {
    const int64_t a = anchors[g];
    const bool new_group = g == 0 || pb.pos_start[a] != pb.pos_start[anchors[g - 1]];
    const int64_t cols = new_group ? pb.pos_end[a] - pb.pos_start[a] : 0;
    if (g == 0 || (new_group && (batch_rows + 1 > kDotPanel || batch_cols + cols > kDotPanel))) {
      batch.push_back(static_cast<int64_t>(g));
      batch_rows = batch_cols = 0;
    }
    batch_rows += 1;
    batch_cols += cols;
  }
  batch.push_back(static_cast<int64_t>(anchors.size()));
  // Within the batch an anchor is one of its group's references: its rank in `order`.
  std::vector<int64_t> rank(pb.same_set ? pb.na : 0);
  for (int64_t t = 0; pb.same_set && t < pb.nr; ++t) rank[pb.order[t]] = t;
  const DotRowsFn dot_rows = dot_rows_for(active_isa());
  const int64_t dim = pb.dim, nbatches = static_cast<int64_t>(batch.size()) - 1;
#pragma omp parallel num_threads(threads) if (pb.na > kSerialRows)
  {
    std::vector<int64_t> cols;  // the batch's references, as positions in `order`
    std::vector<int64_t> col_index;
    std::vector<float> rows, refs, packed, tile;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nbatches; ++b) {
      const int64_t* members = anchors.data() + batch[b];
      const int64_t nmembers = batch[b + 1] - batch[b];
      cols.clear();
      for (int64_t m = 0; m < nmembers; ++m)
        if (m == 0 || pb.pos_start[members[m]] != pb.pos_start[members[m - 1]])
          for (int64_t t = pb.pos_start[members[m]]; t < pb.pos_end[members[m]]; ++t)
            cols.push_back(t);
      const int64_t ncols = static_cast<int64_t>(cols.size());
      const int64_t nj_max = std::min(kBlockJ, (ncols + kDotPanel - 1) / kDotPanel * kDotPanel);
      const int64_t ni_max = std::min(kBlockI, nmembers);
      rows.resize(static_cast<size_t>(ni_max * dim));
      refs.resize(static_cast<size_t>(nj_max * dim));
      packed.resize(static_cast<size_t>(nj_max * dim));
      tile.resize(static_cast<size_t>(ni_max * nj_max));
      for (int64_t j0 = 0; j0 < ncols; j0 += kBlockJ) {
        const int64_t nj = std::min(kBlockJ, ncols - j0);
        const int64_t npanels = (nj + kDotPanel - 1) / kDotPanel, ld = npanels * kDotPanel;
        col_index.resize(static_cast<size_t>(nj));
        for (int64_t c = 0; c < nj; ++c) col_index[c] = pb.order[cols[j0 + c]];
        gather_rows(pb.ref, col_index.data(), nj, dim, refs.data());
        pack_dot_panels(refs.data(), 0, nj, dim, packed.data());
        for (int64_t i0 = 0; i0 < nmembers; i0 += kBlockI) {
          const int64_t ni = std::min(kBlockI, nmembers - i0);
          gather_rows(pb.emb, members + i0, ni, dim, rows.data());
          dot_rows(rows.data(), dim, ni, packed.data(), npanels, dim, tile.data(), ld);
          for (int64_t r = 0; r < ni; ++r) {
            const int64_t a = members[i0 + r], start = pb.pos_start[a], end = pb.pos_end[a];
            for (int64_t c = 0; c < nj; ++c) {
              const int64_t t = cols[j0 + c];
              if (t < start || t >= end) continue;  // another group's reference
              // Pair rank q: the position among the anchor's positives (itself skipped).
              int64_t q = t - start;
              if (pb.same_set) {
                if (rank[a] == t) continue;
                if (rank[a] < t) --q;
              }
              pairs.index[pb.pair_off[a] + q] = pb.order[t];
              pairs.sim[pb.pair_off[a] + q] = tile[r * ld + c];
            }
          }
        }
      }
    }
  }
  return pairs;
}

// bf16 copies of the anchors and references for screening tiles (see dot_tile.h), with the
// error slack of every anchor: a screened similarity is within slack[a] of the float32 one.
struct Screen {
  int64_t pairs;
  std::vector<uint32_t> emb, ref;  // ref stays empty within the batch (same rows as emb)
  std::vector<double> slack;
  const uint32_t* ref_rows() const { return ref.empty() ? emb.data() : ref.data(); }
};

// Screened tiles stay finite and the error bound holds while every |screened partial sum|
// <= (1 + 2^-8)^2 norm_a norm_r stays far below float32's range; beyond this product of the
// largest norms (or with inputs this large, which bf16 rounding could take to infinity)
// screening steps aside and the float32 tiles run instead.
constexpr double kScreenNormProductLimit = 0x1p100;

// Screening applies when the CPU has AVX512_BF16 dot products and the magnitudes are safe.
std::unique_ptr<Screen> make_screen(const Problem& pb) {
  if (!bf16_dot_active()) return nullptr;
  auto screen = std::make_unique<Screen>();
  const int64_t pairs = bf16_pairs(pb.dim);
  screen->pairs = pairs;
  std::vector<double> norm(pb.na), maxabs(pb.na);
  screen->emb.resize(static_cast<size_t>(pb.na * pairs));
  to_bf16_rows_avx512(pb.emb, pb.na, pb.dim, screen->emb.data(), norm.data(), maxabs.data());
  std::vector<double> other_norm, other_maxabs;  // the references', when not the batch
  if (!pb.same_set) {
    other_norm.resize(pb.nr);
    other_maxabs.resize(pb.nr);
    screen->ref.resize(static_cast<size_t>(pb.nr * pairs));
    to_bf16_rows_avx512(pb.ref, pb.nr, pb.dim, screen->ref.data(), other_norm.data(),
                        other_maxabs.data());
  }
  const std::vector<double>& ref_norm = pb.same_set ? norm : other_norm;
  const std::vector<double>& ref_maxabs = pb.same_set ? maxabs : other_maxabs;
  const double r_norm = *std::max_element(ref_norm.begin(), ref_norm.end());
  const double r_maxabs = *std::max_element(ref_maxabs.begin(), ref_maxabs.end());
  const double a_norm = *std::max_element(norm.begin(), norm.end());
  if (!(a_norm * r_norm <= kScreenNormProductLimit)) return nullptr;
  screen->slack.resize(pb.na);
  for (int64_t a = 0; a < pb.na; ++a)
    screen->slack[a] = bf16_dot_error_bound(pb.dim, norm[a], r_norm, maxabs[a], r_maxabs);
  return screen;
}

// A block of similarities: anchors i0 + r (r < ni) against references j0 + c (c < nj) at
// s[r * ld + c]; symmetric tiles (within the batch) only count entries with i0 + r < j0 + c.
struct Tile {
  const float* s;
  int64_t ld, i0, ni, j0, nj;
  bool symmetric;
};

// Streams every (anchor, negative) similarity through per-thread consumers, one
// consumer.consume(tile) per tile. Consumers filter out same-label references themselves.
// With a screen, tiles hold bf16 screening values instead of float32 similarities.
template <class Consumer>
void sweep_negatives(const Problem& pb, std::vector<Consumer>& consumers, const Screen* screen) {
  const bool symmetric = pb.same_set;
  const int64_t nblocks = (pb.nr + kBlockJ - 1) / kBlockJ;
  const DotRowsFn dot_rows = dot_rows_for(active_isa());
  const int64_t dim = pb.dim;
#pragma omp parallel num_threads(static_cast<int>(consumers.size()))
  {
    Consumer& consumer = consumers[omp_get_thread_num()];
    std::vector<float> packed(screen ? 0 : static_cast<size_t>(kBlockJ * dim));
    std::vector<uint32_t> packed_bf16(screen ? static_cast<size_t>(kBlockJ * screen->pairs) : 0);
    std::vector<float> tile(static_cast<size_t>(kBlockI * kBlockJ));
#pragma omp for schedule(dynamic, 1)
    for (int64_t step = 0; step < nblocks; ++step) {
      // Symmetric blocks grow with their index: hand out the big ones first.
      const int64_t block = symmetric ? nblocks - 1 - step : step;
      const int64_t j0 = block * kBlockJ;
      const int64_t nj = std::min(kBlockJ, pb.nr - j0);
      const int64_t npanels = (nj + kDotPanel - 1) / kDotPanel;
      const int64_t ld = npanels * kDotPanel;
      if (screen)
        pack_bf16_panels(screen->ref_rows(), j0, nj, screen->pairs, packed_bf16.data());
      else
        pack_dot_panels(pb.ref, j0, nj, dim, packed.data());
      const int64_t iend = symmetric ? j0 + nj : pb.na;
      for (int64_t i0 = 0; i0 < iend; i0 += kBlockI) {
        const int64_t ni = std::min(kBlockI, iend - i0);
        // Symmetric tiles on the diagonal skip the panels left of column i0 - j0 + 1: no
        // consumer reads them (they hold entries with i >= j).
        const int64_t q0 = symmetric ? std::max<int64_t>(0, (i0 - j0 + 1) / kDotPanel) : 0;
        float* out = tile.data() + q0 * kDotPanel;
        if (screen)
          dot_rows_bf16_avx512(screen->emb.data() + i0 * screen->pairs, screen->pairs, ni,
                               packed_bf16.data() + q0 * screen->pairs * kDotPanel, npanels - q0,
                               screen->pairs, out, ld);
        else
          dot_rows(pb.emb + i0 * dim, dim, ni, packed.data() + q0 * dim * kDotPanel, npanels - q0,
                   dim, out, ld);
        consumer.consume(Tile{tile.data(), ld, i0, ni, j0, nj, symmetric});
      }
    }
  }
}

// Offers a tile to consumer.row(i, sims, j0, count) (references j0.. for anchor i) and, in
// symmetric tiles, consumer.col(j, sims, stride, i0, count) (batch rows i0.. for anchor j).
template <class Consumer>
void offer_rows_and_cols(Consumer& consumer, const Tile& t) {
  for (int64_t r = 0; r < t.ni; ++r) {
    const int64_t i = t.i0 + r;
    const int64_t js = t.symmetric ? std::max(t.j0, i + 1) : t.j0;
    if (js < t.j0 + t.nj) consumer.row(i, t.s + r * t.ld + (js - t.j0), js, t.j0 + t.nj - js);
  }
  if (!t.symmetric) return;
  for (int64_t c = 0; c < t.nj; ++c) {
    const int64_t j = t.j0 + c;
    const int64_t ie = std::min(t.i0 + t.ni, j);
    if (ie > t.i0) consumer.col(j, t.s + c, t.ld, t.i0, ie - t.i0);
  }
}

// Per-thread state shapes share this base: the labels of both sides.
struct LabelView {
  const int64_t* labels;
  const int64_t* ref_labels;
};

// The largest float not above best - slack: no similarity below it can beat `best`.
float lower_threshold(float best, double slack) {
  const double t = static_cast<double>(best) - slack;
  const float f = static_cast<float>(t);
  return static_cast<double>(f) > t ? std::nextafter(f, -std::numeric_limits<float>::infinity())
                                    : f;
}

// Labels as int32 groups for the tile filter: a reference's group is the start of its
// label's run in the sorted order, an anchor's the start of its positives' run (-1 when no
// reference shares its label).
struct LabelGroups {
  std::vector<int32_t> anchor, ref;
};

LabelGroups label_groups(const Problem& pb) {
  PYI_CHECK(pb.nr < (int64_t{1} << 31), "triplet_mine: at most 2^31 - 1 references, got ", pb.nr);
  LabelGroups g{std::vector<int32_t>(pb.na), std::vector<int32_t>(pb.nr)};
  int32_t run = 0;
  for (int64_t t = 0; t < pb.nr; ++t) {
    if (t == 0 || pb.ref_labels[pb.order[t]] != pb.ref_labels[pb.order[t - 1]])
      run = static_cast<int32_t>(t);
    g.ref[pb.order[t]] = run;
  }
  for (int64_t a = 0; a < pb.na; ++a)
    g.anchor[a] = pb.pos_end[a] > pb.pos_start[a] ? static_cast<int32_t>(pb.pos_start[a]) : -1;
  return g;
}

// Hardest negative per anchor (batch_hard, hard_negative). Each anchor keeps a threshold
// below which no similarity can change its choice (its best so far, less the screening
// slack). Per tile, a vectorised filter finds the largest negative of every row and column
// and passes only the entries that could beat both it and the thresholds: about one per
// row and column. Screened hits are re-scored in float32 before they are offered.
struct HardestNegative {
  const Problem& pb;
  const LabelGroups& groups;
  const Screen* screen;
  TileFilterFns filter;
  std::vector<float> value, threshold;
  std::vector<int64_t> index;
  std::vector<float> row_max, col_max, row_thr, col_thr;
  std::vector<uint32_t> hits;
  HardestNegative(const Problem& pb, const LabelGroups& groups, const Screen* screen)
      : pb(pb),
        groups(groups),
        screen(screen),
        filter(tile_filter_for(active_isa())),
        value(pb.na, 0.0f),
        threshold(pb.na, -std::numeric_limits<float>::infinity()),
        index(pb.na, -1),
        row_max(kBlockI),
        col_max(kBlockJ),
        row_thr(kBlockI),
        col_thr(kBlockJ),
        hits(static_cast<size_t>(kBlockI * kBlockJ)) {}
  double slack(int64_t a) const { return screen ? screen->slack[a] : 0.0; }
  void offer(int64_t a, float s, int64_t j) {
    triplet::offer_hardest(value[a], index[a], s, j);
    threshold[a] = lower_threshold(value[a], slack(a));
  }
  // The bar for anchor a in this tile: its threshold, and the tile's largest negative m for
  // it (whose float32 value is at least m - slack, which beats anything below m - 2 slack).
  float bar(int64_t a, float tile_max) const {
    return std::max(threshold[a], lower_threshold(tile_max, 2 * slack(a)));
  }
  void consume(const Tile& t) {
    const int64_t diag = t.symmetric ? t.i0 - t.j0 : -t.ni;
    const int32_t* rg = groups.anchor.data() + t.i0;
    const int32_t* cg = groups.ref.data() + t.j0;
    filter.max(t.s, t.ld, t.ni, t.nj, diag, rg, cg, row_max.data(),
               t.symmetric ? col_max.data() : nullptr);
    for (int64_t r = 0; r < t.ni; ++r) row_thr[r] = bar(t.i0 + r, row_max[r]);
    if (t.symmetric)
      for (int64_t c = 0; c < t.nj; ++c) col_thr[c] = bar(t.j0 + c, col_max[c]);
    const int64_t n = filter.hits(t.s, t.ld, t.ni, t.nj, diag, rg, cg, row_thr.data(),
                                  t.symmetric ? col_thr.data() : nullptr, hits.data());
    for (int64_t h = 0; h < n; ++h) {
      const int64_t r = hits[h] >> 16, c = hits[h] & 0xffff;
      const int64_t i = t.i0 + r, j = t.j0 + c;
      // Thresholds rise while the hits are offered: later hits often no longer pass.
      const float v = t.s[r * t.ld + c];
      const bool row_passes = !(v < row_thr[r]) && !(v < threshold[i]);
      const bool col_passes = t.symmetric && !(v < col_thr[c]) && !(v < threshold[j]);
      if (!row_passes && !col_passes) continue;
      const float s = screen ? dot(pb.emb + i * pb.dim, pb.ref + j * pb.dim, pb.dim) : v;
      if (row_passes) offer(i, s, j);
      if (col_passes) offer(j, s, i);
    }
  }
  void merge(const HardestNegative& other, int64_t a) {
    if (other.index[a] >= 0)
      triplet::offer_hardest(value[a], index[a], other.value[a], other.index[a]);
  }
};

// Semi-hard negative per positive pair, plus the easiest negative per anchor (fallback).
// A candidate can only change pair q if it lies in [best[q], s_ap[q]); one window
// [min_q best[q], max_q s_ap[q]) per anchor rejects almost every candidate with two
// predictable comparisons, and only candidates inside it visit the pairs.
struct SemiHard : LabelView {
  const int64_t* pair_off;
  const float* pos_sim;
  std::vector<float> value, easy_value, window_hi;
  std::vector<int64_t> index, easy_index;
  SemiHard(const Problem& pb, const float* pos_sim)
      : LabelView{pb.labels, pb.ref_labels},
        pair_off(pb.pair_off),
        pos_sim(pos_sim),
        value(pb.pair_off[pb.na], -std::numeric_limits<float>::infinity()),
        easy_value(pb.na, std::numeric_limits<float>::infinity()),
        window_hi(pb.na, -std::numeric_limits<float>::infinity()),
        index(pb.pair_off[pb.na], -1),
        easy_index(pb.na, -1) {
    for (int64_t a = 0; a < pb.na; ++a)
      for (int64_t q = pair_off[a]; q < pair_off[a + 1]; ++q)
        window_hi[a] = std::max(window_hi[a], pos_sim[q]);
  }
  float window_lo(int64_t a) const {
    float lo = std::numeric_limits<float>::infinity();
    for (int64_t q = pair_off[a]; q < pair_off[a + 1]; ++q) lo = std::min(lo, value[q]);
    return lo;
  }
  // Offers candidates (s[t * stride], j0 + t) with labels ls[t] to anchor a.
  void offer(int64_t a, const float* s, int64_t stride, int64_t j0, const int64_t* ls,
             int64_t count) {
    const int64_t la = labels[a];
    const float hi = window_hi[a];
    float lo = window_lo(a);
    float easy = easy_value[a];
    int64_t easy_j = easy_index[a];
    for (int64_t t = 0; t < count; ++t) {
      const float v = s[t * stride];
      if (ls[t] == la) continue;
      if (v <= easy) triplet::offer_easiest(easy, easy_j, v, j0 + t);
      if (v >= lo && v < hi) {
        for (int64_t q = pair_off[a]; q < pair_off[a + 1]; ++q)
          triplet::offer_semihard(pos_sim[q], value[q], index[q], v, j0 + t);
        lo = window_lo(a);
      }
    }
    easy_value[a] = easy;
    easy_index[a] = easy_j;
  }
  void consume(const Tile& t) { offer_rows_and_cols(*this, t); }
  void row(int64_t i, const float* s, int64_t j0, int64_t count) {
    offer(i, s, 1, j0, ref_labels + j0, count);
  }
  void col(int64_t j, const float* s, int64_t stride, int64_t i0, int64_t count) {
    offer(j, s, stride, i0, labels + i0, count);
  }
  void merge(const SemiHard& other, int64_t a) {
    if (other.easy_index[a] >= 0)
      triplet::offer_easiest(easy_value[a], easy_index[a], other.easy_value[a],
                             other.easy_index[a]);
    for (int64_t q = pair_off[a]; q < pair_off[a + 1]; ++q)
      if (other.index[q] >= 0)
        triplet::offer_hardest(value[q], index[q], other.value[q], other.index[q]);
  }
};

// Number of violating negatives per positive pair (batch_all, first pass).
struct ViolationCount : LabelView {
  const int64_t* pair_off;
  const float* pos_sim;
  float margin;
  std::vector<int64_t> count;
  ViolationCount(const Problem& pb, const float* pos_sim, float margin)
      : LabelView{pb.labels, pb.ref_labels},
        pair_off(pb.pair_off),
        pos_sim(pos_sim),
        margin(margin),
        count(pb.pair_off[pb.na], 0) {}
  void offer(int64_t a, const float* s, int64_t stride, const int64_t* ls, int64_t n) {
    const int64_t la = labels[a];
    for (int64_t q = pair_off[a]; q < pair_off[a + 1]; ++q) {
      const float s_ap = pos_sim[q];
      int64_t c = 0;
      for (int64_t t = 0; t < n; ++t)
        c += (ls[t] != la && triplet::violates(s_ap, s[t * stride], margin)) ? 1 : 0;
      count[q] += c;
    }
  }
  void consume(const Tile& t) { offer_rows_and_cols(*this, t); }
  void row(int64_t i, const float* s, int64_t j0, int64_t n) { offer(i, s, 1, ref_labels + j0, n); }
  void col(int64_t j, const float* s, int64_t stride, int64_t i0, int64_t n) {
    offer(j, s, stride, labels + i0, n);
  }
  void merge(const ViolationCount& other, int64_t a) {
    for (int64_t q = pair_off[a]; q < pair_off[a + 1]; ++q) count[q] += other.count[q];
  }
};

// The m hardest negatives per anchor, best first (offline mining).
struct TopNegatives : LabelView {
  int64_t m;
  std::vector<float> value;
  std::vector<int64_t> index, size;
  TopNegatives(const Problem& pb, int64_t m)
      : LabelView{pb.labels, pb.ref_labels},
        m(m),
        value(pb.na * m, 0.0f),
        index(pb.na * m, -1),
        size(pb.na, 0) {}
  void offer(int64_t a, float s, int64_t j) {
    topk_offer(value.data() + a * m, index.data() + a * m, size[a], m, s, j);
  }
  void consume(const Tile& t) { offer_rows_and_cols(*this, t); }
  void row(int64_t i, const float* s, int64_t j0, int64_t n) {
    const int64_t li = labels[i];
    float* v = value.data() + i * m;
    int64_t* x = index.data() + i * m;
    for (int64_t t = 0; t < n; ++t) {
      if (ref_labels[j0 + t] == li || !topk_admits(v, x, size[i], m, s[t], j0 + t)) continue;
      topk_offer(v, x, size[i], m, s[t], j0 + t);
    }
  }
  void col(int64_t j, const float* s, int64_t stride, int64_t i0, int64_t n) {
    const int64_t lj = labels[j];
    for (int64_t t = 0; t < n; ++t)
      if (labels[i0 + t] != lj) offer(j, s[t * stride], i0 + t);
  }
  void merge(const TopNegatives& other, int64_t a) {
    for (int64_t t = 0; t < other.size[a]; ++t)
      offer(a, other.value[a * m + t], other.index[a * m + t]);
  }
};

// Runs the sweep (screened when `screen` is given) with one state per thread and merges them
// into the first.
template <class State, class... Args>
State reduce_negatives(const Problem& pb, int threads, const Screen* screen, const Args&... args) {
  std::vector<State> states;
  // Below ~kWorkPerThread multiply-adds per thread, waking threads costs more than it saves.
  const int64_t work = pb.na * pb.nr * pb.dim / (pb.same_set ? 2 : 1);
  const int64_t useful =
      std::min<int64_t>((pb.nr + kBlockJ - 1) / kBlockJ, 1 + work / kWorkPerThread);
  const int n =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(thread_count(threads), useful)));
  states.reserve(n);
  for (int t = 0; t < n; ++t) states.emplace_back(pb, args...);
  sweep_negatives(pb, states, screen);
  State& first = states[0];
  if (n > 1) {
#pragma omp parallel for schedule(static) num_threads(n) if (pb.na > kSerialRows)
    for (int64_t a = 0; a < pb.na; ++a)
      for (int t = 1; t < n; ++t) first.merge(states[t], a);
  }
  return std::move(first);
}

// Hardest negative of every anchor (-1: none), on screening tiles where the CPU has them.
std::vector<int64_t> hardest_negatives(const Problem& pb, int threads) {
  const std::unique_ptr<Screen> screen = make_screen(pb);
  const LabelGroups groups = label_groups(pb);
  return reduce_negatives<HardestNegative>(pb, threads, screen.get(), groups, screen.get()).index;
}

// batch_hard: slot a holds (a, hardest positive, hardest negative) or anchor -1. The hardest
// positive is compared only with the anchor's other positives, never with a negative, so its
// similarities need not come from the negatives' tile kernel (positive_pairs): dot() has one
// fixed summation order and is symmetric in its arguments, so identical positives still tie
// exactly, without the grouping, gathering and packing of positive tiles.
void mine_batch_hard(const Problem& pb, const Output& out, int threads) {
  const std::vector<int64_t> hardest = hardest_negatives(pb, threads);
#pragma omp parallel for schedule(dynamic, 64) \
    num_threads(thread_count(threads)) if (pb.na > kSerialRows)
  for (int64_t a = 0; a < pb.na; ++a) {
    float best = 0.0f;
    int64_t best_index = -1;
    for_each_positive(pb, a, [&](int64_t, int64_t p) {
      triplet::offer_easiest(best, best_index,
                             dot(pb.emb + a * pb.dim, pb.ref + p * pb.dim, pb.dim), p);
    });
    if (best_index >= 0 && hardest[a] >= 0)
      out.put(a, a, best_index, hardest[a]);
    else
      out.put(a, -1, -1, -1);
  }
}

// hard_negative / semihard: slot q (pair number) holds (a, p, n) or anchor -1.
void mine_pairs(const Problem& pb, Strategy strategy, SemihardFallback fallback, const Output& out,
                int threads) {
  if (strategy == Strategy::HardNegative) {
    const std::vector<int64_t> hardest = hardest_negatives(pb, threads);
#pragma omp parallel for schedule(dynamic, 64) \
    num_threads(thread_count(threads)) if (pb.na > kSerialRows)
    for (int64_t a = 0; a < pb.na; ++a)
      for_each_positive(pb, a, [&](int64_t q, int64_t p) {
        const int64_t n = hardest[a];
        out.put(pb.pair_off[a] + q, n >= 0 ? a : -1, p, n);
      });
    return;
  }
  const PositivePairs pairs = positive_pairs(pb, thread_count(threads));
  const SemiHard semi = reduce_negatives<SemiHard>(pb, threads, nullptr, pairs.sim.data());
#pragma omp parallel for schedule(dynamic, 64) \
    num_threads(thread_count(threads)) if (pb.na > kSerialRows)
  for (int64_t a = 0; a < pb.na; ++a)
    for_each_positive(pb, a, [&](int64_t q, int64_t p) {
      const int64_t slot = pb.pair_off[a] + q;
      int64_t n = semi.index[slot];
      if (n < 0 && fallback == SemihardFallback::Easiest) n = semi.easy_index[a];
      out.put(slot, n >= 0 ? a : -1, p, n);
    });
}

// offline: slots a * n_triplets .. hold the anchor's best combinations, the rest anchor -1.
void mine_offline(const Problem& pb, int64_t n_pos, int64_t n_neg, int64_t n_triplets,
                  const Output& out, int threads) {
  const TopNegatives neg = reduce_negatives<TopNegatives>(pb, threads, nullptr, n_neg);
  const PositivePairs pairs = positive_pairs(pb, thread_count(threads));
#pragma omp parallel num_threads(thread_count(threads))
  {
    std::vector<float> pos_value(n_pos), combo_value(n_triplets);
    std::vector<int64_t> pos_index(n_pos), combo_code(n_triplets);
#pragma omp for schedule(dynamic, 64)
    for (int64_t a = 0; a < pb.na; ++a) {
      int64_t npos = 0;
      for (int64_t q = pb.pair_off[a]; q < pb.pair_off[a + 1]; ++q)
        topk_offer(pos_value.data(), pos_index.data(), npos, n_pos, pairs.sim[q], pairs.index[q]);
      // Combination code p_rank * n_neg + n_rank: ties go to the smaller code.
      int64_t ncombo = 0;
      const int64_t nneg = neg.size[a];
      for (int64_t u = 0; u < npos; ++u)
        for (int64_t v = 0; v < nneg; ++v)
          topk_offer(combo_value.data(), combo_code.data(), ncombo, n_triplets,
                     triplet::offline_score(pos_value[u], neg.value[a * n_neg + v]), u * n_neg + v);
      for (int64_t t = 0; t < n_triplets; ++t) {
        const int64_t slot = a * n_triplets + t;
        if (t < ncombo) {
          const int64_t code = combo_code[t];
          out.put(slot, a, pos_index[code / n_neg], neg.index[a * n_neg + code % n_neg]);
        } else {
          out.put(slot, -1, -1, -1);
        }
      }
    }
  }
}

// batch_all, second pass: anchors in increasing order, each streaming its references in
// increasing order, so triplet (a, p, n) gets number pair_base[pair] + its rank among the
// violating negatives of that pair (pair_base: npairs + 1 exclusive prefix sums of the first
// pass's counts). Without a sample the number is the output slot; with one (sorted triplet
// numbers), only sampled triplets are written, at their position in the sample.
void fill_batch_all(const Problem& pb, float margin, const int64_t* pair_base,
                    const int64_t* sample, int64_t n_sample, const Output& out, int threads) {
  const PositivePairs pairs = positive_pairs(pb, thread_count(threads));
  const DotRowsFn dot_rows = dot_rows_for(active_isa());
  const int64_t dim = pb.dim, npairs = pb.pair_off[pb.na];
  std::vector<int64_t> seen(npairs, 0), cursor(npairs, 0);
  const int64_t iblock = 2 * kBlockI;
  const int64_t nblocks = (pb.na + iblock - 1) / iblock;
#pragma omp parallel num_threads(thread_count(threads))
  {
    std::vector<float> packed(static_cast<size_t>(kBlockJ * dim));
    std::vector<float> tile(static_cast<size_t>(iblock * kBlockJ));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t i0 = b * iblock, ni = std::min(iblock, pb.na - i0);
      if (sample != nullptr)
        for (int64_t q = pb.pair_off[i0]; q < pb.pair_off[i0 + ni]; ++q)
          cursor[q] = std::lower_bound(sample, sample + n_sample, pair_base[q]) - sample;
      for (int64_t j0 = 0; j0 < pb.nr; j0 += kBlockJ) {
        const int64_t nj = std::min(kBlockJ, pb.nr - j0);
        const int64_t npanels = (nj + kDotPanel - 1) / kDotPanel, ld = npanels * kDotPanel;
        pack_dot_panels(pb.ref, j0, nj, dim, packed.data());
        dot_rows(pb.emb + i0 * dim, dim, ni, packed.data(), npanels, dim, tile.data(), ld);
        for (int64_t r = 0; r < ni; ++r) {
          const int64_t a = i0 + r, la = pb.labels[a];
          const float* s = tile.data() + r * ld;
          for (int64_t t = 0; t < nj; ++t) {
            if (pb.ref_labels[j0 + t] == la) continue;
            for (int64_t q = pb.pair_off[a]; q < pb.pair_off[a + 1]; ++q) {
              if (!triplet::violates(pairs.sim[q], s[t], margin)) continue;
              const int64_t number = pair_base[q] + seen[q]++;
              if (number >= pair_base[q + 1]) continue;  // cannot happen: both passes agree
              int64_t slot = number;
              if (sample != nullptr) {
                if (cursor[q] >= n_sample || sample[cursor[q]] != number) continue;
                slot = cursor[q]++;
              }
              out.put(slot, a, pairs.index[q], j0 + t);
            }
          }
        }
      }
    }
  }
}

}  // namespace

// Floyd's algorithm: k distinct numbers from [0, total), sorted, from splitmix64(seed).
// Memory O(k); pyinstance.ops._reference.sample_triplet_numbers is the same algorithm.
void sample_sorted(int64_t total, int64_t k, uint64_t seed, int64_t* out) {
  PYI_CHECK(k >= 0 && k <= total, "sample: need 0 <= k <= total, got k=", k, ", total=", total);
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(k) * 2);
  uint64_t state = seed;
  for (int64_t j = total - k; j < total; ++j) {
    const int64_t t =
        static_cast<int64_t>(triplet::uniform_below(state, static_cast<uint64_t>(j) + 1));
    chosen.insert(chosen.count(t) ? j : t);
  }
  int64_t w = 0;
  for (int64_t v : chosen) out[w++] = v;
  std::sort(out, out + k);
}

int64_t triplet_mine(const Problem& pb, Strategy strategy, SemihardFallback fallback, int64_t n_pos,
                     int64_t n_neg, int64_t n_triplets, const Output& out, int threads) {
  triplet::check_mine_args(static_cast<int>(strategy), static_cast<int>(fallback), n_pos, n_neg,
                           n_triplets);
  threads = resolve_threads(threads);
  if (strategy == Strategy::BatchHard)
    mine_batch_hard(pb, out, threads);
  else if (strategy == Strategy::Offline)
    mine_offline(pb, n_pos, n_neg, n_triplets, out, threads);
  else
    mine_pairs(pb, strategy, fallback, out, threads);
  return out.compact(triplet::output_slots(strategy, pb.na, pb.npairs, n_triplets));
}

void triplet_mine_count(const Problem& pb, float margin, int64_t* counts, int threads) {
  threads = resolve_threads(threads);
  const PositivePairs pairs = positive_pairs(pb, threads);
  const ViolationCount c =
      reduce_negatives<ViolationCount>(pb, threads, nullptr, pairs.sim.data(), margin);
  std::copy(c.count.begin(), c.count.end(), counts);
}

void triplet_mine_fill(const Problem& pb, float margin, const int64_t* pair_base,
                       const int64_t* sample, int64_t n_sample, const Output& out, int threads) {
  fill_batch_all(pb, margin, pair_base, sample, n_sample, out, resolve_threads(threads));
}

}  // namespace pyinstance::cpu

namespace pyinstance::bindings {

// The argument names every triplet binding shares (CPU and CUDA), in order.
#define PYI_TRIPLET_PROBLEM_ARGS                                                                \
  py::arg("embeddings"), py::arg("n_anchors"), py::arg("dim"), py::arg("labels"),               \
      py::arg("ref_embeddings"), py::arg("n_refs"), py::arg("ref_labels"), py::arg("same_set"), \
      py::arg("order"), py::arg("pos_start"), py::arg("pos_end"), py::arg("pair_off"),          \
      py::arg("n_pairs")

void register_triplet_mine(py::module_& m) {
  m.def(
      "triplet_mine",
      [](int strategy, uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref,
         int64_t nr, uintptr_t ref_labels, bool same_set, uintptr_t order, uintptr_t pos_start,
         uintptr_t pos_end, uintptr_t pair_off, int64_t n_pairs, int fallback, int64_t n_pos,
         int64_t n_neg, int64_t n_triplets, uintptr_t out_a, uintptr_t out_p, uintptr_t out_n,
         int threads) {
        const triplet::Problem pb =
            triplet::make_problem(emb, na, dim, labels, ref, nr, ref_labels, same_set, order,
                                  pos_start, pos_end, pair_off, n_pairs);
        triplet::check_mine_args(strategy, fallback, n_pos, n_neg, n_triplets);
        threads = cpu::resolve_threads(threads);
        py::gil_scoped_release release;
        return cpu::triplet_mine(pb, static_cast<triplet::Strategy>(strategy),
                                 static_cast<triplet::SemihardFallback>(fallback), n_pos, n_neg,
                                 n_triplets, triplet::make_output(out_a, out_p, out_n), threads);
      },
      py::arg("strategy"), PYI_TRIPLET_PROBLEM_ARGS, py::arg("fallback"), py::arg("n_pos"),
      py::arg("n_neg"), py::arg("n_triplets"), py::arg("out_anchors"), py::arg("out_positives"),
      py::arg("out_negatives"), py::arg("threads"),
      "Mine triplets into triplet_output_slots(...) preallocated slots; returns how many were "
      "found (compacted to the front). See pyinstance.ops.triplet_mine.");
  m.def(
      "triplet_mine_count",
      [](uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref, int64_t nr,
         uintptr_t ref_labels, bool same_set, uintptr_t order, uintptr_t pos_start,
         uintptr_t pos_end, uintptr_t pair_off, int64_t n_pairs, float margin, uintptr_t counts,
         int threads) {
        const triplet::Problem pb =
            triplet::make_problem(emb, na, dim, labels, ref, nr, ref_labels, same_set, order,
                                  pos_start, pos_end, pair_off, n_pairs);
        threads = cpu::resolve_threads(threads);
        py::gil_scoped_release release;
        cpu::triplet_mine_count(pb, margin, reinterpret_cast<int64_t*>(counts), threads);
      },
      PYI_TRIPLET_PROBLEM_ARGS, py::arg("margin"), py::arg("counts"), py::arg("threads"),
      "batch_all pass 1: number of violating negatives of every positive pair.");
  m.def(
      "triplet_mine_fill",
      [](uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref, int64_t nr,
         uintptr_t ref_labels, bool same_set, uintptr_t order, uintptr_t pos_start,
         uintptr_t pos_end, uintptr_t pair_off, int64_t n_pairs, float margin, uintptr_t pair_base,
         uintptr_t sample, int64_t n_sample, uintptr_t out_a, uintptr_t out_p, uintptr_t out_n,
         int threads) {
        const triplet::Problem pb =
            triplet::make_problem(emb, na, dim, labels, ref, nr, ref_labels, same_set, order,
                                  pos_start, pos_end, pair_off, n_pairs);
        threads = cpu::resolve_threads(threads);
        py::gil_scoped_release release;
        cpu::triplet_mine_fill(pb, margin, reinterpret_cast<const int64_t*>(pair_base),
                               reinterpret_cast<const int64_t*>(sample), n_sample,
                               triplet::make_output(out_a, out_p, out_n), threads);
      },
      PYI_TRIPLET_PROBLEM_ARGS, py::arg("margin"), py::arg("pair_base"), py::arg("sample"),
      py::arg("n_sample"), py::arg("out_anchors"), py::arg("out_positives"),
      py::arg("out_negatives"), py::arg("threads"),
      "batch_all pass 2: write every violating triplet, or only the sampled ones.");
  m.def(
      "triplet_output_slots",
      [](int strategy, int64_t n_anchors, int64_t n_pairs, int64_t n_triplets) {
        return triplet::output_slots(static_cast<triplet::Strategy>(strategy), n_anchors, n_pairs,
                                     n_triplets);
      },
      py::arg("strategy"), py::arg("n_anchors"), py::arg("n_pairs"), py::arg("n_triplets"),
      "Output slots triplet_mine fills before compaction (-1 for batch_all).");
  m.def(
      "triplet_sample",
      [](int64_t total, int64_t k, uint64_t seed, uintptr_t out) {
        py::gil_scoped_release release;
        cpu::sample_sorted(total, k, seed, reinterpret_cast<int64_t*>(out));
      },
      py::arg("total"), py::arg("k"), py::arg("seed"), py::arg("out"),
      "k distinct sorted numbers from [0, total) (Floyd's algorithm on splitmix64(seed)).");
}

#undef PYI_TRIPLET_PROBLEM_ARGS

}  // namespace pyinstance::bindings
