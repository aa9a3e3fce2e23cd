// Llama's RMSNorm in bf16 training, one pass each way over a row (csrc of backend/fused_norm.py):
// y = w · bf16(x · rstd) with rstd = 1/sqrt(mean(x²) + eps) in fp32, and its input gradient
// dx = rstd · (ĝ − x̂ · mean(ĝ · x̂)) with ĝ = bf16(dy · w) and x̂ = x · rstd.
//
// torch runs the forward as an upcast, a square, a mean, an rsqrt, two multiplies and a
// downcast, and the backward as as many passes again over [tokens, hidden] fp32 copies. Here
// each row is read once (it stays in L1 for the second pass). The rounding points are those of
// the torch ops; only the order of the mean's sum differs (the output may differ by the last
// bit of a bf16 where rstd lands on a rounding boundary).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"

#include <cmath>
#include <tuple>

namespace {

using namespace fs_simd;

void check(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.dim() >= 1,
              "x: contiguous bf16");
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() &&
                  weight.dim() == 1 && weight.size(0) == x.size(-1),
              "weight: contiguous bf16 [hidden]");
}

inline float round_bf16_scalar(float x) { return static_cast<float>(bf16(x)); }

float sum_squares(const bf16* x, int64_t n) {
#ifdef FS_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = load_bf16(x + i, lanes(i, n));
    acc = _mm512_fmadd_ps(v, v, acc);
  }
  return _mm512_reduce_add_ps(acc);
#else
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += static_cast<float>(x[i]) * static_cast<float>(x[i]);
  return s;
#endif
}

std::tuple<at::Tensor, at::Tensor> rms_norm(const at::Tensor& x, const at::Tensor& weight,
                                            double eps) {
  check(x, weight);
  const int64_t n = x.size(-1), rows = x.numel() / n;
  at::Tensor out = at::empty_like(x);
  at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  const bf16* xp = x.data_ptr<bf16>();
  const bf16* w = weight.data_ptr<bf16>();
  bf16* y = out.data_ptr<bf16>();
  float* r = rstd.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / n), [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const bf16* xr = xp + row * n;
      bf16* yr = y + row * n;
      const float s = 1.0f / std::sqrt(sum_squares(xr, n) / static_cast<float>(n) +
                                       static_cast<float>(eps));
      r[row] = s;
#ifdef FS_AVX512
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes(i, n);
        const __m512 hat = round_bf16(_mm512_mul_ps(load_bf16(xr + i, m), _mm512_set1_ps(s)));
        store_bf16(yr + i, _mm512_mul_ps(load_bf16(w + i, m), hat), m);
      }
#else
      for (int64_t i = 0; i < n; ++i)
        yr[i] = bf16(static_cast<float>(w[i]) * round_bf16_scalar(static_cast<float>(xr[i]) * s));
#endif
    }
  });
  return {out, rstd};
}

at::Tensor rms_norm_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& rstd,
                             const at::Tensor& weight) {
  check(x, weight);
  const at::Tensor g = grad.contiguous();
  TORCH_CHECK(g.scalar_type() == at::kBFloat16 && g.sizes() == x.sizes(), "grad: x's shape");
  const int64_t n = x.size(-1), rows = x.numel() / n;
  TORCH_CHECK(rstd.scalar_type() == at::kFloat && rstd.numel() == rows, "rstd: rms_norm's");
  at::Tensor grad_x = at::empty_like(x);
  const bf16* xp = x.data_ptr<bf16>();
  const bf16* gp = g.data_ptr<bf16>();
  const bf16* w = weight.data_ptr<bf16>();
  const float* r = rstd.data_ptr<float>();
  bf16* dx = grad_x.data_ptr<bf16>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / n), [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const bf16* xr = xp + row * n;
      const bf16* gr = gp + row * n;
      bf16* dr = dx + row * n;
      const float s = r[row];
#ifdef FS_AVX512
      const __m512 vs = _mm512_set1_ps(s);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes(i, n);
        const __m512 gh = round_bf16(_mm512_mul_ps(load_bf16(gr + i, m), load_bf16(w + i, m)));
        acc = _mm512_fmadd_ps(gh, _mm512_mul_ps(load_bf16(xr + i, m), vs), acc);
      }
      const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(acc) / static_cast<float>(n));
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes(i, n);
        const __m512 gh = round_bf16(_mm512_mul_ps(load_bf16(gr + i, m), load_bf16(w + i, m)));
        const __m512 hat = _mm512_mul_ps(load_bf16(xr + i, m), vs);
        store_bf16(dr + i, _mm512_mul_ps(_mm512_fnmadd_ps(hat, dot, gh), vs), m);
      }
#else
      float dot = 0.0f;
      for (int64_t i = 0; i < n; ++i)
        dot += round_bf16_scalar(static_cast<float>(gr[i]) * static_cast<float>(w[i])) *
               (static_cast<float>(xr[i]) * s);
      dot /= static_cast<float>(n);
      for (int64_t i = 0; i < n; ++i) {
        const float gh = round_bf16_scalar(static_cast<float>(gr[i]) * static_cast<float>(w[i]));
        dr[i] = bf16((gh - static_cast<float>(xr[i]) * s * dot) * s);
      }
#endif
    }
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(frontier_signal, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rms_norm_backward(Tensor grad, Tensor x, Tensor rstd, Tensor weight) -> Tensor");
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("rms_norm_backward", &rms_norm_backward);
}
