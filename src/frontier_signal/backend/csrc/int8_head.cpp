// The decode step's output projection (lm_head) in 8 bits, with the top logits made exact
// (`decode_head.CheckedHead` builds the codes; `native.py` builds this file).
//
// Reading the bf16 lm_head is the biggest single read of a small model's step (SmolLM2-135M:
// 49,152 x 576, 56.6 MB). Codes of one byte per weight (one scale per output row) are half of
// that, but a logit from them is off by up to ~1.3 here (as with fbgemm's 8-bit weights and
// activations; ~0.7 with 8-bit codes): enough to flip a greedy choice now and then. So:
//   1. every logit from the codes (bf16 activations, fp32 sums, `vdpbf16ps`);
//   2. a bound on each logit's error: |w - code * scale| <= scale / 2 per weight, so the logit
//      is off by at most scale / 2 * |x|_1 (plus the fp32 sums' and bf16 rounding's share);
//   3. every token whose interval reaches the best lower bound is recomputed from the bf16
//      weights exactly as the exact decode computes it (`fs_simd::bf16_dots`, rounded to bf16).
// A token left out cannot be the bf16 head's argmax, and those kept carry its very logits: the
// greedy token is the exact head's, bit for bit, while a few dozen of 49,152 rows are read in
// bf16 (SmolLM2 over 232 steps: median 33, at most 872).
// The other logits keep the codes' values (a sampled distribution's tail).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace {

using bf16 = c10::BFloat16;

constexpr int64_t kColumnsPerTask = 64;

#ifdef __AVX512BF16__
// Weights as 7-bit codes u in [1, 127], w ~ scale * (u - 64). The bf16 number with bits
// 0x43 00 | u is exactly 128 + u, so one byte unpack against a vector of 0x43 bytes turns 32 codes
// into 32 bf16 weights offset by 192 (the sum of 192 * x is taken off once per row of x). The
// bytes of each block of 64 inputs are stored so that the low unpack of a 128-bit lane gives
// inputs 8 l .. 8 l + 7 and the high one inputs 32 + 8 l .. (`decode_head.CheckedHead`).
constexpr float kOffset = 192.0f;

template <int R>
void approximate(const bf16* x, const float* xsum, const uint8_t* codes, const float* scales,
                 const bf16* bias, int64_t K, int64_t N, int64_t n0, int64_t n1, float* y) {
  const __m512i exponent = _mm512_set1_epi8(0x43);
  for (int64_t n = n0; n < n1; ++n) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    const uint8_t* c = codes + n * K;
    for (int64_t k = 0; k < K; k += 64) {
      const __m512i bytes = _mm512_loadu_si512(c + k);
      const __m512bh low = (__m512bh)_mm512_unpacklo_epi8(bytes, exponent);
      const __m512bh high = (__m512bh)_mm512_unpackhi_epi8(bytes, exponent);
      for (int r = 0; r < R; ++r) {
        acc[r] = _mm512_dpbf16_ps(acc[r], low, (__m512bh)_mm512_loadu_si512(x + r * K + k));
        acc[r] =
            _mm512_dpbf16_ps(acc[r], high, (__m512bh)_mm512_loadu_si512(x + r * K + k + 32));
      }
    }
    const float add = bias ? static_cast<float>(bias[n]) : 0.0f;
    for (int r = 0; r < R; ++r)
      y[r * N + n] = (_mm512_reduce_add_ps(acc[r]) - kOffset * xsum[r]) * scales[n] + add;
  }
}

template <int R>
void approximate_rows(const bf16* x, const float* xsum, const uint8_t* codes,
                      const float* scales, const bf16* bias, int64_t K, int64_t N, float* y) {
  at::parallel_for(0, N, kColumnsPerTask, [&](int64_t first, int64_t last) {
    approximate<R>(x, xsum, codes, scales, bias, K, N, first, last, y);
  });
}

// A bound on |logit from the codes - exact logit| for 16 tokens: scale / 2 * |x|_1 from the
// codes, the fp32 sums of both sides (under (2 K + 2) 2^-24 times the 447 * |x|_1 their terms
// can reach), and the exact logit's rounding to bf16 (2^-8 of it, taken as 2^-7).
inline __m512 error_bound(__m512 y, __m512 scale, __m512 per_scale) {
  const __m512 e = _mm512_mul_ps(scale, per_scale);
  const __m512 rounding =
      _mm512_mul_ps(_mm512_add_ps(_mm512_abs_ps(y), e), _mm512_set1_ps(0x1p-7f));
  return _mm512_add_ps(_mm512_add_ps(e, rounding), _mm512_set1_ps(1e-6f));
}

