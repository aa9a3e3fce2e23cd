// The LoRA terms of a bf16 training step on CPU, forward and backward, for G adapters on G
// equal blocks of rows: y += s·(x·Aᵀ)·Bᵀ, then dx += (s·dy·B)·A, dA = hᵀ_grad·x, dB = dyᵀ·h.
//
// At LoRA's shapes (rank 8-64) oneDNN's bf16 matmuls run at 50-170 GFLOP/s, and autograd adds a
// cast of each weight, a scale, an add into the base output and a cast of each gradient: in a
// short-sequence step the LoRA terms took ~18 % of the time for ~2 % of the FLOPs. Here every
// product is `vdpbf16ps` on bf16 pairs (exact products, fp32 sums), the weights are cast and
// packed once per call, the delta is added into the base output in place, the input gradient
// into the base's input gradient, and the weight gradients come out in fp32.
//
// Rounding: the hidden state is bf16(bf16(x·Aᵀ)·s), as autograd computes it; the delta is summed
// onto the base output in fp32 and rounded once (autograd rounds the delta, then the sum), and
// so is the input gradient's term. The weight gradients are fp32 sums of exact products
// (autograd rounds them to bf16 first). Features must be even (pairs); any rank.
//
// Layouts: a "pairs" array holds two bf16 that one `vdpbf16ps` lane multiplies together; rows of
// the reduction dimension are interleaved two by two (`interleave_rows`), weights are packed so
// that the reduction runs over pairs. Everything is computed per group (adapter) of rows.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"

#include <cstring>
#include <tuple>
#include <vector>

namespace {

using fs_simd::bf16;

inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

void check_rows(const at::Tensor& t, int64_t rows, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous() && t.dim() == 2 &&
                  t.size(0) == rows,
              name, ": a contiguous 2-d bf16 tensor with ", rows, " rows");
}

void check_weights(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                   const std::vector<double>& scales, int64_t in, int64_t out) {
  TORCH_CHECK(!a.empty() && a.size() == b.size() && a.size() == scales.size(),
              "one A, one B and one scale per group");
  for (size_t g = 0; g < a.size(); ++g) {
    TORCH_CHECK(a[g].scalar_type() == at::kFloat && a[g].dim() == 2 && a[g].size(1) == in &&
                    a[g].size(0) == a[0].size(0),
                "A: fp32 [rank, in] of one rank");
    TORCH_CHECK(b[g].scalar_type() == at::kFloat && b[g].dim() == 2 && b[g].size(0) == out &&
                    b[g].size(1) == a[0].size(0),
                "B: fp32 [out, rank]");
  }
}

#ifdef __AVX512BF16__

using fs_simd::lanes;
using fs_simd::load_bf16;

inline __mmask32 pair_lanes(int64_t c, int64_t end) {  // 16 pairs (32 bf16) from column c
  const int64_t left = end - c;
  return left >= 16 ? static_cast<__mmask32>(0xffffffffu)
                    : left <= 0 ? 0 : static_cast<__mmask32>((1ull << (2 * left)) - 1);
}

// One vcvtneps2bf16, nearest even (fs_simd::store_bf16 emulates it where the exact bits of
// denormals matter; here they may flush to zero).
inline void store_bf16(bf16* p, __m512 x, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(x));
}

// 16 columns of two rows as 16 pairs: (a[0], b[0], a[1], b[1], ...).
inline __m512i pair_rows(__m256i a, __m256i b) {
  alignas(64) static const uint16_t order[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                 21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return _mm512_permutexvar_epi16(_mm512_load_si512(order),
                                  _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
}

// dst[q][c] = (src[2q][c], src[2q+1][c]) for rows [0, rows) of src (a zero row past the end).
void interleave_rows(const bf16* src, int64_t rows, int64_t cols, bf16* dst) {
  const int64_t pairs = (rows + 1) / 2;
  at::parallel_for(0, pairs, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)),
                   [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      const bf16* top = src + 2 * q * cols;
      const __mmask16 bottom = 2 * q + 1 < rows ? 0xffff : 0;
      bf16* out = dst + 2 * q * cols;
      int64_t c = 0;
      if (bottom) {
        for (; c + 16 <= cols; c += 16) {
          const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(top + c));
          const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(top + cols + c));
          _mm512_storeu_si512(out + 2 * c, pair_rows(a, b));
        }
      }
      for (; c < cols; c += 16) {
        const __mmask16 m = lanes(c, cols);
        const __m256i a = _mm256_maskz_loadu_epi16(m, top + c);
        const __m256i b = _mm256_maskz_loadu_epi16(m & bottom, top + cols + c);
        _mm512_mask_storeu_epi16(out + 2 * c, pair_lanes(c, cols), pair_rows(a, b));
      }
    }
  });
}

