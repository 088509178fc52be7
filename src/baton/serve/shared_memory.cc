#include "baton/serve/shared_memory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/serve/kserve_raw.h"

namespace baton::serve {

// One registered region's mapping; unmapped when the last user lets go.
struct SharedMemoryMapping {
  SharedMemoryRegionInfo info;
  void* base = MAP_FAILED;  // what mmap returned (page-aligned, may start before the region)
  size_t length = 0;
  std::byte* data = nullptr;  // the region's first byte
  bool writable = false;
  // The object, kept open while a client holds a lock on it (-1 when none
  // did at registration): the region is dropped once that lock is gone.
  int owner_fd = -1;

  SharedMemoryMapping() = default;
  SharedMemoryMapping(const SharedMemoryMapping&) = delete;
  SharedMemoryMapping& operator=(const SharedMemoryMapping&) = delete;
  ~SharedMemoryMapping() {
    if (base != MAP_FAILED) munmap(base, length);
    if (owner_fd >= 0) close(owner_fd);
  }
};

namespace {

constexpr size_t kMaxNameChars = 255;

// Whether another open file description holds a flock on `fd`'s file,
// asked by taking the exclusive lock for a moment (harmless: a client that
// follows the convention locks before it registers). kUnknown when flock
// fails otherwise: a region is never dropped on a doubt.
enum class Lock { kFree, kHeld, kUnknown };
Lock LockOf(int fd) {
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
    flock(fd, LOCK_UN);
    return Lock::kFree;
  }
  return errno == EWOULDBLOCK ? Lock::kHeld : Lock::kUnknown;
}

// Set only inside GuardedCopy. Volatile, with signal fences there: the
// compiler must not move the stores across the copy (it knows memcpy does not
// read this variable, and would otherwise drop the first store).
thread_local sigjmp_buf* volatile t_jump = nullptr;
struct sigaction g_previous_bus {};

void OnBus(int sig, siginfo_t* info, void* context) {
  if (sigjmp_buf* jump = t_jump) {
    t_jump = nullptr;
    siglongjmp(*jump, 1);
  }
  if ((g_previous_bus.sa_flags & SA_SIGINFO) != 0 && g_previous_bus.sa_sigaction != nullptr) {
    g_previous_bus.sa_sigaction(sig, info, context);
    return;
  }
  if ((g_previous_bus.sa_flags & SA_SIGINFO) == 0 && g_previous_bus.sa_handler != SIG_DFL &&
      g_previous_bus.sa_handler != SIG_IGN) {
    g_previous_bus.sa_handler(sig);
    return;
  }
  // As without the guard: the faulting access runs again and kills the process.
  signal(SIGBUS, SIG_DFL);
}

absl::Status CheckName(const std::string& what, const std::string& value) {
  if (value.empty() || value.size() > kMaxNameChars) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory ", what, " '", value, "' must have 1 to ", kMaxNameChars, " characters"));
  }
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat("shared memory ", what, " '", value,
                                                     "' has a control character; use printable characters"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void InstallSharedMemoryFaultGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = OnBus;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGBUS, &action, &g_previous_bus);
  });
}

bool GuardedCopy(void* dst, const void* src, size_t n) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) return false;  // OnBus jumped back here (and reset t_jump)
  t_jump = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(dst, src, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_jump = nullptr;
  return true;
}

SharedMemoryRegistry::~SharedMemoryRegistry() = default;

