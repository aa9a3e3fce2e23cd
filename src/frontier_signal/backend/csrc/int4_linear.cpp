// y [R, N] = x [R, K] @ W.T (+ bias) for a GGUF Q4_1 weight kept as its 4-bit codes: the decode
// matmul of the bundled SmolLM2 (`decode_4bit.pack` packs, `native.py` builds this file).
//
// Layout: `codes` uint8 [N, K / 2], block b of row n (32 inputs) in bytes [16 b, 16 b + 16),
// byte j holding input j in its low nibble and input j + 16 in its high one; `dm` fp32
// [N, K / 32, 2], each block's step d and minimum m (the file's fp16 values, exact). A weight is
// code * d + m in fp32, rounded once to bf16.
//
// Why our own: torch's int4 kernel (`_weight_int4pack_mm_for_cpu`) de-quantizes into fp32 and
// multiplies one input at a time, so at 8 rows (8 requests decoding together) it is bound by
// its FMAs: 11-12 ms of a 19 ms step here. This de-quantizes each block of 32 weights once into
// one bf16 vector (a 16-entry table per block, looked up by the codes) and multiplies it with
// every row by `vdpbf16ps` (32 products per instruction, fp32 sums): the 8-row step 19 -> 16 ms,
// batch 1 as fast as torch's. Each row's sums run in the same order whatever the row count, so
// a request decodes the same tokens alone and in a batch.
//
// A caller may hand it the bytes of what comes next (`coming`, prefetch.h): each task brings its
// share of them into cache as it goes through its columns, while this matmul leaves the memory
// idle.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"
#include "prefetch.h"

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

#include <algorithm>
#include <optional>

namespace {

using bf16 = c10::BFloat16;

constexpr int64_t kBlock = 32;    // GGUF's block of inputs
constexpr int64_t kColumnsPerTask = 16;

#ifdef __AVX512BF16__
// The 32 weights of one block as bf16, in input order: the block's 16 possible values
// (code * d + m, rounded) in a table held twice over (entries i and i + 16 alike), looked up by
// the 32 codes. The codes' 16 bytes, loaded twice into one vector and widened to 16-bit words,
// index it as they are for inputs 0-15 (`vpermw` reads an index's low 5 bits: bit 4, the high
// nibble's lowest, picks the table's second copy) and shifted right by 4 for inputs 16-31.
inline __m512bh weights(const uint8_t* codes, const float* dm) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 values = _mm512_fmadd_ps(iota, _mm512_set1_ps(dm[0]), _mm512_set1_ps(dm[1]));
  const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(values, values);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
  const __m256i twice = _mm256_broadcastsi128_si256(packed);
  const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  const __m512i index = _mm512_srlv_epi16(_mm512_cvtepu8_epi16(twice), shift);
  return (__m512bh)_mm512_permutexvar_epi16(index, table);
}

// Output columns [n, n + C) for R rows: each block's weights of the C columns, then every row's
// inputs loaded once for all C of them (at 8 rows, one column at a time spent more of the
// loads than the products).
template <int R, int C>
inline void column_group(const bf16* x, const uint8_t* codes, const float* dm, const bf16* bias,
                         int64_t K, int64_t N, int64_t n, bf16* y) {
  const int64_t blocks = K / kBlock;
  __m512 acc[C][R];
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) acc[c][r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512bh w[C];
    for (int c = 0; c < C; ++c)
      w[c] = weights(codes + (n + c) * (K / 2) + b * 16, dm + ((n + c) * blocks + b) * 2);
    for (int r = 0; r < R; ++r) {
      const __m512bh in = (__m512bh)_mm512_loadu_si512(x + r * K + b * kBlock);
      for (int c = 0; c < C; ++c) acc[c][r] = _mm512_dpbf16_ps(acc[c][r], w[c], in);
    }
  }
  for (int c = 0; c < C; ++c) {
    const float add = bias ? static_cast<float>(bias[n + c]) : 0.0f;
    for (int r = 0; r < R; ++r) y[r * N + n + c] = bf16(_mm512_reduce_add_ps(acc[c][r]) + add);
  }
}