// dst[c][r] = src[r][c] for 32-bit words (src [rows][cols], dst [cols][rows]).
void transpose_words(const uint32_t* src, int64_t rows, int64_t cols, uint32_t* dst) {
  const __m512i step = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
                                                           5, 4, 3, 2, 1, 0),
                                          _mm512_set1_epi32(static_cast<int>(cols)));
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; r += 16) {
      const __mmask16 m = lanes(r, rows);
      const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, step,
                                                    src + r * cols + c, 4);
      _mm512_mask_storeu_epi32(dst + c * rows + r, m, v);
    }
  }
}

// A fp32 [rows][cols] matrix (any strides) as bf16 [rows_padded][cols_padded], zero padded.
at::Tensor to_bf16(const at::Tensor& m, int64_t rows_padded, int64_t cols_padded) {
  at::Tensor out = at::empty({rows_padded, cols_padded}, m.options().dtype(at::kBFloat16));
  const int64_t rows = m.size(0), cols = m.size(1);
  const at::Tensor src = m.contiguous();
  const float* in = src.data_ptr<float>();
  bf16* o = out.data_ptr<bf16>();
  for (int64_t r = 0; r < rows_padded; ++r) {
    for (int64_t c = 0; c < cols_padded; c += 16) {
      const __mmask16 m16 = r < rows ? lanes(c, cols) : 0;
      const __m512 v = _mm512_maskz_loadu_ps(m16, in + r * cols + c);
      store_bf16(o + r * cols_padded + c, v, lanes(c, cols_padded));
    }
  }
  return out;
}

enum class Out { kAdd, kHidden };

