#include "baton/serve/http_connection.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "baton/core/process.h"
#include "baton/serve/connection_watch.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace baton::serve {

namespace {

using Clock = std::chrono::steady_clock;

// How often a connection idle between requests looks whether the server stops.
constexpr std::chrono::milliseconds kStopCheck{100};
constexpr size_t kReadBuffer = 16 << 10;
// How long a closing connection with bytes unread waits for its client to close.
constexpr std::chrono::seconds kLinger{1};

void IpAndPort(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int got = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                       : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (got == 0) NumericAddress(addr, len, ip, port);
}

// One connection: the bytes under the HTTP library's parser, every wait
// bounded (see the header). The socket is non-blocking, so that no read or
// write (a TLS record that arrives in part included) can wait past a bound.
class Connection final : public httplib::Stream {
 public:
  Connection(int fd, const HttpLimits& limits, size_t requests)
      : fd_(fd), limits_(limits), requests_left_(requests) {
    const int flags = fcntl(fd_, F_GETFL, 0);
    if (flags >= 0) fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  ~Connection() override {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (linger_) Linger();
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // TLS: the handshake, within request_timeout. False when it failed.
  bool AcceptTls(SSL_CTX* ctx) {
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return false;
    // Released buffers: an idle (parked) connection keeps no record buffers.
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    const Clock::time_point deadline = Clock::now() + limits_.request_timeout;
    while (true) {
      ERR_clear_error();
      const int r = SSL_accept(ssl_);
      if (r == 1) return true;
      const int err = SSL_get_error(ssl_, r);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return false;
      if (!Wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) return false;
    }
  }
  SSL* ssl() const { return ssl_; }

  enum class Next { kRequest, kPark, kClose };
  // Waits for the next request to begin to arrive while this worker is not
  // wanted elsewhere (`wanted`, polled with `kick_fd` readable when it may
  // be; -1: not looked at): kRequest once it does (or the peer closes), kPark when another
  // connection waits for a worker, kClose after keep_alive idle or when
  // `stopping`.
  Next AwaitNext(int kick_fd, const std::function<bool()>& wanted, const std::function<bool()>& stopping) {
    const Clock::time_point until = idle_since_ + limits_.keep_alive;
    while (true) {
      if (stopping()) return Next::kClose;
      if (ReadableNow()) return Next::kRequest;  // a request already there is served, never parked
      if (wanted()) return Next::kPark;
      const Clock::time_point now = Clock::now();
      if (now >= until) return Next::kClose;
      pollfd p[2] = {{fd_, POLLIN, 0}, {kick_fd, POLLIN, 0}};
      const auto step = std::min<Clock::duration>(until - now, kStopCheck);
      const int r = poll(p, 2, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(step).count()));
      if (r < 0 && errno != EINTR) return Next::kClose;
      if (r > 0 && p[0].revents != 0) return Next::kRequest;
      if (r > 0 && p[1].revents != 0 && !wanted()) {
        // A kick another worker answered: look at the connection alone for a moment, not in a busy loop.
        pollfd q{fd_, POLLIN, 0};
        if (poll(&q, 1, 1) > 0) return Next::kRequest;
      }
    }
  }
  // Whether bytes wait (or the peer has closed) without waiting for them.
  bool ReadableNow() const {
    if (Buffered()) return true;
    pollfd p{fd_, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
  }
  Clock::time_point idle_since() const { return idle_since_; }
  // Requests this connection may still carry (the keep-alive count).
  size_t& requests_left() { return requests_left_; }
  bool& last_ok() { return last_ok_; }
  // Parked: the read buffer goes (it is empty), and closing it then skips
  // the linger (the parker must not wait on one connection).
  void Park() {
    buffer_.reset();
    linger_ = false;
  }
  void Unpark() { linger_ = true; }

  void EndRequest() { idle_since_ = Clock::now(); }
  void BeginRequest() {
    request_start_ = Clock::now();
    bytes_in_ = 0;
    head_bytes_ = 0;
    in_head_ = true;
    responding_ = false;
  }
  void HeadReceived() { in_head_ = false; }
  RequestCut cut() const { return cut_; }
  bool responded() const { return responding_; }

  // Ends the connection; a TLS one says close_notify first when `graceful`.
  void Finish(bool graceful) {
    if (ssl_ != nullptr && graceful && cut_ == RequestCut::kNone) SSL_shutdown(ssl_);  // one try, no wait
  }

  bool is_readable() const override {
    return Buffered() || Wait(POLLIN, ReadDeadline());
  }
  bool is_writable() const override { return Wait(POLLOUT, Clock::now() + limits_.io_timeout); }

  ssize_t read(char* ptr, size_t size) override {
    if (size == 0) return 0;
    if (buffer_at_ < buffer_end_) {
      const size_t n = std::min(size, buffer_end_ - buffer_at_);
      std::copy_n(buffer_.get() + buffer_at_, n, ptr);
      buffer_at_ += n;
      return static_cast<ssize_t>(n);
    }
    if (cut_ != RequestCut::kNone) return -1;
    size_t want = kReadBuffer;
    if (in_head_) {
      if (head_bytes_ >= limits_.max_head_bytes) {
        cut_ = RequestCut::kHeadTooLarge;
        return -1;
      }
      want = std::min(want, limits_.max_head_bytes - head_bytes_);
    }
    // A large read (a body) goes straight to the caller.
    const bool direct = !in_head_ && size >= kReadBuffer;
    if (!direct && buffer_ == nullptr) buffer_ = std::make_unique<char[]>(kReadBuffer);
    const ssize_t n = Receive(direct ? ptr : buffer_.get(), direct ? std::min<size_t>(size, INT_MAX) : want);
    if (n <= 0) return n;
    const auto got = static_cast<size_t>(n);
    bytes_in_ += got;
    if (in_head_) head_bytes_ += got;
    if (direct) return n;
    const size_t out = std::min(size, got);
    std::copy_n(buffer_.get(), out, ptr);
    buffer_at_ = out;
    buffer_end_ = got;
    return static_cast<ssize_t>(out);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!responding_) {
      responding_ = true;
      response_start_ = Clock::now();
      bytes_out_ = 0;
    }
    const int len = static_cast<int>(std::min<size_t>(size, INT_MAX));
    while (true) {
      const Clock::time_point deadline = Deadline(response_start_, bytes_out_);
      ssize_t n = 0;
      short want = POLLOUT;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int r = SSL_write(ssl_, ptr, len);
        if (r > 0) {
          n = r;
        } else {
          const int err = SSL_get_error(ssl_, r);
          if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return -1;
          want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        }
      } else {
        n = send(fd_, ptr, static_cast<size_t>(len), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        n = std::max<ssize_t>(n, 0);
      }
      if (n > 0) {
        bytes_out_ += static_cast<size_t>(n);
        return n;
      }
      if (!Wait(want, deadline)) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { IpAndPort(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { IpAndPort(fd_, false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  // Closing a socket with bytes unread makes the kernel reset the
  // connection, and the client may then lose the answer just written (a 413,
  // 408 or 431 for a request whose rest was not read). As nginx does, the
  // sending side is closed first and what the client still sends is read and
  // dropped, for at most kLinger, until it closes.
  void Linger() {
    int unread = 0;
    if (ioctl(fd_, FIONREAD, &unread) != 0 || unread == 0) return;
    shutdown(fd_, SHUT_WR);
    const Clock::time_point until = Clock::now() + kLinger;
    std::array<char, 16 << 10> scratch;
    for (Clock::time_point now = Clock::now(); now < until; now = Clock::now()) {
      pollfd p{fd_, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(until - now).count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || recv(fd_, scratch.data(), scratch.size(), 0) <= 0) return;
    }
  }

  bool Buffered() const { return buffer_at_ < buffer_end_ || (ssl_ != nullptr && SSL_pending(ssl_) > 0); }

  // `start` plus request_timeout plus the allowance for `bytes` moved.
  Clock::time_point Deadline(Clock::time_point start, size_t bytes) const {
    Clock::duration allowance{0};
    if (limits_.min_bytes_per_s > 0) {
      allowance = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(static_cast<double>(bytes) / static_cast<double>(limits_.min_bytes_per_s)));
    }
    return start + limits_.request_timeout + allowance;
  }
  Clock::time_point ReadDeadline() const { return Deadline(request_start_, bytes_in_); }

  // Reads what is there (up to n bytes), waiting within the bounds; 0 at the
  // end of the stream, -1 on an error or a cut.
  ssize_t Receive(char* to, size_t n) {
    while (true) {
      short want = POLLIN;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int r = SSL_read(ssl_, to, static_cast<int>(n));
        if (r > 0) return r;
        const int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return -1;
        want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
      } else {
        const ssize_t r = recv(fd_, to, n, 0);
        if (r >= 0) return r;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
      }
      if (!Wait(want, ReadDeadline())) return -1;
    }
  }

  // Waits until the socket is ready for `events`, for at most io_timeout and
  // not past `deadline`; records the cut when it is not.
  bool Wait(short events, Clock::time_point deadline) const {
    const Clock::time_point idle_until = Clock::now() + limits_.io_timeout;
    const Clock::time_point until = std::min(idle_until, deadline);
    while (true) {
      const Clock::time_point now = Clock::now();
      if (now >= until) {
        cut_ = until == deadline && deadline < idle_until ? RequestCut::kDeadline : RequestCut::kIdle;
        return false;
      }
      pollfd p{fd_, events, 0};
      const int r = poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(until - now).count()));
      if (r > 0) return true;  // ready, or an error the next call reports
      if (r < 0 && errno != EINTR) return false;
    }
  }

  const int fd_;
  const HttpLimits limits_;
  SSL* ssl_ = nullptr;
  std::unique_ptr<char[]> buffer_;  // kReadBuffer bytes once read into
  size_t buffer_at_ = 0, buffer_end_ = 0;
  bool linger_ = true;
  size_t requests_left_;
  bool last_ok_ = false;
  Clock::time_point idle_since_ = Clock::now();
  Clock::time_point request_start_ = Clock::now();
  size_t bytes_in_ = 0;
  size_t head_bytes_ = 0;
  bool in_head_ = true;
  bool responding_ = false;
  Clock::time_point response_start_;
  size_t bytes_out_ = 0;
  mutable RequestCut cut_ = RequestCut::kNone;  // set by the waits
};

thread_local Connection* current = nullptr;
class WorkerPool;
thread_local WorkerPool* current_pool = nullptr;  // the pool of a worker thread

void WriteAll(Connection& conn, const std::string& bytes) {
  for (size_t at = 0; at < bytes.size();) {
    const ssize_t n = conn.write(bytes.data() + at, bytes.size() - at);
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

// Idle keep-alive connections, parked off the workers: one thread waits for
// any of them to bring a request (epoll) and hands it back to a worker
// (`resume`, which may refuse while the workers' queue is full; it is then
// tried again). Connections idle for keep_alive are closed; at most
// `max_idle` are parked (Park refuses more).
class Parker {
 public:
  using Resume = std::function<bool(const std::shared_ptr<Connection>&)>;
  Parker(size_t max_idle, std::chrono::milliseconds keep_alive, Resume resume)
      : max_idle_(max_idle),
        keep_alive_(keep_alive),
        resume_(std::move(resume)),
        epoll_(epoll_create1(EPOLL_CLOEXEC)),
        wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_;
    if (epoll_ >= 0 && wake_ >= 0) epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev);
    thread_ = std::thread([this] { Run(); });
  }
  ~Parker() { Stop(); }
  Parker(const Parker&) = delete;
  Parker& operator=(const Parker&) = delete;

  // False when it cannot be parked (full, or stopping): close it.
  bool Park(std::shared_ptr<Connection> conn) {
    std::lock_guard lock(mu_);
    if (stopping_ || epoll_ < 0 || parked_.size() + ready_.size() >= max_idle_) return false;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = conn->socket();
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, conn->socket(), &ev) != 0) return false;
    conn->Park();
    parked_.emplace(conn->socket(), std::move(conn));
    return true;
  }

  size_t idle() const {
    std::lock_guard lock(mu_);
    return parked_.size() + ready_.size();
  }

  // Closes what is parked and joins the thread. Idempotent.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    const uint64_t one = 1;
    if (wake_ >= 0) [[maybe_unused]] const ssize_t w = ::write(wake_, &one, sizeof(one));
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mu_);
    parked_.clear();
    for (const std::shared_ptr<Connection>& conn : ready_) conn->Park();  // closed at once, without the linger
    ready_.clear();
    for (int* fd : {&epoll_, &wake_}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
  }

