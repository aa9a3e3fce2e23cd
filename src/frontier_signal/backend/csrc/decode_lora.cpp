// The LoRA terms of a decode step (`llama_step.cpp` calls `add_lora` after each group's base
// matmul): y += x[rows] @ A.T @ B for every run of the batch, each run on its own rows.
//
// One group's terms (q|k|v, o, gate|up or down) for every run in the batch run in two parallel
// passes: A rows first (hidden = x @ A.T, fp32), then B column blocks (y += hidden @ B, summed
// in fp32 and rounded into the bf16 output once). A pass per run and piece cost more in thread
// wake-ups than reading the weights did. B comes without the zero blocks of its block-diagonal
// form (`decode_lora.BlockedB`), one piece per projection, in column tiles that a task of the
// second pass reads as one contiguous block.
//
// Where the CPU has AVX512, each weight vector is widened to fp32 once for up to 8 rows of its
// run (8 requests sampling one policy, as RL recipes do), with the sums in registers, and every
// row's sums run in the same order whatever the row count: a row gets the same values alone
// and in a batch. A step of 8 rows on one r=32 run took 19.4-19.8 ms where the scalar loops
// (one row at a time) took 24.6; 8 rows on 8 runs 26.0-26.8 vs 28.5-29.2 ms.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "bf16_simd.h"

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using bf16 = c10::BFloat16;

inline float to_f(bf16 v) { return static_cast<float>(v); }

constexpr int64_t kColumns = 64;  // output columns per task of the second pass

// One run's LoRA term of a group: its rows [start, start + rows), A [ranks, in] and the pieces
// of its B: hidden[:, h_lo:h_hi) @ B -> output columns [o_lo, o_lo + width). B comes as
// [h_hi - h_lo, width] or, where width is a multiple of kColumns, as tiles
// [width / kColumns, h_hi - h_lo, kColumns], so a task of the second pass reads one
// contiguous block (`decode_lora._native_term` lays them out).
struct Piece {
  int64_t h_lo, h_hi, o_lo, width;
  const bf16* B;
  int64_t row_stride, tile_stride;  // between ranks, between column tiles

  const bf16* tile(int64_t lo) const { return B + lo / kColumns * tile_stride; }
};
struct Term {
  int64_t start, rows, ranks;
  const bf16* A;
  float* hidden;  // [rows, ranks]
  std::vector<Piece> pieces;
};

constexpr int64_t kRanksPerJob = 8;  // A rows per task of the first pass

// Reads one group's terms from the flattened lists (see `native.NativeStep`): meta per term
// start, end, pieces, then per piece h_lo, h_hi, o_lo; tensors per term A, then each piece's B.
std::vector<Term> read_terms(const std::vector<at::Tensor>& tensors, size_t& t,
                             const std::vector<int64_t>& meta, size_t& m, int64_t in) {
  std::vector<Term> terms(static_cast<size_t>(meta[m++]));
  for (Term& term : terms) {
    const int64_t start = meta[m++], end = meta[m++], pieces = meta[m++];
    const at::Tensor& A = tensors[t++];
    TORCH_CHECK(A.scalar_type() == at::kBFloat16 && A.is_contiguous() && A.dim() == 2 &&
                    A.size(1) == in,
                "LoRA A: contiguous bf16 [ranks, in]");
    term = Term{start, end - start, A.size(0), A.data_ptr<bf16>(), nullptr, {}};
    for (int64_t p = 0; p < pieces; ++p) {
      const int64_t h_lo = meta[m++], h_hi = meta[m++], o_lo = meta[m++];
      const at::Tensor& B = tensors[t++];
      const int64_t ranks = h_hi - h_lo;
      TORCH_CHECK(B.scalar_type() == at::kBFloat16 && B.is_contiguous(), "LoRA B: contiguous bf16");
      TORCH_CHECK(0 <= h_lo && h_lo <= h_hi && h_hi <= A.size(0), "LoRA B: ranks beyond A");
      if (B.dim() == 3) {
        TORCH_CHECK(B.size(1) == ranks && B.size(2) == kColumns, "LoRA B tiles: [t, ranks, 64]");
        term.pieces.push_back(Piece{h_lo, h_hi, o_lo, B.size(0) * kColumns, B.data_ptr<bf16>(),
                                    kColumns, ranks * kColumns});
      } else {
        TORCH_CHECK(B.dim() == 2 && B.size(0) == ranks, "LoRA B: [ranks, width]");
        term.pieces.push_back(
            Piece{h_lo, h_hi, o_lo, B.size(1), B.data_ptr<bf16>(), B.size(1), kColumns});
      }
    }
  }
  return terms;
}

