// A fixed pool of worker threads for data-parallel loops inside one engine step. The calling thread
// takes part, and workers spin briefly between loops, since a decode step runs a few hundred short
// parallel loops and a condition-variable wake-up per loop would cost more than the work.
//
//   loom::util::ThreadPool pool(2);
//   pool.ParallelFor(n_rows, [&](int64_t begin, int64_t end, int thread) { ... });
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace loom::util {

class ThreadPool {
 public:
  // `n_threads` counts the caller; 1 runs everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Splits [0, n) into one contiguous chunk per thread, chunk edges rounded to `grain`, and runs
  // fn(begin, end, thread_index) on each; returns when all are done. Not reentrant.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                   int64_t grain = 1);

 private:
  void WorkerLoop(int index);
  void RunChunk(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  // The current job; written by the caller before `generation_` is bumped.
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // guards sleeping workers' wake-ups only
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
};

}  // namespace loom::util