 private:
  void Run() {
    NameThisThread("http-parker");
    if (epoll_ < 0) return;  // nothing is ever parked (Park refuses)
    std::array<epoll_event, 64> events{};
    while (true) {
      std::vector<std::shared_ptr<Connection>> expired;  // closed outside the lock
      bool waiting = false;
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
        while (!ready_.empty() && resume_(ready_.front())) ready_.pop_front();
        waiting = !ready_.empty();
        const Clock::time_point now = Clock::now();
        for (auto it = parked_.begin(); it != parked_.end();) {
          auto next = std::next(it);
          if (now - it->second->idle_since() >= keep_alive_) {
            epoll_ctl(epoll_, EPOLL_CTL_DEL, it->first, nullptr);
            if (it->second->ReadableNow()) {
              it->second->Unpark();
              ready_.push_back(std::move(it->second));  // a request came as it expired: served
            } else {
              expired.push_back(std::move(it->second));
            }
            parked_.erase(it);
          }
          it = next;
        }
      }
      expired.clear();
      // The workers' queue was full: try again soon; else wake for requests,
      // and to close the expired, every kStopCheck.
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                               waiting ? 2 : static_cast<int>(kStopCheck.count()));
      std::lock_guard lock(mu_);
      for (int i = 0; i < n; ++i) {
        auto it = parked_.find(events[static_cast<size_t>(i)].data.fd);
        if (it == parked_.end()) continue;
        epoll_ctl(epoll_, EPOLL_CTL_DEL, it->first, nullptr);
        it->second->Unpark();
        ready_.push_back(std::move(it->second));
        parked_.erase(it);
      }
    }
  }

  const size_t max_idle_;
  const std::chrono::milliseconds keep_alive_;
  const Resume resume_;
  mutable std::mutex mu_;
  int epoll_;
  int wake_;  // readable once Stop is called
  bool stopping_ = false;
  absl::flat_hash_map<int, std::shared_ptr<Connection>> parked_;
  std::deque<std::shared_ptr<Connection>> ready_;  // brought a request; waits for a worker
  std::thread thread_;
};

