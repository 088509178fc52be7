// The KServe v2 / Triton system shared memory extension, server side: named
// regions of POSIX shared memory objects (shm_open) that local clients
// register, then name in a request instead of sending a tensor's bytes
// (parameters "shared_memory_region", "shared_memory_byte_size" and
// "shared_memory_offset" on an input or a requested output).
//
//   SharedMemoryRegistry shm;
//   shm.Register("cam0", "/cam0", 0, 602112);     // maps the object's bytes
//   shm.ReadRaw("cam0", 0, 602112, "input 'x'");  // a copy of them
//   shm.Unregister("cam0");                       // "" = every region
//
// A region is mapped when it is registered (so the client may shm_unlink
// the object's name right after) and unmapped when it is unregistered and no
// request still uses it. Reads copy the bytes out and writes copy them in:
// the engine never runs on memory a client can change or shrink under it.
// A client that shrinks the object after registering it makes the copy fault
// (SIGBUS); that copy is guarded, so the request fails with an error naming
// the region and the server goes on (the guard's handler is installed when
// the first region is registered, and passes any other SIGBUS on).
//
// A region outlives a client that exits without unregistering it, as in
// Triton, unless that client held a lock on the object: a client that keeps
// a shared flock(2) on the object while it uses the region (baton's own
// client does) has the region dropped once that lock is gone, i.e. once it
// has exited, crashed or was killed. The registry looks when a region is
// registered and when regions are listed (Status, size, /metrics), so a
// crash-looping client cannot fill it.
//
// Off unless the server is started with --allow-client-shm: a client that
// can register any object the server's user can open could read or
// overwrite another process's shared memory through it.
//
// Limits: at most max_regions regions; names and keys of 1..255 characters;
// at most max_read_bytes read for one tensor.
// Thread-safety: every method may be called from any thread at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "baton/baton.h"
#include "baton/core/status.h"

namespace baton::serve {

struct SharedMemoryRegionInfo {
  std::string name;
  std::string key;
  uint64_t offset = 0;
  uint64_t byte_size = 0;
};

struct SharedMemoryMapping;  // one region's mapping (shared_memory.cc)

class SharedMemoryRegistry {
 public:
  // `max_read_bytes`: the most one tensor may take from a region (the
  // server's request size limit, as for bytes sent in a message).
  static constexpr size_t kMaxRegions = 256;
  explicit SharedMemoryRegistry(size_t max_regions = kMaxRegions, size_t max_read_bytes = size_t{64} << 20)
      : max_regions_(max_regions), max_read_bytes_(max_read_bytes) {}
  ~SharedMemoryRegistry();
  SharedMemoryRegistry(const SharedMemoryRegistry&) = delete;
  SharedMemoryRegistry& operator=(const SharedMemoryRegistry&) = delete;

  // Maps `byte_size` bytes at `offset` of the object `key` as region `name`.
  // InvalidArgument: a bad name or key, a region past the object's end, or a
  // name already registered; NotFound: no such object; ResourceExhausted:
  // max_regions reached.
  absl::Status Register(const std::string& name, const std::string& key, uint64_t offset, uint64_t byte_size);
  // NotFound for an unknown name; "" unregisters every region.
  absl::Status Unregister(const std::string& name);
  // The regions in name order, or the one named (NotFound when unknown).
  // Drops the regions whose owner has gone first (see above).
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> Status(const std::string& name) const;
  size_t size() const;
  // Regions dropped so far because the client that held their lock had gone.
  uint64_t reclaimed() const;

  // A copy of `byte_size` bytes at `offset` in region `name`, for a tensor
  // `where` names. InvalidArgument: unknown region, out of its bounds, or
  // more than max_read_bytes; DataLoss: the object shrank under the copy.
  absl::StatusOr<std::string> ReadRaw(const std::string& name, uint64_t offset, uint64_t byte_size,
                                      const std::string& where) const;

  // A tensor of `type` and `shape` from `byte_size` bytes at `offset` in
  // region `name` (for BYTES, their raw form: serve/kserve_raw.h): checked
  // against the shape before anything is copied, then copied once into
  // memory of its own. Errors as ReadRaw, and InvalidArgument when the size
  // does not fit the shape.
  absl::StatusOr<Tensor> ReadTensor(const std::string& name, uint64_t offset, uint64_t byte_size, ElemType type,
                                    std::vector<int64_t> shape, const std::string& where) const;

  // A place in a region to write an output to later (it keeps the region
  // mapped until it is destroyed, even when unregistered meanwhile).
  class Target {
   public:
    // Copies `bytes` in. InvalidArgument when they are more than the target's
    // byte_size or the region is read-only; DataLoss when the object shrank.
    absl::Status Write(std::span<const std::byte> bytes, const std::string& where) const;
    uint64_t byte_size() const { return byte_size_; }

   private:
    friend class SharedMemoryRegistry;
    std::shared_ptr<const SharedMemoryMapping> mapping_;
    uint64_t offset_ = 0;
    uint64_t byte_size_ = 0;
  };
  // The target `byte_size` bytes at `offset` in region `name`; errors as ReadRaw.
  absl::StatusOr<Target> OutputTarget(const std::string& name, uint64_t offset, uint64_t byte_size,
                                      const std::string& where) const;

 private:
  // InvalidArgument when one tensor would read more than max_read_bytes.
  absl::Status CheckReadSize(const std::string& name, uint64_t byte_size, const std::string& where) const;
  // Copies `byte_size` bytes at `offset` of region `name` to `dst` (CheckReadSize first).
  absl::Status CopyOut(const std::string& name, uint64_t offset, uint64_t byte_size, const std::string& where,
                       void* dst) const;
  absl::StatusOr<std::shared_ptr<const SharedMemoryMapping>> Find(const std::string& name, uint64_t offset,
                                                                  uint64_t byte_size, const std::string& where) const;

  // Drops the regions whose owner's lock is gone (mu_ held).
  void ReclaimLocked() const;

  const size_t max_regions_;
  const size_t max_read_bytes_;
  mutable std::mutex mu_;
  // Guarded by mu_. Mutable: a listing first drops what its owner's exit
  // already ended.
  mutable std::map<std::string, std::shared_ptr<const SharedMemoryMapping>> regions_;
  mutable uint64_t reclaimed_ = 0;
};

// What every front-end and client says while the extension is off.
inline constexpr char kSharedMemoryOff[] =
    "this server takes no client shared memory; start it with --allow-client-shm";
// InvalidArgument: the tensor `where` names `region` while the extension is off.
absl::Status SharedMemoryOff(const std::string& where, const std::string& region);

// Copies `n` bytes from `src` to `dst`, either of which may be mapped shared
// memory; false (and `dst` partly written) when the copy faulted with SIGBUS
// because the object behind it shrank. Needs InstallSharedMemoryFaultGuard.
bool GuardedCopy(void* dst, const void* src, size_t n);
// Installs the SIGBUS handler GuardedCopy needs (once per process; later
// calls do nothing). A SIGBUS outside GuardedCopy goes to the handler that
// was there before, or kills the process as it would have.
void InstallSharedMemoryFaultGuard();

}  // namespace baton::serve
