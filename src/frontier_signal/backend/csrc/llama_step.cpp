// The decoder layers of one Llama decode step in C++ (`backend/native.py` builds and loads it).
//
// At batch 1 the Python step (`llama_decode.LlamaDecoder._step`) spends more time dispatching
// ~25 torch ops per layer on vectors of a few hundred values than in its weight matmuls. Here
// the matmuls of the base weights still go through ATen (the GGUF 4-bit codes, int8 or exact
// bf16 kernels), and everything between them -- RMSNorm, RoPE, the cache write, attention over
// the cache, SiLU-gating, residual adds and each run's LoRA terms (`decode_lora.cpp`) -- runs
// as loops over the step's few rows, with the same roundings to bf16 as the Python step where
// it rounds (the LoRA weights are bf16 here, fp32 there). Exact bf16 weights go through our own
// matrix-vector kernel where the CPU has AVX512-BF16 (`small_linear`, also the op `linear`).
//
// Registered as torch.ops.frontier_signal.decode_layers; the Python side flattens its weights
// and LoRA terms into the lists this op takes (`native.NativeStep`).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "prefetch.h"

namespace fs_decode {
// int4_linear.cpp: the GGUF's 4-bit codes in our layout; each task prefetches its share of
// `coming` (may be null) as it goes
at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& dm,
                       const std::optional<at::Tensor>& bias, const fs_prefetch::Plan* coming);
// decode_lora.cpp: one group's base matmul (`base`, handed its LoRA bytes to prefetch), then
// each run's LoRA term of the group, from the flattened lists
at::Tensor lora_group(const at::Tensor& x,
                      const std::function<at::Tensor(const fs_prefetch::Plan*)>& base,
                      const std::vector<at::Tensor>& tensors, size_t& t,
                      const std::vector<int64_t>& meta, size_t& m);
// decode_attention.cpp: each query head over the cache [0, slot]
void attend(const c10::BFloat16* qkv, const c10::BFloat16* cache, const bool* valid,
            c10::BFloat16* out, int64_t batch, int64_t heads, int64_t kv_heads, int64_t hd,
            int64_t capacity, int64_t slot);
}  // namespace fs_decode

namespace {

using bf16 = c10::BFloat16;

constexpr int64_t kGroups = 4;          // qkv, o, gate_up, down (decode_lora.GROUPS)
constexpr int64_t kMatmulTensors = 3;   // per group: (weight, bias?, -) / (codes, scales, bias?)
constexpr int64_t kGroup4bit = 32;      // GGUF's block size

inline float to_f(bf16 v) { return static_cast<float>(v); }

void to_float(const bf16* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = to_f(src[i]);
}

// As LlamaRMSNorm: normalise in fp32, round to bf16, then scale by the (bf16) weight.
void rms_norm(const bf16* x, const bf16* weight, bf16* out, int64_t rows, int64_t dim,
              float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const bf16* row = x + r * dim;
#ifdef FS_AVX512
    __m512 squares = _mm512_setzero_ps();
    for (int64_t i = 0; i < dim; i += 16) {
      const __m512 v = fs_simd::load_bf16(row + i, fs_simd::lanes(i, dim));
      squares = _mm512_fmadd_ps(v, v, squares);
    }
    const float sum = _mm512_reduce_add_ps(squares);
#else
    float sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += to_f(row[i]) * to_f(row[i]);
#endif
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
#ifdef FS_AVX512
    for (int64_t i = 0; i < dim; i += 16) {
      const __mmask16 m = fs_simd::lanes(i, dim);
      const __m512 normed = fs_simd::round_bf16(
          _mm512_mul_ps(fs_simd::load_bf16(row + i, m), _mm512_set1_ps(inv)));
      fs_simd::store_bf16(out + r * dim + i,
                          _mm512_mul_ps(normed, fs_simd::load_bf16(weight + i, m)), m);
    }
#else
    for (int64_t i = 0; i < dim; ++i)
      out[r * dim + i] = bf16(to_f(bf16(to_f(row[i]) * inv)) * to_f(weight[i]));
#endif
  }
}

#ifdef __AVX512BF16__
// y [R, N] = x [R, K] @ W.T for a few rows, bf16 in and out (fp32 sums): each weight row is
// read once for every row of x, 32 values per `vdpbf16ps`. oneDNN's bf16 GEMM reads weights
// that are not in cache at ~8 GB/s at 1-8 rows here; this runs at the memory's speed.
template <int R>
void bf16_rows(const bf16* x, const bf16* W, const bf16* bias, int64_t K, int64_t N,
               int64_t n0, int64_t n1, bf16* y) {
  float sums[R];
  for (int64_t n = n0; n < n1; ++n) {
    fs_simd::bf16_dots<R>(x, W + n * K, K, sums);
    const float b = bias ? to_f(bias[n]) : 0.0f;
    for (int r = 0; r < R; ++r) y[r * N + n] = bf16(sums[r] + b);
  }
}

