// run_beside (helper_thread.h): one helper thread per process, taking one
// caller's half at a time.
#include "util/helper_thread.h"

#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>

namespace ckpt {
namespace {

class HelperThread {
public:
  static HelperThread& instance() {
    static HelperThread helper;  // joined at exit, idle by then
    return helper;
  }

  ~HelperThread() {
    {
      std::lock_guard<std::mutex> lock(m_mutex);
      m_quit = true;
    }
    m_wake.notify_one();
    if (m_thread.joinable()) {
      m_thread.join();
    }
  }

  // Hands `task` to the helper; false when it has another's (or cannot start).
  bool try_start(const std::function<void()>& task) {
    std::lock_guard<std::mutex> lock(m_mutex);
    if (m_task != nullptr || m_quit) {
      return false;
    }
    if (!m_thread.joinable()) {
      try {
        m_thread = std::thread([this] { serve(); });
      } catch (const std::system_error&) {
        return false;
      }
    }
    m_task = &task;
    m_done = false;
    m_wake.notify_one();
    return true;
  }

  // Waits for the task try_start handed over; the helper is free again after.
  void wait() {
    std::unique_lock<std::mutex> lock(m_mutex);
    m_finished.wait(lock, [this] { return m_done; });
    m_task = nullptr;
  }

private:
  void serve() {
    std::unique_lock<std::mutex> lock(m_mutex);
    for (;;) {
      m_wake.wait(lock, [this] { return m_quit || (m_task != nullptr && !m_done); });
      if (m_quit) {
        return;
      }
      const std::function<void()>* task = m_task;
      lock.unlock();
      (*task)();
      lock.lock();
      m_done = true;
      m_finished.notify_one();
    }
  }

  std::mutex m_mutex;
  std::condition_variable m_wake;      // a task, or quit
  std::condition_variable m_finished;  // the task is done
  const std::function<void()>* m_task = nullptr;  // handed over, until its caller's wait()
  bool m_done = false;
  bool m_quit = false;
  std::thread m_thread;
};

}  // namespace

void run_beside(const std::function<void()>& there, const std::function<void()>& here) {
  HelperThread& helper = HelperThread::instance();
  if (helper.try_start(there)) {
    here();
    helper.wait();
    return;
  }
  std::thread own;
  try {
    own = std::thread(there);
  } catch (const std::system_error&) {
    here();  // no thread to be had: one after the other
    there();
    return;
  }
  here();
  own.join();
}

}  // namespace ckpt
