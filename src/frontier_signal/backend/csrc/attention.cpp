// The softmax of training attention on CPU, forward and backward, over bf16 scores
// (backend/cpu_attention.py does the matmuls with ATen and calls these between them).
//
// torch's CPU attention spends most of a training step's attention time outside its matmuls:
// the flash kernel's backward works block by block, and the matmul path makes ~15 fp32 passes
// over the [rows, keys] scores. Here each is one pass that reads bf16 and writes bf16, with the
// row in fp32 in between: scale, mask (causal and/or a boolean mask shared by the heads), a
// max-subtracted exp, normalise, and for backward dS = P * (dP - sum(P * dP)) * scale.
//
// Layout: scores [batch, rows_per_batch / queries, queries, keys] flattened to rows: row r of
// batch b is query r % queries (the heads that share a key-value head are stacked along rows,
// so one matmul serves them). Causal: query i sees keys j <= i + keys - queries. A row that sees
// no key gets zeros (padding), not NaN.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

namespace {

using namespace fs_simd;
constexpr int64_t kRowsPerTask = 16;

struct RowMap {
  int64_t rows_per_batch;
  int64_t queries;
  int64_t keys;
  bool causal;
  const bool* mask;        // [mask_batches, queries, keys] or nullptr
  int64_t mask_batches;

  // The keys row `row` may see: [0, limit), further restricted by `allowed` (nullptr: all).
  int64_t limit(int64_t row) const {
    if (!causal) return keys;
    const int64_t query = (row % rows_per_batch) % queries;
    return std::clamp<int64_t>(query + keys - queries + 1, 0, keys);
  }
  const bool* allowed(int64_t row) const {
    if (mask == nullptr) return nullptr;
    const int64_t batch = mask_batches == 1 ? 0 : row / rows_per_batch;
    const int64_t query = (row % rows_per_batch) % queries;
    return mask + (batch * queries + query) * keys;
  }
};

#ifdef FS_AVX512
void softmax_row(const bf16* s, bf16* p, float* buf, float scale, int64_t limit, int64_t keys,
                 const bool* allowed, float* lse = nullptr) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  __m512 top = _mm512_set1_ps(neg_inf);
  for (int64_t j = 0; j < limit; j += 16) {
    const __mmask16 m = lanes(j, limit);
    const __mmask16 ok = allowed_lanes(allowed, j, m);
    const __m512 x = _mm512_mask_mul_ps(_mm512_set1_ps(neg_inf), ok, load_bf16(s + j, m),
                                        _mm512_set1_ps(scale));
    _mm512_mask_storeu_ps(buf + j, m, x);
    top = _mm512_max_ps(top, x);
  }
  const float row_max = limit > 0 ? _mm512_reduce_max_ps(top) : neg_inf;
  if (row_max == neg_inf) {
    std::fill(p, p + keys, bf16(0.0f));
    if (lse != nullptr) *lse = neg_inf;
    return;
  }
  const __m512 vmax = _mm512_set1_ps(row_max);
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < limit; j += 16) {
    const __mmask16 m = lanes(j, limit);
    const __m512 x = _mm512_maskz_loadu_ps(m, buf + j);
    // masked keys hold -inf: keep them at exactly 0
    const __mmask16 finite = _mm512_mask_cmp_ps_mask(m, x, _mm512_set1_ps(neg_inf), _CMP_NEQ_OQ);
    const __m512 e = _mm512_maskz_mov_ps(finite, exp512(_mm512_sub_ps(x, vmax)));
    _mm512_mask_storeu_ps(buf + j, m, e);
    total = _mm512_add_ps(total, e);
  }
  const float sum = _mm512_reduce_add_ps(total);
  if (lse != nullptr) *lse = row_max + std::log(sum);
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (int64_t j = 0; j < limit; j += 16) {
    const __mmask16 m = lanes(j, limit);
    store_bf16(p + j, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, buf + j), inv), m);
  }
  std::fill(p + limit, p + keys, bf16(0.0f));
}

void softmax_backward_row(const bf16* p, const bf16* dp, bf16* ds, float scale, int64_t limit,
                          int64_t keys) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t j = 0; j < limit; j += 16) {
    const __mmask16 m = lanes(j, limit);
    acc = _mm512_fmadd_ps(load_bf16(p + j, m), load_bf16(dp + j, m), acc);
  }
  const __m512 delta = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < limit; j += 16) {
    const __mmask16 m = lanes(j, limit);
    const __m512 g = _mm512_mul_ps(load_bf16(p + j, m), _mm512_sub_ps(load_bf16(dp + j, m), delta));
    store_bf16(ds + j, _mm512_mul_ps(g, vscale), m);
  }
  std::fill(ds + limit, ds + keys, bf16(0.0f));
}
#else
void softmax_row(const bf16* s, bf16* p, float* buf, float scale, int64_t limit, int64_t keys,
                 const bool* allowed, float* lse = nullptr) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float row_max = neg_inf;
  for (int64_t j = 0; j < limit; ++j) {
    buf[j] = (allowed == nullptr || allowed[j]) ? static_cast<float>(s[j]) * scale : neg_inf;
    row_max = std::max(row_max, buf[j]);
  }
  if (row_max == neg_inf) {
    std::fill(p, p + keys, bf16(0.0f));
    if (lse != nullptr) *lse = neg_inf;
    return;
  }
  float total = 0.0f;
  for (int64_t j = 0; j < limit; ++j) {
    buf[j] = buf[j] == neg_inf ? 0.0f : std::exp(buf[j] - row_max);
    total += buf[j];
  }
  if (lse != nullptr) *lse = row_max + std::log(total);
  for (int64_t j = 0; j < limit; ++j) p[j] = bf16(buf[j] / total);
  std::fill(p + limit, p + keys, bf16(0.0f));
}