template <int R>
void bf16_linear_rows(const bf16* x, const bf16* W, const bf16* bias, int64_t K, int64_t N,
                      bf16* y) {
  at::parallel_for(0, N, 32, [&](int64_t first, int64_t last) {
    bf16_rows<R>(x, W, bias, K, N, first, last, y);
  });
}
#endif

constexpr int64_t kMaxGemvRows = 24;     // beyond, ATen's GEMM is as fast (measured)

// x [R, K] @ W.T (+ bias) for bf16 x and W: our kernel, 8 rows per pass over W, for up to
// kMaxGemvRows rows where the CPU has AVX512-BF16, else ATen's linear. 30 layers' matrices:
// 1 row 9.7 vs 16-27 ms, 8 rows 16.4 vs 21.6, 16 rows 20.3 vs 24.4, 32 rows 33.4 vs 31.6.
at::Tensor small_linear(const at::Tensor& x, const at::Tensor& W,
                        const std::optional<at::Tensor>& bias) {
#ifdef __AVX512BF16__
  if (x.dim() == 2 && x.size(0) >= 1 && x.size(0) <= kMaxGemvRows &&
      x.scalar_type() == at::kBFloat16 && W.scalar_type() == at::kBFloat16 && W.is_contiguous() &&
      (!bias || bias->scalar_type() == at::kBFloat16)) {
    const at::Tensor xc = x.contiguous();
    const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
    const int64_t rows = x.size(0), K = x.size(1), N = W.size(0);
    TORCH_CHECK(W.size(1) == K, "linear: x and W disagree on K");
    TORCH_CHECK(!bias || bias->numel() == N, "linear: bias [N]");
    at::Tensor y = at::empty({rows, N}, x.options());
    const bf16* wp = W.data_ptr<bf16>();
    const bf16* bp = b.defined() ? b.data_ptr<bf16>() : nullptr;
    fs_simd::row_passes(rows, [&](int64_t r0, auto count) {
      bf16_linear_rows<decltype(count)::value>(xc.data_ptr<bf16>() + r0 * K, wp, bp, K, N,
                                               y.data_ptr<bf16>() + r0 * N);
    });
    return y;
  }
#endif
  return at::linear(x, W, bias);
}

bool has_bf16_kernel() {
#ifdef __AVX512BF16__
  return true;
#else
  return false;
#endif
}

// A base matmul, by the first tensor's dtype as `llama_decode._matmul`: uint8 the GGUF 4-bit
// codes (with fp32 block steps and minima our int4_linear, with bf16 ones torch's layout), int8
// weight-only, else exact weights.
at::Tensor base_matmul(const at::Tensor& x, const c10::List<std::optional<at::Tensor>>& mm,
                       int64_t at_index, const fs_prefetch::Plan* coming = nullptr) {
  const at::Tensor w = *mm.get(at_index);
  std::optional<at::Tensor> second = mm.get(at_index + 1), third = mm.get(at_index + 2);
  if (w.scalar_type() == at::kByte && second->scalar_type() == at::kFloat)
    return fs_decode::int4_linear(x, w, *second, third, coming);
  if (w.scalar_type() == at::kByte) {
    at::Tensor y = at::_weight_int4pack_mm_for_cpu(x, w, kGroup4bit, *second);
    return third ? y.add_(*third) : y;
  }
  if (w.scalar_type() == at::kChar) {
    at::Tensor y = at::_weight_int8pack_mm(x, w, *second);
    return third ? y.add_(*third) : y;
  }
  return small_linear(x, w, second);
}

struct Shape {
  int64_t batch, dim, heads, kv_heads, head_dim, capacity, slot;
};