// out[n][c] over the pairs p of each row of h (h[n] is `pairs` words apart: 2·pairs bf16) and
// w ([pairs][cols] words): kAdd: y[n][c] = bf16(y + Σ); kHidden: bf16(bf16(Σ)·scale).
template <int R, int K, Out mode>
void pairs_matmul(const bf16* h, int64_t rows, int64_t pairs, const bf16* w, int64_t cols,
                  bf16* y, float scale) {
  // One accumulator block per column vector and row: with one column vector (a hidden state
  // of rank <= 16) two blocks take alternate pairs, so that enough sums are in flight.
  constexpr int U = K == 1 ? 2 : 1;
  const int64_t row_blocks = (rows + R - 1) / R, col_blocks = (cols + 16 * K - 1) / (16 * K);
  const uint32_t* h32 = reinterpret_cast<const uint32_t*>(h);
  const uint32_t* w32 = reinterpret_cast<const uint32_t*>(w);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, pairs * R * K * 16));
  at::parallel_for(0, row_blocks * col_blocks, grain, [&](int64_t first, int64_t last) {
    for (int64_t task = first; task < last; ++task) {
      const int64_t n0 = task / col_blocks * R, c0 = task % col_blocks * 16 * K;
      const uint32_t* hr[R];
      __m512 acc[U][R][K];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        hr[r] = h32 + std::min(n0 + r, rows - 1) * pairs;
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          const __mmask16 m = n0 + r < rows ? lanes(c0 + 16 * k, cols) : 0;
          acc[0][r][k] = mode == Out::kAdd ? load_bf16(y + (n0 + r) * cols + c0 + 16 * k, m)
                                           : _mm512_setzero_ps();
          if (U == 2) acc[U - 1][r][k] = _mm512_setzero_ps();
        }
      }
      const uint32_t* wp = w32 + c0;
      __mmask16 wm[K];
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) wm[k] = lanes(c0 + 16 * k, cols);
      int64_t p = 0;
      for (; p + U <= pairs; p += U) {
#pragma GCC unroll 2
        for (int u = 0; u < U; ++u) {
          __m512bh wk[K];
#pragma GCC unroll 8
          for (int k = 0; k < K; ++k)
            wk[k] = (__m512bh)_mm512_maskz_loadu_epi32(wm[k], wp + (p + u) * cols + 16 * k);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const __m512bh hp = (__m512bh)_mm512_set1_epi32(hr[r][p + u]);
#pragma GCC unroll 8
            for (int k = 0; k < K; ++k) acc[u][r][k] = _mm512_dpbf16_ps(acc[u][r][k], hp, wk[k]);
          }
        }
      }
      for (; p < pairs; ++p) {  // an odd last pair (U == 2)
        for (int k = 0; k < K; ++k) {
          const __m512bh wk = (__m512bh)_mm512_maskz_loadu_epi32(wm[k], wp + p * cols + 16 * k);
          for (int r = 0; r < R; ++r)
            acc[0][r][k] = _mm512_dpbf16_ps(acc[0][r][k], (__m512bh)_mm512_set1_epi32(hr[r][p]), wk);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          const __mmask16 m = n0 + r < rows ? lanes(c0 + 16 * k, cols) : 0;
          __m512 v = U == 2 ? _mm512_add_ps(acc[0][r][k], acc[U - 1][r][k]) : acc[0][r][k];
          if (mode == Out::kHidden)
            v = _mm512_mul_ps(fs_simd::round_bf16(v), _mm512_set1_ps(scale));
          store_bf16(y + (n0 + r) * cols + c0 + 16 * k, v, m);
        }
      }
    }
  });
}

// y [rows][cols] (+)= h [rows][2·pairs] · w [pairs][cols]: the block shape by `cols`.
template <Out mode>
void matmul(const bf16* h, int64_t rows, int64_t pairs, const bf16* w, int64_t cols, bf16* y,
            float scale = 1.0f) {
  if (cols <= 16)
    pairs_matmul<4, 1, mode>(h, rows, pairs, w, cols, y, scale);
  else if (cols <= 32)
    pairs_matmul<4, 2, mode>(h, rows, pairs, w, cols, y, scale);
  else
    pairs_matmul<4, 4, mode>(h, rows, pairs, w, cols, y, scale);
}

// out[j][c] = Σ_n h[n][j]·src[n][c] in fp32 for j < rank: `a` holds h's rows interleaved two by
// two ([pairs][stride] words, `interleave_rows`); src's rows (x or dy, [rows][cols] bf16) are
// paired on the fly. A task owns 32 columns (both halves of a cache line of a row), 16 sums of
// the rank at a time.
void pairs_outer(const bf16* a, int64_t stride, int64_t rank, const bf16* src, int64_t rows,
                 int64_t cols, float* out) {
  constexpr int64_t kRank = 16;
  const int64_t pairs = (rows + 1) / 2, full = rows / 2;
  const int64_t rank_blocks = (rank + kRank - 1) / kRank, col_blocks = (cols + 31) / 32;
  const int64_t padded = rank_blocks * kRank;  // words of `a` per pair, zeros past the rank
  std::vector<uint32_t> a32(pairs * padded, 0);
  for (int64_t q = 0; q < pairs; ++q)
    std::memcpy(a32.data() + q * padded, reinterpret_cast<const uint32_t*>(a) + q * stride,
                rank * sizeof(uint32_t));
  const uint32_t* words_a = a32.data();
  at::parallel_for(0, rank_blocks * col_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t task = first; task < last; ++task) {
      const int64_t j0 = task % rank_blocks * kRank, block = task / rank_blocks;
      const int nj = static_cast<int>(std::min(kRank, rank - j0));
      for (int64_t c0 = block * 32; c0 < std::min(cols, block * 32 + 32); c0 += 16) {
        const __mmask16 m = lanes(c0, cols);
        __m512 acc[kRank];
        for (int j = 0; j < kRank; ++j) acc[j] = _mm512_setzero_ps();
        for (int64_t q = 0; q < pairs; ++q) {
          const bf16* top = src + 2 * q * cols + c0;
          const __m256i t = _mm256_maskz_loadu_epi16(m, top);
          const __m256i b = _mm256_maskz_loadu_epi16(q < full ? m : 0, top + cols);
          const __m512bh bq = (__m512bh)pair_rows(t, b);
          const uint32_t* aq = words_a + q * padded + j0;
#pragma GCC unroll 16
          for (int j = 0; j < kRank; ++j)
            acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)_mm512_set1_epi32(aq[j]), bq);
        }
#pragma GCC unroll 16
        for (int j = 0; j < kRank; ++j)  // constant indices: the sums stay in registers
          _mm512_mask_storeu_ps(out + (j0 + j) * cols + c0, j < nj ? m : 0, acc[j]);
      }
    }
  });
}

