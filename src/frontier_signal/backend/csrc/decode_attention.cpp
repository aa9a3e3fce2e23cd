// Attention of a decode step over the KV cache (`llama_step.cpp` calls `attend`): each query
// head over the keys [0, slot] of its cache, scores and softmax in fp32, the probabilities
// rounded to bf16 before weighting the values (as torch's CPU flash kernel does for bf16).
//
// With grouped-query attention several query heads read the same keys and values (SmolLM2:
// 3 per KV head). Where the CPU has AVX512 a task takes the heads of one KV head (or a part of
// them, so that there are tasks for every thread) and widens each key and value row to fp32
// once for all of them; e^x runs 16 keys at a time. Each head's sums run in the same order
// whatever the batch and grouping, so a row gets the same values alone and in a batch.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "bf16_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using bf16 = c10::BFloat16;

constexpr int64_t kHeadsPerPass = 8;  // query heads whose dot products share one key vector

inline float to_f(bf16 v) { return static_cast<float>(v); }

// Scratch of one task: per head its scores [keys], sum of weights, output accumulator [hd].
struct Scratch {
  std::vector<float> scores, total, acc;
  Scratch(int64_t heads, int64_t keys, int64_t hd)
      : scores(static_cast<size_t>(heads * keys)),
        total(static_cast<size_t>(heads)),
        acc(static_cast<size_t>(heads * hd)) {}
};

#ifdef FS_AVX512
// Scores q_h . k_j * scale of H heads (q: [H, hd] fp32) for every key, -inf where skipped; each
// key vector widened once for all H heads.
template <int H>
void scores(const float* q, const bf16* K, const bool* ok, int64_t keys, int64_t hd, float scale,
            float* p, float* top) {
  const float minus_inf = -std::numeric_limits<float>::infinity();
  for (int h = 0; h < H; ++h) top[h] = minus_inf;
  for (int64_t j = 0; j < keys; ++j) {
    if (ok && !ok[j]) {
      for (int h = 0; h < H; ++h) p[h * keys + j] = minus_inf;
      continue;
    }
    __m512 dot[H];
    for (int h = 0; h < H; ++h) dot[h] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d += 16) {
      const __mmask16 m = fs_simd::lanes(d, hd);
      const __m512 k = fs_simd::load_bf16(K + j * hd + d, m);
      for (int h = 0; h < H; ++h)
        dot[h] = _mm512_fmadd_ps(k, _mm512_maskz_loadu_ps(m, q + h * hd + d), dot[h]);
    }
    for (int h = 0; h < H; ++h) {
      p[h * keys + j] = _mm512_reduce_add_ps(dot[h]) * scale;
      top[h] = std::max(top[h], p[h * keys + j]);
    }
  }
}

// In place: each score becomes its weight e^(p - top) rounded to bf16 (0 where skipped); the
// sum of the unrounded ones goes to `total`.
void weights(float* p, int64_t keys, float top, float* total) {
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < keys; j += 16) {
    const __mmask16 m = fs_simd::lanes(j, keys);
    const __m512 pj = _mm512_maskz_loadu_ps(m, p + j);
    const __mmask16 kept = _mm512_mask_cmp_ps_mask(m, pj, minus_inf, _CMP_NEQ_OQ);
    const __m512 e = _mm512_maskz_mov_ps(
        kept, fs_simd::exp512(_mm512_sub_ps(pj, _mm512_set1_ps(top))));
    sum = _mm512_add_ps(sum, e);
    _mm512_mask_storeu_ps(p + j, m, fs_simd::round_bf16(e));
  }
  *total = _mm512_reduce_add_ps(sum);
}

// acc_h = sum_j w_hj v_j for H heads, each value vector widened once for all of them.
template <int H>
void weigh_values(const float* w, const bf16* V, const bool* ok, int64_t keys, int64_t hd,
                  float* acc) {
  std::fill(acc, acc + H * hd, 0.0f);
  for (int64_t j = 0; j < keys; ++j) {
    if (ok && !ok[j]) continue;
    for (int64_t d = 0; d < hd; d += 16) {
      const __mmask16 m = fs_simd::lanes(d, hd);
      const __m512 v = fs_simd::load_bf16(V + j * hd + d, m);
      for (int h = 0; h < H; ++h) {
        float* a = acc + h * hd + d;
        const __m512 sum =
            _mm512_fmadd_ps(_mm512_set1_ps(w[h * keys + j]), v, _mm512_maskz_loadu_ps(m, a));
        _mm512_mask_storeu_ps(a, m, sum);
      }
    }
  }
}