// The workers (httplib's TaskQueue, with bounds its own ThreadPool lacks):
//   * when `max_waiting` jobs (new connections, or parked ones with a
//     request) wait, the accepting thread waits too, so further connections
//     stay in the kernel's listen backlog, which is bounded, instead of each
//     holding a descriptor and memory here;
//   * a worker keeps its connection between requests only while no other
//     job waits: the eventfd `kick` is readable while jobs wait and no worker
//     is free, and a worker idle on its connection then parks it;
//   * a worker whose handler waits for the engine (EngineWait) lends its
//     place: while it waits and jobs wait with no worker free, a helper
//     thread serves them (at most `max_lent` helpers at once); a helper ends
//     once `threads` workers are at work without it;
//   * shutdown closes the parked connections, runs what was accepted, and
//     after `grace` calls `stuck` (which shuts the busy connections down).
class WorkerPool final : public httplib::TaskQueue {
 public:
  // `gone` is called once the workers and the parker have stopped, as the pool goes.
  WorkerPool(const HttpWorkers& workers, std::chrono::milliseconds keep_alive, Parker::Resume resume,
             std::function<void()> gone)
      : gone_(std::move(gone)),
        threads_wanted_(static_cast<size_t>(workers.threads)),
        max_lent_(static_cast<size_t>(workers.max_lent)),
        max_waiting_(static_cast<size_t>(workers.max_waiting)),
        grace_(workers.stop_grace),
        stuck_(workers.stuck),
        kick_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        parker_(static_cast<size_t>(workers.max_idle), keep_alive, std::move(resume)) {
    std::lock_guard lock(mu_);
    for (int i = 0; i < workers.threads; ++i) StartLocked(/*helper=*/false);
  }
  ~WorkerPool() override {
    shutdown();
    if (gone_) gone_();
    if (kick_ >= 0) close(kick_);
  }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    room_.wait(lock, [&] { return jobs_.size() < max_waiting_ || stopping_; });
    PushLocked(std::move(fn));
  }
  // enqueue without waiting: false when max_waiting jobs wait (or stopping).
  bool TryEnqueue(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    if (jobs_.size() >= max_waiting_ || stopping_) return false;
    PushLocked(std::move(fn));
    return true;
  }

  void shutdown() override {
    parker_.Stop();
    {
      std::unique_lock lock(mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
      stopping_now_ = true;
      Kick();
      ready_.notify_all();
      room_.notify_all();
      if (!exit_.wait_for(lock, grace_, [&] { return live_ == 0; }) && stuck_) {
        lock.unlock();
        stuck_();
      }
    }
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
  }

  // A worker's handler is about to wait for the engine, and then is done
  // waiting (EngineWait).
  void BeginLend() {
    std::lock_guard lock(mu_);
    ++lent_;
    HelpLocked();
  }
  void EndLend() {
    std::lock_guard lock(mu_);
    --lent_;
    if (helpers_ > 0 && Surplus()) ready_.notify_all();  // an idle helper may end
  }

  // Whether a job waits for a worker (a worker idle on its connection should park it).
  bool Wanted() {
    std::lock_guard lock(mu_);
    return !jobs_.empty();
  }
  // Read without the lock: polled by every worker idle on its connection.
  bool Stopping() const { return stopping_now_; }
  int kick_fd() const { return kick_; }
  Parker& parker() { return parker_; }

 private:
  void PushLocked(std::function<void()> fn) {
    jobs_.push_back(std::move(fn));
    if (free_ == 0) Kick();
    ready_.notify_one();
    HelpLocked();
  }
  // More workers at work (not lent to the engine) than `threads`.
  bool Surplus() const { return live_ - lent_ > threads_wanted_; }
  // Starts a helper when a job waits, no worker is free, fewer than
  // `threads` workers are at work, and fewer than max_lent helpers run.
  void HelpLocked() {
    if (stopping_ || jobs_.empty() || free_ > 0 || live_ - lent_ >= threads_wanted_ || helpers_ >= max_lent_) return;
    StartLocked(/*helper=*/true);
  }
  void StartLocked(bool helper) {
    // Join the helpers that have ended (they take no lock after they are counted out).
    for (auto it = threads_.begin(); it != threads_.end();) {
      if (std::find(ended_.begin(), ended_.end(), it->get_id()) == ended_.end()) {
        ++it;
        continue;
      }
      it->join();
      it = threads_.erase(it);
    }
    ended_.clear();
    ++live_;
    if (helper) ++helpers_;
    threads_.emplace_back([this, helper] {
      NameThisThread(helper ? "http-helper" : "http-worker");
      // A TLS write to a closed connection must fail with EPIPE, not raise
      // SIGPIPE (OpenSSL writes with write(2)).
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
      current_pool = this;
      Work(helper);
      current_pool = nullptr;
    });
  }
  void Kick() {
    const uint64_t one = 1;
    if (kick_ >= 0) [[maybe_unused]] const ssize_t w = ::write(kick_, &one, sizeof(one));
  }
  void Unkick() {
    uint64_t n = 0;
    if (kick_ >= 0) [[maybe_unused]] const ssize_t r = ::read(kick_, &n, sizeof(n));
  }
  void Work(bool helper) {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        ++free_;
        ready_.wait(lock, [&] { return !jobs_.empty() || stopping_ || (helper && Surplus()); });
        --free_;
        // A helper ends when enough workers are at work without it; all end
        // once stopping leaves nothing to do. Counted out under this lock, so
        // that HelpLocked never counts a thread that is ending.
        if ((helper && Surplus() && !stopping_) || jobs_.empty()) {
          --live_;
          if (helper) {
            --helpers_;
            ended_.push_back(std::this_thread::get_id());
          }
          exit_.notify_all();
          return;
        }
        job = std::move(jobs_.front());
        jobs_.pop_front();
        if (jobs_.empty() && !stopping_) Unkick();
      }
      room_.notify_one();
      job();
    }
  }

  const std::function<void()> gone_;
  const size_t threads_wanted_;
  const size_t max_lent_;
  const size_t max_waiting_;
  const std::chrono::seconds grace_;
  const std::function<void()> stuck_;
  const int kick_;
  std::mutex mu_;
  std::condition_variable ready_;  // a job, or stopping
  std::condition_variable room_;   // fewer than max_waiting_ wait
  std::condition_variable exit_;   // a worker has returned
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::atomic<bool> stopping_now_{false};  // stopping_, for readers without the lock
  size_t free_ = 0;     // workers waiting for a job
  size_t live_ = 0;     // workers and helpers running
  size_t lent_ = 0;     // of those, waiting for the engine
  size_t helpers_ = 0;  // helpers running
  std::vector<std::thread> threads_;      // workers and helpers not yet joined
  std::vector<std::thread::id> ended_;    // helpers that have ended, to join

  Parker parker_;  // last: stopped (by shutdown) before the rest goes
};