#endif  // __AVX512BF16__

// fn(g) for every group: one group splits its kernels over the threads; several groups each
// run on one thread (the kernels' parallel_for runs inline there), with no fork per kernel.
template <typename Fn>
void for_each_group(int64_t groups, const Fn& fn) {
  if (groups == 1) {
    fn(0);
    return;
  }
  at::parallel_for(0, groups, 1, [&](int64_t first, int64_t last) {
    for (int64_t g = first; g < last; ++g) fn(g);
  });
}

void check_shapes(const at::Tensor& x, int64_t groups, int64_t out) {
  TORCH_CHECK(groups > 0 && x.dim() == 2 && x.size(0) % groups == 0, "x: [G·N, in]");
  TORCH_CHECK(x.size(1) % 2 == 0 && out % 2 == 0, "LoRA kernels: even in and out features");
}

inline const uint32_t* words(const at::Tensor& t) {
  return reinterpret_cast<const uint32_t*>(t.data_ptr<bf16>());
}

inline uint32_t* words(at::Tensor& t) { return reinterpret_cast<uint32_t*>(t.data_ptr<bf16>()); }

// Forward: y (the base output, [G·N, out]) += each group's s·(x·Aᵀ)·Bᵀ in place; returns the
// hidden states [G·N, rank rounded up to even] bf16, which the backward takes back.
at::Tensor lora_forward(const at::Tensor& x, at::Tensor y, std::vector<at::Tensor> a,
                        std::vector<at::Tensor> b, std::vector<double> scales) {
  const int64_t groups = static_cast<int64_t>(a.size());
  check_shapes(x, groups, y.size(1));
  const int64_t rows = x.size(0) / groups, in = x.size(1), out = y.size(1);
  check_rows(x, x.size(0), "x");
  check_rows(y, x.size(0), "y");
  check_weights(a, b, scales, in, out);
  const int64_t rank = a[0].size(0), stride = round_up(rank, 2);
  at::Tensor hidden = at::empty({x.size(0), stride}, x.options());
#ifdef __AVX512BF16__
  for_each_group(groups, [&](int64_t g) {
    at::Tensor a_words = at::empty({in / 2, stride, 2}, x.options());
    at::Tensor b_words = at::empty({stride / 2, out, 2}, x.options());
    const at::Tensor a_bf = to_bf16(a[g], stride, in);
    const at::Tensor b_bf = to_bf16(b[g], out, stride);
    transpose_words(words(a_bf), stride, in / 2, words(a_words));
    transpose_words(words(b_bf), out, stride / 2, words(b_words));
    bf16* h = hidden.data_ptr<bf16>() + g * rows * stride;
    matmul<Out::kHidden>(x.data_ptr<bf16>() + g * rows * in, rows, in / 2,
                         a_words.data_ptr<bf16>(), stride, h, static_cast<float>(scales[g]));
    matmul<Out::kAdd>(h, rows, stride / 2, b_words.data_ptr<bf16>(), out,
                      y.data_ptr<bf16>() + g * rows * out);
  });
#else
  TORCH_CHECK(false, "lora_forward needs a CPU with AVX512-BF16 (use the autograd path)");
#endif
  return hidden;
}

