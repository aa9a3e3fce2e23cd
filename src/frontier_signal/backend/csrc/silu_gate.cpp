// The MLP activation of Llama-style models in training, forward and backward in one pass each:
// h = silu(gate) * up, and (d_gate, d_up) from d_h.
//
// Autograd runs it as silu, a multiply, and in backward two multiplies and silu_backward, each a
// pass over [tokens, intermediate] bf16 tensors. Here each direction is one pass, rounding to
// bf16 where those ops round, so the results are those of the unfused ops up to the last bit of
// e^x: silu(gate) is rounded to bf16 before the multiply, d_silu = bf16(d_h * up), and
// d_gate = bf16(d_silu * sigmoid(gate) * (1 + gate * (1 - sigmoid(gate)))).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "bf16_simd.h"

#include <cmath>
#include <tuple>

namespace {

using namespace fs_simd;
constexpr int64_t kGrain = 1 << 14;  // elements per task

inline float round_bf16(float x) { return static_cast<float>(bf16(x)); }
#ifdef FS_AVX512
using fs_simd::round_bf16;  // and the vector one, in the same overload set
#endif

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous() && t.sizes() == like.sizes(),
              name, ": contiguous bf16 of the gate's shape");
}

#ifdef FS_AVX512
inline __m512 sigmoid(__m512 g) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}
#endif

at::Tensor silu_gate(const at::Tensor& gate, const at::Tensor& up) {
  check(gate, gate, "gate");
  check(up, gate, "up");
  at::Tensor out = at::empty_like(gate);
  const bf16* g = gate.data_ptr<bf16>();
  const bf16* u = up.data_ptr<bf16>();
  bf16* h = out.data_ptr<bf16>();
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t first, int64_t last) {
#ifdef FS_AVX512
    for (int64_t i = first; i < last; i += 16) {
      const __mmask16 m = lanes(i, last);
      const __m512 x = load_bf16(g + i, m);
      const __m512 silu = round_bf16(_mm512_mul_ps(x, sigmoid(x)));
      store_bf16(h + i, _mm512_mul_ps(silu, load_bf16(u + i, m)), m);
    }
#else
    for (int64_t i = first; i < last; ++i) {
      const float x = static_cast<float>(g[i]);
      h[i] = bf16(round_bf16(x / (1.0f + std::exp(-x))) * static_cast<float>(u[i]));
    }
#endif
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> silu_gate_backward(const at::Tensor& grad, const at::Tensor& gate,
                                                      const at::Tensor& up) {
  check(gate, gate, "gate");
  check(up, gate, "up");
  const at::Tensor dh = grad.contiguous();
  check(dh, gate, "grad");
  at::Tensor grad_gate = at::empty_like(gate);
  at::Tensor grad_up = at::empty_like(up);
  const bf16* d = dh.data_ptr<bf16>();
  const bf16* g = gate.data_ptr<bf16>();
  const bf16* u = up.data_ptr<bf16>();
  bf16* dg = grad_gate.data_ptr<bf16>();
  bf16* du = grad_up.data_ptr<bf16>();
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t first, int64_t last) {
#ifdef FS_AVX512
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = first; i < last; i += 16) {
      const __mmask16 m = lanes(i, last);
      const __m512 x = load_bf16(g + i, m);
      const __m512 dout = load_bf16(d + i, m);
      const __m512 sig = sigmoid(x);
      const __m512 silu = round_bf16(_mm512_mul_ps(x, sig));
      store_bf16(du + i, _mm512_mul_ps(dout, silu), m);
      const __m512 dsilu = round_bf16(_mm512_mul_ps(dout, load_bf16(u + i, m)));
      const __m512 slope = _mm512_mul_ps(sig, _mm512_fmadd_ps(x, _mm512_sub_ps(one, sig), one));
      store_bf16(dg + i, _mm512_mul_ps(dsilu, slope), m);
    }
#else
    for (int64_t i = first; i < last; ++i) {
      const float x = static_cast<float>(g[i]);
      const float dout = static_cast<float>(d[i]);
      const float sig = 1.0f / (1.0f + std::exp(-x));
      du[i] = bf16(dout * round_bf16(x * sig));
      const float dsilu = round_bf16(dout * static_cast<float>(u[i]));
      dg[i] = bf16(dsilu * sig * (1.0f + x * (1.0f - sig)));
    }
#endif
  });
  return {grad_gate, grad_up};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(frontier_signal, m) {
  m.def("silu_gate(Tensor gate, Tensor up) -> Tensor");
  m.def("silu_gate_backward(Tensor grad, Tensor gate, Tensor up) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(frontier_signal, CPU, m) {
  m.impl("silu_gate", &silu_gate);
  m.impl("silu_gate_backward", &silu_gate_backward);
}