// httplib's Server with its connections served by Connection, on
// WorkerPool's workers (it keeps the parsing, routing and answers).
class BoundedServer final : public httplib::Server {
 public:
  BoundedServer(const HttpLimits& limits, const HttpWorkers& workers, SSL_CTX* ctx,
                std::function<void(RequestCut)> on_cut)
      : limits_(limits), ctx_(ctx), on_cut_(std::move(on_cut)) {
    new_task_queue = [this, workers] {
      auto* pool = new WorkerPool(
          workers, limits_.keep_alive,
          [this](const std::shared_ptr<Connection>& conn) {
            return pool_.load()->TryEnqueue([this, conn] { Serve(conn); });
          },
          [this] {
            std::lock_guard lock(pool_mu_);
            pool_ = nullptr;
          });
      std::lock_guard lock(pool_mu_);
      pool_ = pool;
      return pool;
    };
  }
  ~BoundedServer() override {
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  }
  BoundedServer(const BoundedServer&) = delete;
  BoundedServer& operator=(const BoundedServer&) = delete;

  size_t idle() const {
    std::lock_guard lock(pool_mu_);
    WorkerPool* pool = pool_.load();
    return pool != nullptr ? pool->parker().idle() : 0;
  }

 private:
  bool process_and_close_socket(socket_t sock) override {
    auto conn = std::make_shared<Connection>(sock, limits_, keep_alive_max_count_);
    if (ctx_ != nullptr && !conn->AcceptTls(ctx_)) return false;
    conn->EndRequest();  // idle from now on
    Serve(conn);
    return true;
  }