// Backward: the weight gradients (fp32, per group) and, if `grad_x` is given, its += of each
// group's input gradient term (in place).
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> lora_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& hidden,
    const c10::optional<at::Tensor>& grad_x, std::vector<at::Tensor> a, std::vector<at::Tensor> b,
    std::vector<double> scales) {
  const int64_t groups = static_cast<int64_t>(a.size());
  check_shapes(x, groups, grad.size(1));
  const int64_t rows = x.size(0) / groups, in = x.size(1), out = grad.size(1);
  check_rows(x, x.size(0), "x");
  check_rows(grad, x.size(0), "grad");
  check_rows(hidden, x.size(0), "hidden");
  if (grad_x.has_value()) check_rows(*grad_x, x.size(0), "grad_x");
  check_weights(a, b, scales, in, out);
  const int64_t rank = a[0].size(0), stride = round_up(rank, 2);
  TORCH_CHECK(hidden.size(1) == stride, "hidden: lora_forward's");
  std::vector<at::Tensor> grad_a, grad_b;
#ifdef __AVX512BF16__
  grad_a.resize(groups);
  grad_b.resize(groups);
  for_each_group(groups, [&](int64_t g) {
    const int64_t pairs = (rows + 1) / 2;
    at::Tensor grad_hidden = at::empty({rows, stride}, x.options());
    at::Tensor hidden_pairs = at::empty({pairs, stride, 2}, x.options());
    at::Tensor b_pairs = at::empty({out / 2, stride, 2}, x.options());
    const bf16* dy = grad.data_ptr<bf16>() + g * rows * out;
    const bf16* xg = x.data_ptr<bf16>() + g * rows * in;
    const bf16* h = hidden.data_ptr<bf16>() + g * rows * stride;
    bf16* gh = grad_hidden.data_ptr<bf16>();
    const at::Tensor a_bf = to_bf16(a[g], stride, in);
    const at::Tensor b_bf = to_bf16(b[g], out, stride);
    interleave_rows(b_bf.data_ptr<bf16>(), out, stride, b_pairs.data_ptr<bf16>());
    matmul<Out::kHidden>(dy, rows, out / 2, b_pairs.data_ptr<bf16>(), stride, gh,
                         static_cast<float>(scales[g]));
    if (grad_x.has_value()) {
      at::Tensor a_pairs = at::empty({stride / 2, in, 2}, x.options());
      interleave_rows(a_bf.data_ptr<bf16>(), stride, in, a_pairs.data_ptr<bf16>());
      matmul<Out::kAdd>(gh, rows, stride / 2, a_pairs.data_ptr<bf16>(), in,
                        grad_x->data_ptr<bf16>() + g * rows * in);
    }
    at::Tensor da = at::empty({rank, in}, a[g].options());
    interleave_rows(gh, rows, stride, hidden_pairs.data_ptr<bf16>());
    pairs_outer(hidden_pairs.data_ptr<bf16>(), stride, rank, xg, rows, in, da.data_ptr<float>());
    at::Tensor db_t = at::empty({rank, out}, b[g].options());
    interleave_rows(h, rows, stride, hidden_pairs.data_ptr<bf16>());
    pairs_outer(hidden_pairs.data_ptr<bf16>(), stride, rank, dy, rows, out, db_t.data_ptr<float>());
    grad_a[g] = da;
    grad_b[g] = db_t.t().contiguous();
  });
#else
  TORCH_CHECK(false, "lora_backward needs a CPU with AVX512-BF16 (use the autograd path)");
#endif
  return {grad_a, grad_b};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(frontier_signal, m) {
  m.def(
      "lora_forward(Tensor x, Tensor(a!) y, Tensor[] a, Tensor[] b, float[] scales) -> Tensor");
  m.def(
      "lora_backward(Tensor grad, Tensor x, Tensor hidden, Tensor(a!)? grad_x, Tensor[] a, "
      "Tensor[] b, float[] scales) -> (Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) {
  m.impl("lora_forward", &lora_forward);
  m.impl("lora_backward", &lora_backward);
}