template <int H>
void attend_heads(const float* q, const bf16* K, const bf16* V, const bool* ok, int64_t keys,
                  int64_t hd, float scale, Scratch& s, bf16* out) {
  float top[H];
  scores<H>(q, K, ok, keys, hd, scale, s.scores.data(), top);
  for (int h = 0; h < H; ++h) weights(s.scores.data() + h * keys, keys, top[h], &s.total[h]);
  weigh_values<H>(s.scores.data(), V, ok, keys, hd, s.acc.data());
  for (int h = 0; h < H; ++h) {
    const __m512 inv = _mm512_set1_ps(1.0f / s.total[h]);
    for (int64_t d = 0; d < hd; d += 16) {
      const __mmask16 m = fs_simd::lanes(d, hd);
      const __m512 a = _mm512_maskz_loadu_ps(m, s.acc.data() + h * hd + d);
      fs_simd::store_bf16(out + h * hd + d, _mm512_mul_ps(a, inv), m);
    }
  }
}
#endif

// H (≤ kHeadsPerPass) heads of one KV head: q [H, hd] fp32, out [H, hd].
void attend_heads(int64_t H, const float* q, const bf16* K, const bf16* V, const bool* ok,
                  int64_t keys, int64_t hd, float scale, Scratch& s, bf16* out) {
#ifdef FS_AVX512
  fs_simd::with_rows(H, [&](auto count) {
    attend_heads<decltype(count)::value>(q, K, V, ok, keys, hd, scale, s, out);
  });
#else
  for (int64_t h = 0; h < H; ++h) {
    float* p = s.scores.data();
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < keys; ++j) {
      if (ok && !ok[j]) continue;
      float dot = 0;
      for (int64_t d = 0; d < hd; ++d) dot += to_f(K[j * hd + d]) * q[h * hd + d];
      p[j] = dot * scale;
      top = std::max(top, p[j]);
    }
    float total = 0;
    float* acc = s.acc.data();
    std::fill(acc, acc + hd, 0.0f);
    for (int64_t j = 0; j < keys; ++j) {
      if (ok && !ok[j]) continue;
      const float e = std::exp(p[j] - top);
      total += e;
      const float weight = to_f(bf16(e));
      for (int64_t d = 0; d < hd; ++d) acc[d] += weight * to_f(V[j * hd + d]);
    }
    for (int64_t d = 0; d < hd; ++d) out[h * hd + d] = bf16(acc[d] / total);
  }
#endif
}

}  // namespace

namespace fs_decode {

// qkv [B, heads + 2 kv_heads, hd] (this step's rotated queries first), cache per row
// [2, kv_heads, capacity, hd], valid [B, capacity] or null, out [B, heads * hd].
void attend(const bf16* qkv, const bf16* cache, const bool* valid, bf16* out, int64_t batch,
            int64_t heads, int64_t kv_heads, int64_t hd, int64_t capacity, int64_t slot) {
  const int64_t group = heads / kv_heads, keys = slot + 1, every = heads + 2 * kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Each KV head's query heads in parts of at most kHeadsPerPass, and in as many parts as it
  // takes for every thread to have two tasks.
  const int64_t wanted = 2 * at::get_num_threads(), rows = batch * kv_heads;
  int64_t parts = std::max<int64_t>((group + kHeadsPerPass - 1) / kHeadsPerPass,
                                    std::min(group, (wanted + rows - 1) / rows));
  const int64_t per_part = (group + parts - 1) / parts;
  parts = (group + per_part - 1) / per_part;
  at::parallel_for(0, rows * parts, 1, [&](int64_t first, int64_t last) {
    Scratch scratch(per_part, keys, hd);
    std::vector<float> q(static_cast<size_t>(per_part * hd));
    for (int64_t task = first; task < last; ++task) {
      const int64_t b = task / (kv_heads * parts), g = task / parts % kv_heads;
      const int64_t h0 = g * group + task % parts * per_part;
      const int64_t H = std::min(per_part, (g + 1) * group - h0);
      const bf16* qb = qkv + (b * every + h0) * hd;
      for (int64_t i = 0; i < H * hd; ++i) q[i] = to_f(qb[i]);
      const bf16* K = cache + ((b * 2 + 0) * kv_heads + g) * capacity * hd;
      const bf16* V = cache + ((b * 2 + 1) * kv_heads + g) * capacity * hd;
      attend_heads(H, q.data(), K, V, valid ? valid + b * capacity : nullptr, keys, hd, scale,
                   scratch, out + (b * heads + h0) * hd);
    }
  });
}

}  // namespace fs_decode
