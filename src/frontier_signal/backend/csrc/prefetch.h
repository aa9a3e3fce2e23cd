// Bringing the bytes of a coming memory-bound pass into cache while a compute-bound one runs
// (llama_step.cpp, int4_linear.cpp, decode_lora.cpp).
//
// At 8 rows the 4-bit matmul of decode is bound by its `vdpbf16ps` and leaves the memory idle,
// while the LoRA terms that follow it (8 runs: ~5 MB a layer) are bound by reading memory. So
// each task of the matmul, as it goes through its share of the columns, prefetches the same
// share of the LoRA bytes, in the order the LoRA passes read them, into its core's L2: the LoRA
// pass then reads them from cache. The passes split their work between threads in contiguous
// shares as `at::parallel_for` does, so a thread mostly prefetches what it will read itself.
#pragma once

#include <cstdint>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#define FS_PREFETCH(p) _mm_prefetch((p), _MM_HINT_T1)
#else
#define FS_PREFETCH(p) ((void)(p))
#endif

namespace fs_prefetch {

constexpr int64_t kLine = 64;

struct Span {
  const char* data;
  int64_t bytes;
};

// The bytes of a later parallel pass, or of several passes one after another (each its own
// list, in the order its tasks read them): a task that does the fraction [lo, hi) of its own
// work prefetches the fraction [lo, hi) of every pass's bytes.
struct Plan {
  std::vector<std::vector<Span>> passes;
};

// One task's share of a plan, prefetched evenly over `count` calls of `step` as the task's own
// work goes on.
class Stream {
 public:
  Stream(const Plan* plan, int64_t first, int64_t last, int64_t total, int64_t count)
      : count_(count) {
    if (plan == nullptr || total <= 0 || count <= 0) return;
    for (const std::vector<Span>& spans : plan->passes) {
      int64_t bytes = 0;
      for (const Span& span : spans) bytes += span.bytes;
      const int64_t lo = bytes * first / total, hi = bytes * last / total;
      Cursor c{&spans, 0, lo, (hi - lo + kLine - 1) / kLine, 0};
      while (c.span < spans.size() && c.offset >= spans[c.span].bytes)
        c.offset -= spans[c.span++].bytes;  // to the share's first byte
      if (c.lines > 0) cursors_.push_back(c);
    }
  }

  // Prefetches the next 1 / count of the share (its lines spread over the calls as a line
  // drawing spreads its pixels).
  void step() {
    for (Cursor& c : cursors_) {
      c.due += c.lines;
      for (; c.due >= count_ && c.span < c.spans->size(); c.due -= count_) {
        const Span& span = (*c.spans)[c.span];
        FS_PREFETCH(span.data + c.offset);
        c.offset += kLine;
        if (c.offset >= span.bytes) {
          c.offset = 0;
          ++c.span;
        }
      }
    }
  }

 private:
  struct Cursor {
    const std::vector<Span>* spans;
    size_t span;     // the span of the next line to prefetch,
    int64_t offset;  // and its offset in it
    int64_t lines;   // lines in the share
    int64_t due;     // lines owed, in 1 / count units
  };
  int64_t count_;
  std::vector<Cursor> cursors_;
};

}  // namespace fs_prefetch