void softmax_backward_row(const bf16* p, const bf16* dp, bf16* ds, float scale, int64_t limit,
                          int64_t keys) {
  float delta = 0.0f;
  for (int64_t j = 0; j < limit; ++j) delta += static_cast<float>(p[j]) * static_cast<float>(dp[j]);
  for (int64_t j = 0; j < limit; ++j) {
    ds[j] = bf16(static_cast<float>(p[j]) * (static_cast<float>(dp[j]) - delta) * scale);
  }
  std::fill(ds + limit, ds + keys, bf16(0.0f));
}
#endif

RowMap row_map(const at::Tensor& scores, int64_t queries, bool causal,
               const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(scores.dim() == 4 && scores.scalar_type() == at::kBFloat16 && scores.is_contiguous(),
              "scores: contiguous bf16 [batch, groups, rows, keys]");
  const int64_t rows_per_batch = scores.size(1) * scores.size(2);
  const int64_t keys = scores.size(3);
  TORCH_CHECK(queries > 0 && scores.size(2) % queries == 0, "rows must stack whole queries");
  RowMap map{rows_per_batch, queries, keys, causal, nullptr, 1};
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kBool && m.is_contiguous() && m.dim() == 3 &&
                    (m.size(0) == 1 || m.size(0) == scores.size(0)) && m.size(1) == queries &&
                    m.size(2) == keys,
                "mask: contiguous bool [1 or batch, queries, keys]");
    map.mask = m.data_ptr<bool>();
    map.mask_batches = m.size(0);
  }
  return map;
}

at::Tensor attention_softmax(const at::Tensor& scores, double scale, int64_t queries, bool causal,
                             const std::optional<at::Tensor>& mask) {
  const RowMap map = row_map(scores, queries, causal, mask);
  at::Tensor probs = at::empty_like(scores);
  const bf16* s = scores.data_ptr<bf16>();
  bf16* p = probs.data_ptr<bf16>();
  const int64_t rows = scores.numel() / map.keys;
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t first, int64_t last) {
    std::vector<float> buf(map.keys + 16);
    for (int64_t row = first; row < last; ++row) {
      softmax_row(s + row * map.keys, p + row * map.keys, buf.data(), static_cast<float>(scale),
                  map.limit(row), map.keys, map.allowed(row));
    }
  });
  return probs;
}

// softmax over the last dim of bf16 logits [rows, vocab] → (bf16 probabilities, fp32 log-sum-exp
// of each row), one pass: the unembedding's training forward (backend/unembed.py).
std::tuple<at::Tensor, at::Tensor> softmax_lse(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kBFloat16 && logits.is_contiguous(),
              "logits: contiguous bf16 [rows, vocab]");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  at::Tensor probs = at::empty_like(logits);
  at::Tensor lse = at::empty({rows}, logits.options().dtype(at::kFloat));
  const bf16* s = logits.data_ptr<bf16>();
  bf16* p = probs.data_ptr<bf16>();
  float* out = lse.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t first, int64_t last) {
    std::vector<float> buf(vocab + 16);
    for (int64_t row = first; row < last; ++row) {
      softmax_row(s + row * vocab, p + row * vocab, buf.data(), 1.0f, vocab, vocab, nullptr,
                  out + row);
    }
  });
  return {probs, lse};
}

at::Tensor attention_softmax_backward(const at::Tensor& probs, const at::Tensor& grad_probs,
                                      double scale, int64_t queries, bool causal) {
  const RowMap map = row_map(probs, queries, causal, std::nullopt);
  TORCH_CHECK(grad_probs.sizes() == probs.sizes() && grad_probs.scalar_type() == at::kBFloat16,
              "grad_probs: bf16 like probs");
  const at::Tensor dp = grad_probs.contiguous();
  at::Tensor grad_scores = at::empty_like(probs);
  const bf16* p = probs.data_ptr<bf16>();
  const bf16* g = dp.data_ptr<bf16>();
  bf16* ds = grad_scores.data_ptr<bf16>();
  const int64_t rows = probs.numel() / map.keys;
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t at = row * map.keys;
      softmax_backward_row(p + at, g + at, ds + at, static_cast<float>(scale), map.limit(row),
                           map.keys);
    }
  });
  return grad_scores;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(frontier_signal, m) {
  m.def(
      "attention_softmax(Tensor scores, float scale, int queries, bool causal, Tensor? mask) "
      "-> Tensor");
  m.def(
      "attention_softmax_backward(Tensor probs, Tensor grad_probs, float scale, int queries, "
      "bool causal) -> Tensor");
  m.def("softmax_lse(Tensor logits) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) {
  m.impl("attention_softmax", &attention_softmax);
  m.impl("attention_softmax_backward", &attention_softmax_backward);
  m.impl("softmax_lse", &softmax_lse);
}