// RoPE over q and k heads of qkv [B, heads + 2 kv_heads, head_dim] in place, then this token's
// keys and values into the layer's cache [B, 2, kv_heads, capacity, head_dim]. As HF's
// apply_rotary_pos_emb: two products then a sum, each rounded to bf16 (sin sign-folded, so
// rotate_half(x) * sin == roll(x) * sin').
void rope_and_cache(bf16* qkv, bf16* cache, const bf16* cos, const bf16* sin,
                    const int64_t* positions, const Shape& s) {
  const int64_t hd = s.head_dim, half = hd / 2, every = s.heads + 2 * s.kv_heads;
  std::vector<float> row(static_cast<size_t>(hd)), rolled(static_cast<size_t>(hd));
  for (int64_t b = 0; b < s.batch; ++b) {
    const bf16* c = cos + positions[b] * hd;
    const bf16* sn = sin + positions[b] * hd;
    for (int64_t h = 0; h < s.heads + s.kv_heads; ++h) {
      bf16* v = qkv + (b * every + h) * hd;
      to_float(v, row.data(), hd);
      std::copy(row.begin() + half, row.end(), rolled.begin());  // rolled[i] = row[i + half]
      std::copy(row.begin(), row.begin() + half, rolled.begin() + (hd - half));
#ifdef FS_AVX512
      for (int64_t i = 0; i < hd; i += 16) {
        const __mmask16 m = fs_simd::lanes(i, hd);
        const __m512 straight = fs_simd::round_bf16(
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row.data() + i), fs_simd::load_bf16(c + i, m)));
        const __m512 turned = fs_simd::round_bf16(_mm512_mul_ps(
            _mm512_maskz_loadu_ps(m, rolled.data() + i), fs_simd::load_bf16(sn + i, m)));
        fs_simd::store_bf16(v + i, _mm512_add_ps(straight, turned), m);
      }
#else
      for (int64_t i = 0; i < hd; ++i)
        v[i] = bf16(to_f(bf16(row[i] * to_f(c[i]))) + to_f(bf16(rolled[i] * to_f(sn[i]))));
#endif
    }
    for (int64_t kind = 0; kind < 2; ++kind)
      for (int64_t g = 0; g < s.kv_heads; ++g) {
        const bf16* src = qkv + (b * every + s.heads + kind * s.kv_heads + g) * hd;
        bf16* dst = cache + (((b * 2 + kind) * s.kv_heads + g) * s.capacity + s.slot) * hd;
        std::copy(src, src + hd, dst);
      }
  }
}

// act [B, I] = silu(gate) * up from gate_up [B, 2I], each rounded to bf16 as torch does.
void silu_mul(const bf16* gate_up, bf16* act, int64_t rows, int64_t inner) {
  for (int64_t r = 0; r < rows; ++r) {
    const bf16* gate = gate_up + r * 2 * inner;
    const bf16* up = gate + inner;
#ifdef FS_AVX512
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < inner; i += 16) {
      const __mmask16 m = fs_simd::lanes(i, inner);
      const __m512 g = fs_simd::load_bf16(gate + i, m);
      const __m512 e = fs_simd::exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
      const __m512 silu = fs_simd::round_bf16(_mm512_div_ps(g, _mm512_add_ps(one, e)));
      const __m512 product = _mm512_mul_ps(silu, fs_simd::load_bf16(up + i, m));
      fs_simd::store_bf16(act + r * inner + i, product, m);
    }
#else
    for (int64_t i = 0; i < inner; ++i) {
      const float g = to_f(gate[i]);
      const bf16 silu = bf16(g / (1.0f + std::exp(-g)));
      act[r * inner + i] = bf16(to_f(silu) * to_f(up[i]));
    }
#endif
  }
}

void add_into(bf16* x, const bf16* y, int64_t n) {
#ifdef FS_AVX512
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = fs_simd::lanes(i, n);
    const __m512 sum = _mm512_add_ps(fs_simd::load_bf16(x + i, m), fs_simd::load_bf16(y + i, m));
    fs_simd::store_bf16(x + i, sum, m);
  }
#else
  for (int64_t i = 0; i < n; ++i) x[i] = bf16(to_f(x[i]) + to_f(y[i]));
#endif
}