  // Serves the connection's requests until it closes, idles past
  // keep_alive, or is parked because another connection waits for a worker.
  void Serve(std::shared_ptr<Connection> conn) {
    WorkerPool& pool = *pool_.load();
    const auto stopping = [this, &pool] { return svr_sock_ == INVALID_SOCKET || pool.Stopping(); };
    bool may_park = true;
    const std::function<bool()> wanted = [&pool, &may_park] { return may_park && pool.Wanted(); };
    SSL* ssl = conn->ssl();
    const std::function<void(httplib::Request&)> setup = [ssl](httplib::Request& req) { req.ssl = ssl; };
    while (conn->requests_left() > 0) {
      const Connection::Next next = conn->AwaitNext(may_park ? pool.kick_fd() : -1, wanted, stopping);
      if (next == Connection::Next::kPark) {
        if (pool.parker().Park(conn)) return;
        // Too many parked: it keeps its worker until its next request
        // (keep_alive at most), as without parking. Closing it instead would
        // race with a request its client may be sending on it, which most
        // clients report as an error rather than send again.
        may_park = false;
        continue;
      }
      if (next == Connection::Next::kClose) break;
      conn->BeginRequest();
      current = conn.get();
      bool closed = false;
      const bool ok = process_request(*conn, /*close_connection=*/conn->requests_left() == 1, closed,
                                      ssl != nullptr ? setup : nullptr);
      conn->last_ok() = ok;
      const RequestCut cut = conn->cut();
      if (!ok && cut != RequestCut::kNone && !conn->responded()) {
        // Cut in its first line: the library gave up without an answer.
        const std::string body = nlohmann::json({{"error", MessageOfCut(cut, limits_)}})
                                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        WriteAll(*conn, absl::StrCat("HTTP/1.1 ", StatusOfCut(cut),
                                     cut == RequestCut::kHeadTooLarge ? " Request Header Fields Too Large"
                                                                      : " Request Timeout",
                                     "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                                     "\r\nConnection: close\r\n\r\n", body));
      }
      current = nullptr;
      if (cut != RequestCut::kNone && on_cut_) on_cut_(cut);
      if (!ok || closed || cut != RequestCut::kNone) break;
      --conn->requests_left();
      conn->EndRequest();
      may_park = true;
    }
    conn->Finish(conn->last_ok());
  }

  const HttpLimits limits_;
  SSL_CTX* const ctx_;
  const std::function<void(RequestCut)> on_cut_;
  // The pool while the server listens: its workers and parker use it
  // freely (it outlives them); anyone else holds pool_mu_, which its going holds too.
  mutable std::mutex pool_mu_;
  std::atomic<WorkerPool*> pool_{nullptr};
};

}  // namespace

absl::StatusOr<std::unique_ptr<httplib::Server>> NewBoundedHttpServer(const HttpLimits& limits,
                                                                      const HttpWorkers& workers,
                                                                      const std::string& tls_cert,
                                                                      const std::string& tls_key,
                                                                      std::function<void(RequestCut)> on_cut) {
  SSL_CTX* ctx = nullptr;
  if (!tls_cert.empty()) {
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, tls_cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      if (ctx != nullptr) SSL_CTX_free(ctx);
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("the TLS certificate '", tls_cert, "' or key '", tls_key,
                                                     "' cannot be used (not readable, not PEM, or not a pair)"));
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  }
  return std::make_unique<BoundedServer>(limits, workers, ctx, std::move(on_cut));
}