absl::Status SharedMemoryRegistry::Register(const std::string& name, const std::string& key, uint64_t offset,
                                            uint64_t byte_size) {
  BATON_RETURN_IF_ERROR(CheckName("region name", name));
  BATON_RETURN_IF_ERROR(CheckName("key", key));
  if (key.find('/', 1) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory key '", key,
                                                   "' has a '/' after its first character; POSIX shared memory "
                                                   "names are one component, e.g. '/cam0'"));
  }
  if (byte_size == 0 || offset > UINT64_MAX - byte_size) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory region '", name, "': byte_size ", byte_size,
                                                   " at offset ", offset,
                                                   " is empty or overflows; give byte_size >= 1"));
  }
  InstallSharedMemoryFaultGuard();
  std::lock_guard lock(mu_);
  ReclaimLocked();
  if (regions_.count(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory region '", name, "' is already registered; unregister it first or pick another name"));
  }
  if (regions_.size() >= max_regions_) {
    return absl::ResourceExhaustedError(absl::StrCat("shared memory: ", max_regions_,
                                                     " regions are registered, the most this server keeps; "
                                                     "unregister one first"));
  }
  auto mapping = std::make_shared<SharedMemoryMapping>();
  mapping->info = {name, key, offset, byte_size};
  mapping->writable = true;
  int fd = shm_open(key.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0 && errno == EACCES) {
    mapping->writable = false;  // inputs only
    fd = shm_open(key.c_str(), O_RDONLY | O_CLOEXEC, 0);
  }
  if (fd < 0) {
    const int err = errno;
    const std::string why = absl::StrCat("cannot open shared memory object '", key, "' for region '", name,
                                         "': ", std::strerror(err));
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(why, "; create it (shm_open with O_CREAT, then ftruncate) on the "
                                                   "server's machine before registering it"));
    }
    return absl::InvalidArgumentError(absl::StrCat(why, "; the server's user must be able to open it"));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat("shared memory object '", key, "' is not a memory object"));
  }
  const auto object_size = static_cast<uint64_t>(st.st_size);
  if (offset + byte_size > object_size) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat("shared memory region '", name, "': bytes [", offset, ", ",
                                                   offset + byte_size, ") are past the end of object '", key,
                                                   "', which has ", object_size,
                                                   " bytes; size the object (ftruncate) or the region to fit"));
  }
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t start = offset - offset % page;
  mapping->length = static_cast<size_t>(offset - start + byte_size);
  mapping->base = mmap(nullptr, mapping->length, PROT_READ | (mapping->writable ? PROT_WRITE : 0), MAP_SHARED, fd,
                       static_cast<off_t>(start));
  const int map_err = errno;
  if (mapping->base != MAP_FAILED && LockOf(fd) == Lock::kHeld) {
    mapping->owner_fd = fd;  // kept to see when the owner's lock goes
  } else {
    close(fd);
  }
  if (mapping->base == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot map shared memory region '", name, "' (", byte_size,
                                                     " bytes of '", key, "'): ", std::strerror(map_err)));
  }
  mapping->data = static_cast<std::byte*>(mapping->base) + (offset - start);
  regions_.emplace(name, std::move(mapping));
  return absl::OkStatus();
}

absl::Status SharedMemoryRegistry::Unregister(const std::string& name) {
  std::lock_guard lock(mu_);
  if (name.empty()) {
    regions_.clear();
    return absl::OkStatus();
  }
  if (regions_.erase(name) == 0) {
    return absl::NotFoundError(absl::StrCat("no shared memory region '", name, "' is registered"));
  }
  return absl::OkStatus();
}

void SharedMemoryRegistry::ReclaimLocked() const {
  for (auto it = regions_.begin(); it != regions_.end();) {
    const int fd = it->second->owner_fd;
    if (fd >= 0 && LockOf(fd) == Lock::kFree) {
      // Requests still using it keep it mapped until they are done.
      it = regions_.erase(it);
      ++reclaimed_;
    } else {
      ++it;
    }
  }
}

uint64_t SharedMemoryRegistry::reclaimed() const {
  std::lock_guard lock(mu_);
  return reclaimed_;
}

absl::StatusOr<std::vector<SharedMemoryRegionInfo>> SharedMemoryRegistry::Status(const std::string& name) const {
  std::lock_guard lock(mu_);
  ReclaimLocked();
  std::vector<SharedMemoryRegionInfo> out;
  for (const auto& [n, m] : regions_) {
    if (name.empty() || n == name) out.push_back(m->info);
  }
  if (!name.empty() && out.empty()) {
    return absl::NotFoundError(absl::StrCat("no shared memory region '", name, "' is registered"));
  }
  return out;
}

size_t SharedMemoryRegistry::size() const {
  std::lock_guard lock(mu_);
  ReclaimLocked();
  return regions_.size();
}

absl::StatusOr<std::shared_ptr<const SharedMemoryMapping>> SharedMemoryRegistry::Find(const std::string& name,
                                                                                      uint64_t offset,
                                                                                      uint64_t byte_size,
                                                                                      const std::string& where) const {
  std::shared_ptr<const SharedMemoryMapping> m;
  {
    std::lock_guard lock(mu_);
    auto it = regions_.find(name);
    if (it != regions_.end()) m = it->second;
  }
  if (m == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": no shared memory region '", name,
                                                   "' is registered; register it first"));
  }
  if (offset > m->info.byte_size || byte_size > m->info.byte_size - offset) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": bytes [", offset, ", ", offset + byte_size,
                                                   ") are outside shared memory region '", name, "' of ",
                                                   m->info.byte_size, " bytes"));
  }
  return m;
}

