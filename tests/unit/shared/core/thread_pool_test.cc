#include "shared/core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

namespace switchyard {
namespace {

TEST(ThreadPoolTest, RunsEverySubmittedTaskBeforeTheDestructorReturns) {
  std::atomic<int> done{0};
  {
    ThreadPool pool(3);
    for (int i = 0; i < 1000; ++i) pool.Submit([&done] { ++done; });
  }
  EXPECT_EQ(done.load(), 1000);
}

TEST(ThreadPoolTest, OneWorkerRunsTasksInSubmissionOrder) {
  std::vector<int> order;
  std::mutex mu;
  {
    ThreadPool pool(1);
    for (int i = 0; i < 100; ++i) {
      pool.Submit([&, i] {
        std::lock_guard<std::mutex> lock(mu);
        order.push_back(i);
      });
    }
  }
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(ThreadPoolTest, ATaskMaySubmitAnother) {
  std::atomic<int> done{0};
  {
    ThreadPool pool(2);
    pool.Submit([&] {
      ++done;
      pool.Submit([&] { ++done; });
    });
  }
  EXPECT_EQ(done.load(), 2);
}

}  // namespace
}  // namespace switchyard