size_t IdleConnections(const httplib::Server& server) {
  const auto* bounded = dynamic_cast<const BoundedServer*>(&server);
  return bounded != nullptr ? bounded->idle() : 0;
}

void HeadReceived() {
  if (current != nullptr) current->HeadReceived();
}

RequestCut CurrentCut() { return current != nullptr ? current->cut() : RequestCut::kNone; }

int CurrentSocket() { return current != nullptr ? current->socket() : -1; }

EngineWait::EngineWait() : pool_(current_pool) {
  if (pool_ != nullptr) static_cast<WorkerPool*>(pool_)->BeginLend();
}

EngineWait::~EngineWait() {
  if (pool_ != nullptr) static_cast<WorkerPool*>(pool_)->EndLend();
}

int StatusOfCut(RequestCut cut) { return cut == RequestCut::kHeadTooLarge ? 431 : 408; }

std::string MessageOfCut(RequestCut cut, const HttpLimits& limits) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  switch (cut) {
    case RequestCut::kHeadTooLarge:
      return absl::StrCat("the request's line and headers take more than ", limits.max_head_bytes >> 10,
                          " KiB; send fewer or shorter headers");
    case RequestCut::kIdle:
      return absl::StrCat("nothing of the request arrived for ", duration_cast<seconds>(limits.io_timeout).count(),
                          " s (--timeout-s); send it without pausing");
    case RequestCut::kDeadline:
      return absl::StrCat("the request did not arrive in time: it may take ",
                          duration_cast<seconds>(limits.request_timeout).count(),
                          " s (--request-timeout-s) plus 1 s for each ", limits.min_bytes_per_s >> 10,
                          " KiB it carries (--min-rate-kib-s); send faster, or raise them");
    case RequestCut::kNone:
      break;
  }
  return "";
}

}  // namespace baton::serve
