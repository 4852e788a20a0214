// A fixed pool of worker threads running submitted tasks in FIFO order.
//
// Used to keep slow work (validating and fsyncing uploads) off gRPC's callback
// threads, which must stay free for health checks and quick calls.
// Thread-safe. The destructor runs every task already submitted, then joins.
#ifndef SWITCHYARD_SHARED_CORE_THREAD_POOL_H_
#define SWITCHYARD_SHARED_CORE_THREAD_POOL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace switchyard {

class ThreadPool {
 public:
  // Starts `threads` workers (at least one).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(std::function<void()> task);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace switchyard

#endif  // SWITCHYARD_SHARED_CORE_THREAD_POOL_H_