template <int R>
void columns(const bf16* x, const uint8_t* codes, const float* dm, const bf16* bias, int64_t K,
             int64_t N, int64_t n0, int64_t n1, bf16* y, const fs_prefetch::Plan* plan) {
  // Two columns at a time from 4 rows up; below, reading memory bounds the kernel and a second
  // stream of codes only slowed it (one row: 4.6-5.2 vs 4.2-4.6 ms a decode step).
  constexpr int kC = R >= 4 ? 2 : 1;
  fs_prefetch::Stream coming(plan, n0, n1, N, n1 - n0);
  int64_t n = n0;
  for (; n + kC <= n1; n += kC) {
    for (int c = 0; c < kC; ++c) coming.step();
    column_group<R, kC>(x, codes, dm, bias, K, N, n, y);
  }
  for (; n < n1; ++n) {
    coming.step();
    column_group<R, 1>(x, codes, dm, bias, K, N, n, y);
  }
}

template <int R>
void rows(const bf16* x, const uint8_t* codes, const float* dm, const bf16* bias, int64_t K,
          int64_t N, bf16* y, const fs_prefetch::Plan* plan) {
  at::parallel_for(0, N, kColumnsPerTask, [&](int64_t first, int64_t last) {
    columns<R>(x, codes, dm, bias, K, N, first, last, y, plan);
  });
}
#endif

// Without AVX512-BF16 (the Python side does not pick this layout there; kept correct anyway).
[[maybe_unused]] void scalar(const bf16* x, const uint8_t* codes, const float* dm,
                             const bf16* bias, int64_t R, int64_t K, int64_t N, bf16* y) {
  at::parallel_for(0, N, kColumnsPerTask, [&](int64_t first, int64_t last) {
    for (int64_t n = first; n < last; ++n)
      for (int64_t r = 0; r < R; ++r) {
        float sum = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t b = k / kBlock, j = k % kBlock;
          const uint8_t byte = codes[n * (K / 2) + b * 16 + j % 16];
          const int code = j < 16 ? (byte & 0x0f) : (byte >> 4);
          const float* s = dm + (n * (K / kBlock) + b) * 2;
          const float w = static_cast<float>(bf16(static_cast<float>(code) * s[0] + s[1]));
          sum += w * static_cast<float>(x[r * K + k]);
        }
        y[r * N + n] = bf16(sum + (bias ? static_cast<float>(bias[n]) : 0.0f));
      }
  });
}

}  // namespace

namespace fs_decode {

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& dm,
                       const std::optional<at::Tensor>& bias, const fs_prefetch::Plan* coming) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, "int4_linear: x [R, K] bf16");
  const int64_t R = x.size(0), K = x.size(1), N = codes.size(0);
  TORCH_CHECK(K % kBlock == 0 && codes.scalar_type() == at::kByte && codes.is_contiguous() &&
                  codes.size(1) == K / 2,
              "int4_linear: codes [N, K / 2] uint8, K a multiple of 32");
  TORCH_CHECK(dm.scalar_type() == at::kFloat && dm.is_contiguous() && dm.numel() == N * K / 16,
              "int4_linear: dm [N, K / 32, 2] fp32");
  TORCH_CHECK(!bias || bias->numel() == N, "int4_linear: bias [N]");
  const at::Tensor xc = x.contiguous();
  const at::Tensor b = bias ? bias->to(at::kBFloat16).contiguous() : at::Tensor();
  at::Tensor y = at::empty({R, N}, x.options());
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  const float* sp = dm.data_ptr<float>();
  const bf16* bp = b.defined() ? b.data_ptr<bf16>() : nullptr;
  fs_simd::row_passes(R, [&](int64_t r0, auto count) {
    const bf16* xp = xc.data_ptr<bf16>() + r0 * K;
    bf16* yp = y.data_ptr<bf16>() + r0 * N;
#ifdef __AVX512BF16__
    rows<decltype(count)::value>(xp, cp, sp, bp, K, N, yp, r0 == 0 ? coming : nullptr);
#else
    (void)coming;
    scalar(xp, cp, sp, bp, decltype(count)::value, K, N, yp);
#endif
  });
  return y;
}

}  // namespace fs_decode

namespace {
at::Tensor int4_linear_op(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& dm,
                          const std::optional<at::Tensor>& bias) {
  return fs_decode::int4_linear(x, codes, dm, bias, nullptr);
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(frontier_signal, m) {
  m.def("int4_linear(Tensor x, Tensor codes, Tensor dm, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) { m.impl("int4_linear", &int4_linear_op); }
