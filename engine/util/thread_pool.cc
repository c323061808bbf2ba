#include "engine/util/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LOOM_CPU_RELAX() _mm_pause()
#else
#define LOOM_CPU_RELAX() std::this_thread::yield()
#endif

namespace loom::util {
namespace {
// How long an idle worker spins before it sleeps on the condition variable.
constexpr auto kSpinFor = std::chrono::microseconds(2000);
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunk(int index) {
  const int64_t n = job_n_;
  const int64_t grain = job_grain_;
  const int64_t units = (n + grain - 1) / grain;
  const int64_t per = units / n_threads_;
  const int64_t extra = units % n_threads_;
  const int64_t first_unit = index * per + std::min<int64_t>(index, extra);
  const int64_t n_units = per + (index < extra ? 1 : 0);
  const int64_t begin = std::min(n, first_unit * grain);
  const int64_t end = std::min(n, (first_unit + n_units) * grain);
  if (begin < end) (*job_)(begin, end, index);
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                             int64_t grain) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_grain_ = std::max<int64_t>(1, grain);
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst pairs with the sleeper's fetch_add below
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  RunChunk(0);
  // Spin, but yield the core now and then: when threads outnumber free cores (another process
  // busy, HTTP threads), a worker that is not running can only finish if we step aside.
  for (int spins = 1; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins % 64 == 0) {
      std::this_thread::yield();
    } else {
      LOOM_CPU_RELAX();
    }
  }
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    auto spin_start = std::chrono::steady_clock::now();
    uint64_t gen;
    int spins = 0;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (++spins % 64 == 0) {
        std::this_thread::yield();  // see ParallelFor
      } else {
        LOOM_CPU_RELAX();
      }
      if (spins % 1024 == 0 && std::chrono::steady_clock::now() - spin_start > kSpinFor) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1);
        cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
        sleepers_.fetch_sub(1);
        if (stop_.load()) return;
        spin_start = std::chrono::steady_clock::now();
      }
    }
    seen = gen;
    RunChunk(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace loom::util