// For one row of x, its logits `y` [N] from the codes, in place: every token whose interval
// reaches the best lower bound gets the exact decode's logit.
void make_top_exact(const bf16* x, const float* scales, const bf16* weight, const bf16* bias,
                    int64_t K, int64_t N, float* y) {
  float l1 = 0;
  for (int64_t k = 0; k < K; ++k) l1 += std::abs(static_cast<float>(x[k]));
  const __m512 per_scale =
      _mm512_set1_ps(l1 * (0.5f + static_cast<float>(2 * K + 2) * 447.0f * 0x1p-24f));
  __m512 best = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 m = fs_simd::lanes(n, N);
    const __m512 v = _mm512_maskz_loadu_ps(m, y + n);
    const __m512 e = error_bound(v, _mm512_maskz_loadu_ps(m, scales + n), per_scale);
    best = _mm512_mask_max_ps(best, m, best, _mm512_sub_ps(v, e));
  }
  const __m512 best_low = _mm512_set1_ps(_mm512_reduce_max_ps(best));
  float sum = 0;
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 m = fs_simd::lanes(n, N);
    const __m512 v = _mm512_maskz_loadu_ps(m, y + n);
    const __m512 e = error_bound(v, _mm512_maskz_loadu_ps(m, scales + n), per_scale);
    const __m512 high = _mm512_add_ps(v, e);
    for (uint32_t keep = _mm512_mask_cmp_ps_mask(m, high, best_low, _CMP_GE_OQ); keep;
         keep &= keep - 1) {
      const int64_t token = n + __builtin_ctz(keep);
      fs_simd::bf16_dots<1>(x, weight + token * K, K, &sum);
      y[token] = static_cast<float>(bf16(sum + (bias ? static_cast<float>(bias[token]) : 0.0f)));
    }
  }
}
#endif

}  // namespace

namespace fs_decode {

// logits [R, N] fp32 for x [R, K] bf16: codes uint8 [N, K] (7-bit, in the layout above),
// scales fp32 [N], weight the bf16 [N, K] they came from, bias bf16 [N] or None.
at::Tensor int8_head(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, "int8_head: x [R, K] bf16");
  const int64_t R = x.size(0), K = x.size(1), N = codes.size(0);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.size(1) == K &&
                  K % 64 == 0,
              "int8_head: codes [N, K] uint8, K a multiple of 64");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.numel() == N,
              "int8_head: scales [N] fp32");
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() &&
                  weight.size(0) == N && weight.size(1) == K,
              "int8_head: weight [N, K] bf16");
  TORCH_CHECK(!bias || bias->numel() == N, "int8_head: bias [N]");
  const at::Tensor xc = x.contiguous();
  const at::Tensor b = bias ? bias->to(at::kBFloat16).contiguous() : at::Tensor();
  at::Tensor y = at::empty({R, N}, x.options().dtype(at::kFloat));
#ifdef __AVX512BF16__
  const bf16* bp = b.defined() ? b.data_ptr<bf16>() : nullptr;
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  const float* sp = scales.data_ptr<float>();
  const bf16* x0 = xc.data_ptr<bf16>();
  std::vector<float> xsum(static_cast<size_t>(R), 0.0f);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k) xsum[r] += static_cast<float>(x0[r * K + k]);
  fs_simd::row_passes(R, [&](int64_t r0, auto count) {
    approximate_rows<decltype(count)::value>(x0 + r0 * K, xsum.data() + r0, cp, sp, bp, K, N,
                                             y.data_ptr<float>() + r0 * N);
  });
  const bf16* wp = weight.data_ptr<bf16>();
  at::parallel_for(0, R, 1, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r)
      make_top_exact(x0 + r * K, sp, wp, bp, K, N, y.data_ptr<float>() + r * N);
  });
#else
  // Without AVX512-BF16 the Python side keeps its other 8-bit head; this stays correct anyway.
  y.copy_(at::linear(xc, weight, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt));
#endif
  return y;
}

}  // namespace fs_decode

TORCH_LIBRARY_FRAGMENT(frontier_signal, m) {
  m.def("int8_head(Tensor x, Tensor codes, Tensor scales, Tensor weight, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) { m.impl("int8_head", &fs_decode::int8_head); }