absl::Status SharedMemoryRegistry::CheckReadSize(const std::string& name, uint64_t byte_size,
                                                 const std::string& where) const {
  if (byte_size <= max_read_bytes_) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", byte_size, " bytes from shared memory region '", name,
                                                 "', more than the ", max_read_bytes_,
                                                 " a request may carry (--max-request-mb)"));
}

absl::Status SharedMemoryRegistry::CopyOut(const std::string& name, uint64_t offset, uint64_t byte_size,
                                           const std::string& where, void* dst) const {
  BATON_ASSIGN_OR_RETURN(std::shared_ptr<const SharedMemoryMapping> m, Find(name, offset, byte_size, where));
  if (!GuardedCopy(dst, m->data + offset, byte_size)) {
    return absl::DataLossError(absl::StrCat(where, ": shared memory object '", m->info.key, "' of region '", name,
                                            "' shrank while it was read; keep its size while it is registered"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SharedMemoryRegistry::ReadRaw(const std::string& name, uint64_t offset,
                                                          uint64_t byte_size, const std::string& where) const {
  BATON_RETURN_IF_ERROR(CheckReadSize(name, byte_size, where));  // before the buffer is sized
  std::string out(static_cast<size_t>(byte_size), '\0');
  BATON_RETURN_IF_ERROR(CopyOut(name, offset, byte_size, where, out.data()));
  return out;
}

absl::StatusOr<Tensor> SharedMemoryRegistry::ReadTensor(const std::string& name, uint64_t offset, uint64_t byte_size,
                                                        ElemType type, std::vector<int64_t> shape,
                                                        const std::string& where) const {
  if (type == dtype::kString) {
    BATON_ASSIGN_OR_RETURN(std::string raw, ReadRaw(name, offset, byte_size, where));
    return TensorFromRaw(std::move(raw), type, std::move(shape), where);
  }
  const std::optional<size_t> need = Tensor::ExpectedBytes(type, shape);
  if (!need.has_value() || *need != byte_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": shared_memory_byte_size is ", byte_size, ", but ", ElemTypeName(type), " [",
        absl::StrJoin(shape, ","), "] needs ", need.has_value() ? absl::StrCat(*need) : "a valid size"));
  }
  BATON_RETURN_IF_ERROR(CheckReadSize(name, byte_size, where));
  // Not zero-filled first: every byte is copied over.
  std::shared_ptr<std::byte[]> bytes = std::make_shared_for_overwrite<std::byte[]>(std::max<size_t>(byte_size, 1));
  BATON_RETURN_IF_ERROR(CopyOut(name, offset, byte_size, where, bytes.get()));
  std::byte* data = bytes.get();
  return Tensor::Adopt(type, std::move(shape), data, byte_size, std::move(bytes));
}

absl::Status SharedMemoryOff(const std::string& where, const std::string& region) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": names shared memory region '", region, "', but ", kSharedMemoryOff));
}

absl::StatusOr<SharedMemoryRegistry::Target> SharedMemoryRegistry::OutputTarget(const std::string& name,
                                                                                uint64_t offset, uint64_t byte_size,
                                                                                const std::string& where) const {
  BATON_ASSIGN_OR_RETURN(std::shared_ptr<const SharedMemoryMapping> m, Find(name, offset, byte_size, where));
  if (!m->writable) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": shared memory region '", name,
                                                   "' is read-only to the server (its object '", m->info.key,
                                                   "' could not be opened for writing); use it for inputs only"));
  }
  Target t;
  t.mapping_ = std::move(m);
  t.offset_ = offset;
  t.byte_size_ = byte_size;
  return t;
}

absl::Status SharedMemoryRegistry::Target::Write(std::span<const std::byte> bytes, const std::string& where) const {
  if (bytes.size() > byte_size_) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": has ", bytes.size(), " bytes, more than the ",
                                                   byte_size_, " of shared_memory_byte_size in region '",
                                                   mapping_->info.name, "'; give a larger region"));
  }
  if (!GuardedCopy(mapping_->data + offset_, bytes.data(), bytes.size())) {
    return absl::DataLossError(absl::StrCat(where, ": shared memory object '", mapping_->info.key, "' of region '",
                                            mapping_->info.name,
                                            "' shrank while it was written; keep its size while it is registered"));
  }
  return absl::OkStatus();
}

}  // namespace baton::serve