// x [B, D] bf16: the embeddings of this step's tokens; returns the hidden state after the last
// layer (before the final norm). norms: per layer (input, post-attention); matmuls: per layer
// and group, 3 optional tensors; kv: [layers, B, 2, kv_heads, capacity, head_dim];
// cos/sin: [capacity, head_dim]; positions: [B] int64, each row's position for this token;
// valid: [B, capacity] bool or None; slot: the cache slot this token goes to.
at::Tensor decode_layers(const at::Tensor& x_in, at::TensorList norms,
                         const c10::List<std::optional<at::Tensor>>& matmuls,
                         at::TensorList lora, at::IntArrayRef lora_meta, at::Tensor kv,
                         const at::Tensor& cos, const at::Tensor& sin,
                         const at::Tensor& positions, const std::optional<at::Tensor>& valid,
                         int64_t slot, int64_t heads, int64_t kv_heads, double eps) {
  TORCH_CHECK(x_in.scalar_type() == at::kBFloat16 && x_in.dim() == 2, "x: [B, D] bf16");
  TORCH_CHECK(kv.is_contiguous() && kv.scalar_type() == at::kBFloat16, "kv: contiguous bf16");
  const int64_t layers = kv.size(0);
  TORCH_CHECK(static_cast<int64_t>(norms.size()) == 2 * layers, "norms: 2 per layer");
  TORCH_CHECK(static_cast<int64_t>(matmuls.size()) == layers * kGroups * kMatmulTensors,
              "matmuls: 12 per layer");
  const Shape s{x_in.size(0), x_in.size(1), heads, kv_heads, kv.size(5), kv.size(4), slot};
  TORCH_CHECK(slot < s.capacity && heads % kv_heads == 0, "slot beyond the cache");
  at::Tensor x = x_in.contiguous().clone();
  at::Tensor h = at::empty_like(x);
  at::Tensor attn = at::empty({s.batch, heads * s.head_dim}, x.options());
  const std::vector<at::Tensor> terms(lora.begin(), lora.end());
  const std::vector<int64_t> meta(lora_meta.begin(), lora_meta.end());
  size_t t = 0, m = 0;
  const at::Tensor pos = positions.contiguous();
  const at::Tensor mask = valid ? valid->contiguous() : at::Tensor();
  const float epsilon = static_cast<float>(eps);
  // One group's base matmul, whose tasks bring the group's LoRA bytes into cache as they go
  // (prefetch.h), then the LoRA terms.
  const auto project = [&](const at::Tensor& in, int64_t index) {
    return fs_decode::lora_group(
        in,
        [&](const fs_prefetch::Plan* coming) {
          return base_matmul(in, matmuls, index, coming).contiguous();
        },
        terms, t, meta, m);
  };
  for (int64_t layer = 0; layer < layers; ++layer) {
    const int64_t base = layer * kGroups * kMatmulTensors;
    bf16* cache = kv[layer].data_ptr<bf16>();
    rms_norm(x.data_ptr<bf16>(), norms[2 * layer].data_ptr<bf16>(), h.data_ptr<bf16>(), s.batch,
             s.dim, epsilon);
    at::Tensor qkv = project(h, base);
    rope_and_cache(qkv.data_ptr<bf16>(), cache, cos.data_ptr<bf16>(), sin.data_ptr<bf16>(),
                   pos.data_ptr<int64_t>(), s);
    fs_decode::attend(qkv.data_ptr<bf16>(), cache,
                      mask.defined() ? mask.data_ptr<bool>() : nullptr, attn.data_ptr<bf16>(),
                      s.batch, heads, kv_heads, s.head_dim, s.capacity, s.slot);
    at::Tensor o = project(attn, base + kMatmulTensors);
    add_into(x.data_ptr<bf16>(), o.data_ptr<bf16>(), x.numel());
    rms_norm(x.data_ptr<bf16>(), norms[2 * layer + 1].data_ptr<bf16>(), h.data_ptr<bf16>(),
             s.batch, s.dim, epsilon);
    at::Tensor gate_up = project(h, base + 2 * kMatmulTensors);
    const int64_t inner = gate_up.size(1) / 2;
    at::Tensor act = at::empty({s.batch, inner}, x.options());
    silu_mul(gate_up.data_ptr<bf16>(), act.data_ptr<bf16>(), s.batch, inner);
    at::Tensor down = project(act, base + 3 * kMatmulTensors);
    add_into(x.data_ptr<bf16>(), down.data_ptr<bf16>(), x.numel());
  }
  TORCH_CHECK(t == terms.size() && m == meta.size(), "LoRA lists not fully consumed");
  return x;
}

}  // namespace

TORCH_LIBRARY(frontier_signal, m) {
  m.def(
      "decode_layers(Tensor x, Tensor[] norms, Tensor?[] matmuls, Tensor[] lora, int[] lora_meta,"
      " Tensor(a!) kv, Tensor cos, Tensor sin, Tensor positions, Tensor? valid, int slot,"
      " int heads, int kv_heads, float eps) -> Tensor");
  m.def("linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def("has_bf16_kernel() -> bool", &has_bf16_kernel);
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) {
  m.impl("decode_layers", &decode_layers);
  m.impl("linear", &small_linear);
}
