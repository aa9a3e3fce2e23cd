// Helpers for the bf16 kernels (attention.cpp, rms_norm.cpp, silu_gate.cpp, lora.cpp,
// adamw_8bit.cpp, llama_step.cpp, int8_head.cpp): AVX512 loads and stores of bf16 as fp32 lanes
// (round to nearest even), a vectorised e^x, tail masks, the bf16 dot products of decode, and
// the dispatch from a row count to the kernels templated on it.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define FS_AVX512 1
#include <immintrin.h>
#endif
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

namespace fs_simd {

using bf16 = c10::BFloat16;

// Calls f(std::integral_constant<int, R>{}) with R = rows for 1 to 7 rows, else R = 8: the decode
// kernels are templates on the rows they take a pass over the weights with, and this is the one
// switch from a run-time row count to them.
template <typename F>
inline void with_rows(int64_t rows, F&& f) {
  switch (rows) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

constexpr int64_t kMaxRows = 8;  // rows a decode kernel takes in one pass over the weights

// Calls f(r0, count) for each pass of at most kMaxRows rows over [0, rows): r0 the pass's first
// row, count its row count as `with_rows` gives it (count's value is a compile-time constant).
template <typename F>
inline void row_passes(int64_t rows, F&& f) {
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxRows)
    with_rows(rows - r0 < kMaxRows ? rows - r0 : kMaxRows, [&](auto count) { f(r0, count); });
}

#ifdef FS_AVX512
inline __m512 load_bf16(const bf16* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

inline void store_bf16(bf16* p, __m512 x, __mmask16 m) {  // round to nearest even (finite x)
  __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  bits = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16)));
}

inline __m512 round_bf16(__m512 x) {  // to bf16 and back, nearest even
  __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  bits = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  return _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(0xffff0000)));
}

// e^x, ~1e-7 relative; below -87 it gives e^-87, above ~88.7 infinity (as expf overflows)
inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(200.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 lanes(int64_t j, int64_t end) {  // the lanes of [j, j + 16) before `end`
  const int64_t left = end - j;
  return left >= 16 ? static_cast<__mmask16>(0xffff)
                    : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
}

inline __mmask16 allowed_lanes(const bool* allowed, int64_t j, __mmask16 m) {
  if (allowed == nullptr) return m;
  const __m128i bytes = _mm_maskz_loadu_epi8(m, allowed + j);
  return _mm_test_epi8_mask(bytes, bytes);
}

#endif

#ifdef __AVX512BF16__
// sums[j * R + r] = x[r] . w[j] over K inputs, for R rows of x against W weight rows (bf16,
// fp32 sums): 32 products per `vdpbf16ps`, a masked tail, one horizontal sum. Each sum runs in
// the same order whatever R and W; several weight rows keep more sums in flight where R is
// small (the decode LoRA's first pass, decode_lora.cpp).
template <int R, int W>
inline void bf16_dots_rows(const bf16* x, const bf16* const (&w)[W], int64_t K, float* sums) {
  const int64_t full = K / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((1ull << (K - full)) - 1);
  __m512 acc[W][R];
  for (int j = 0; j < W; ++j)
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < full; k += 32) {
    __m512bh wk[W];
    for (int j = 0; j < W; ++j) wk[j] = (__m512bh)_mm512_loadu_si512(w[j] + k);
    for (int r = 0; r < R; ++r) {
      const __m512bh xr = (__m512bh)_mm512_loadu_si512(x + r * K + k);
      for (int j = 0; j < W; ++j) acc[j][r] = _mm512_dpbf16_ps(acc[j][r], wk[j], xr);
    }
  }
  if (tail) {
    __m512bh wk[W];
    for (int j = 0; j < W; ++j) wk[j] = (__m512bh)_mm512_maskz_loadu_epi16(tail, w[j] + full);
    for (int r = 0; r < R; ++r) {
      const __m512bh xr = (__m512bh)_mm512_maskz_loadu_epi16(tail, x + r * K + full);
      for (int j = 0; j < W; ++j) acc[j][r] = _mm512_dpbf16_ps(acc[j][r], wk[j], xr);
    }
  }
  for (int j = 0; j < W; ++j)
    for (int r = 0; r < R; ++r) sums[j * R + r] = _mm512_reduce_add_ps(acc[j][r]);
}

// sums[r] = x[r] . w for one weight row. The decode's exact matmul (llama_step.cpp) and the
// 8-bit head's exact re-check (int8_head.cpp) both sum this way, so they give the same logits
// bit for bit.
template <int R>
inline void bf16_dots(const bf16* x, const bf16* w, int64_t K, float* sums) {
  const bf16* const rows[1] = {w};
  bf16_dots_rows<R, 1>(x, rows, K, sums);
}
#endif

}  // namespace fs_simd