#ifdef FS_AVX512
// hidden[r, k] = A[k] . x[r] for R rows and ranks [k0, k1): two A rows at a time, each widened
// once for every row; 16 fp32 lanes a row and rank, summed across at the end.
template <int R>
void project(const bf16* A, const float* x, int64_t in, int64_t k0, int64_t k1, float* hidden,
             int64_t ranks) {
  for (int64_t k = k0; k < k1; k += 2) {
    const bool pair = k + 1 < k1;
    __m512 acc[2][R];
    for (int r = 0; r < R; ++r) acc[0][r] = acc[1][r] = _mm512_setzero_ps();
    for (int64_t i = 0; i < in; i += 16) {
      const __mmask16 mask = fs_simd::lanes(i, in);
      const __m512 a0 = fs_simd::load_bf16(A + k * in + i, mask);
      const __m512 a1 = pair ? fs_simd::load_bf16(A + (k + 1) * in + i, mask) : a0;
      for (int r = 0; r < R; ++r) {
        const __m512 xr = _mm512_maskz_loadu_ps(mask, x + r * in + i);
        acc[0][r] = _mm512_fmadd_ps(a0, xr, acc[0][r]);
        acc[1][r] = _mm512_fmadd_ps(a1, xr, acc[1][r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      hidden[r * ranks + k] = _mm512_reduce_add_ps(acc[0][r]);
      if (pair) hidden[r * ranks + k + 1] = _mm512_reduce_add_ps(acc[1][r]);
    }
  }
}

// y[r, o_lo + c) += hidden[r, h_lo:h_hi) @ B[:, c) for R rows and columns [c0, c1) of one
// column tile of a piece, V vectors of 16 columns at a time (64 columns for up to 4 rows, 32
// beyond, so the accumulators stay in registers): each B vector widened once for every row.
template <int R>
void expand(const float* hidden, int64_t ranks, const Piece& piece, int64_t c0, int64_t c1,
            bf16* y, int64_t out) {
  constexpr int V = R <= 4 ? 4 : 2;
  const bf16* tile = piece.tile(c0) - c0;
  for (int64_t c = c0; c < c1; c += 16 * V) {
    __mmask16 mask[V];
    for (int v = 0; v < V; ++v) mask[v] = fs_simd::lanes(c + 16 * v, c1);
    __m512 acc[R][V];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int64_t k = piece.h_lo; k < piece.h_hi; ++k) {
      const bf16* b = tile + (k - piece.h_lo) * piece.row_stride + c;
      __m512 bk[V];
      for (int v = 0; v < V; ++v) bk[v] = fs_simd::load_bf16(b + 16 * v, mask[v]);
      for (int r = 0; r < R; ++r) {
        const __m512 h = _mm512_set1_ps(hidden[r * ranks + k]);
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(h, bk[v], acc[r][v]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        bf16* o = y + r * out + piece.o_lo + c + 16 * v;
        fs_simd::store_bf16(o, _mm512_add_ps(fs_simd::load_bf16(o, mask[v]), acc[r][v]), mask[v]);
      }
  }
}
#endif

// The first pass for one term's ranks [k0, k1), all its rows.
void project_term(const Term& term, const float* xf, int64_t in, int64_t k0, int64_t k1) {
  fs_simd::row_passes(term.rows, [&](int64_t r0, auto count) {
    const float* x = xf + (term.start + r0) * in;
    float* hidden = term.hidden + r0 * term.ranks;
#ifdef FS_AVX512
    project<decltype(count)::value>(term.A, x, in, k0, k1, hidden, term.ranks);
#else
    const int64_t rows = decltype(count)::value;
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t r = 0; r < rows; ++r) {
        float sum = 0;
        for (int64_t i = 0; i < in; ++i) sum += to_f(term.A[k * in + i]) * x[r * in + i];
        hidden[r * term.ranks + k] = sum;
      }
#endif
  });
}

// The second pass for one piece's columns [c0, c1) (within one tile), all the term's rows.
void expand_term(const Term& term, const Piece& piece, int64_t c0, int64_t c1, bf16* y,
                 int64_t out) {
  fs_simd::row_passes(term.rows, [&](int64_t r0, auto count) {
    const float* hidden = term.hidden + r0 * term.ranks;
    bf16* rows_y = y + (term.start + r0) * out;
#ifdef FS_AVX512
    expand<decltype(count)::value>(hidden, term.ranks, piece, c0, c1, rows_y, out);
#else
    const int64_t rows = decltype(count)::value;
    const bf16* tile = piece.tile(c0) - c0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        float sum = 0;
        for (int64_t k = piece.h_lo; k < piece.h_hi; ++k)
          sum += hidden[r * term.ranks + k] * to_f(tile[(k - piece.h_lo) * piece.row_stride + c]);
        bf16& o = rows_y[r * out + piece.o_lo + c];
        o = bf16(to_f(o) + sum);
      }
#endif
  });
}

}  // namespace

namespace fs_decode {

// y [B, out] (the group's base output, bf16) += each term's x[rows] @ A.T @ B; x [B, in] bf16.
void add_lora(at::Tensor& y, const at::Tensor& x, const std::vector<at::Tensor>& tensors,
              size_t& t, const std::vector<int64_t>& meta, size_t& m) {
  const int64_t in = x.size(1), out = y.size(1);
  std::vector<Term> terms = read_terms(tensors, t, meta, m, in);
  if (terms.empty()) return;
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  size_t hidden_size = 0;
  for (const Term& term : terms) {
    TORCH_CHECK(term.start >= 0 && term.start + term.rows <= x.size(0), "LoRA rows beyond x");
    hidden_size += static_cast<size_t>(term.rows * term.ranks);
  }
  std::vector<float> hidden(hidden_size);
  std::vector<std::pair<Term*, int64_t>> jobs;  // pass 1: kRanksPerJob rows of one term's A
  float* next = hidden.data();
  for (Term& term : terms) {
    term.hidden = next;
    next += term.rows * term.ranks;
    for (int64_t k = 0; k < term.ranks; k += kRanksPerJob) jobs.emplace_back(&term, k);
  }
  const float* xp = xf.data_ptr<float>();
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t j = first; j < last; ++j) {
      const auto& [term, k0] = jobs[j];
      project_term(*term, xp, in, k0, std::min(term->ranks, k0 + kRanksPerJob));
    }
  });
  // Pass 2: kColumns output columns of one piece.
  std::vector<std::tuple<const Term*, const Piece*, int64_t>> columns;
  for (const Term& term : terms)
    for (const Piece& piece : term.pieces) {
      TORCH_CHECK(piece.o_lo >= 0 && piece.o_lo + piece.width <= out, "LoRA B beyond y");
      for (int64_t lo = 0; lo < piece.width; lo += kColumns)
        columns.emplace_back(&term, &piece, lo);
    }
  bf16* y_data = y.data_ptr<bf16>();
  at::parallel_for(0, static_cast<int64_t>(columns.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const auto& [term, piece, lo] = columns[c];
      expand_term(*term, *piece, lo, std::min(piece->width, lo + kColumns), y_data, out);
    }
  });
}

}  // namespace fs_decode
