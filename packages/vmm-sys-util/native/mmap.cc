// mmap regions exposed as SharedArrayBuffers whose backing-store deleter unmaps them.
//
// Lifetime (DESIGN.md "Mapping lifetime"): the mapping belongs to the V8 BackingStore,
// which V8 reference-counts across every SharedArrayBuffer that shares it, in every
// isolate (worker) it was posted to. munmap runs in Deleter() only when the last of them
// is collected, so no reachable view can ever point at unmapped memory.
#include "common.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// Linux 5.14; older C libraries' headers may lack them (the kernel ABI values).
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace vsu {

namespace {

struct Mapping {
  void* addr;
  size_t length;
  std::atomic<int> fd;  // owned fd closed with the mapping, or -1
};

std::mutex g_mutex;
// Live mappings by start address: lets DisownFd find a region's fd from its buffer,
// and counts live mappings for tests.
std::unordered_map<void*, Mapping*> g_live;

// Runs on whichever thread drops the last reference to the backing store.
void Deleter(void* data, size_t length, void* deleter_data) {
  Mapping* m = static_cast<Mapping*>(deleter_data);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_live.erase(m->addr);
  }
  munmap(m->addr, m->length);
  int fd = m->fd.exchange(-1);
  if (fd >= 0) close(fd);
  delete m;
}

// mmap(fd, length, prot, flags, offset, ownFd) -> [SharedArrayBuffer, address: bigint] | -errno
// fd is -1 for an anonymous mapping. MAP_FIXED is refused: it could replace memory the
// process is using, and prot must be read-write. If ownFd is true, the fd is closed when the mapping is unmapped
// (even if mmap fails the caller keeps ownership).
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, prot, flags;
  uint64_t length, offset;
  bool own_fd;
  if (!ArgInt(info, 0, -1, INT32_MAX, &fd) || !ArgSize(info, 1, &length) || !ArgInt(info, 2, 0, INT32_MAX, &prot) ||
      !ArgInt(info, 3, 0, INT32_MAX, &flags) || !ArgSize(info, 4, &offset) || !ArgBool(info, 5, &own_fd)) {
    return Napi::Value();
  }
  if (length == 0) return ThrowRange(env, "length must be positive");
  // The result is a SharedArrayBuffer that JS may read and write anywhere: anything but a
  // readable and writable mapping would turn an ordinary store into SIGSEGV.
  if (prot != (PROT_READ | PROT_WRITE)) return ThrowRange(env, "prot must be PROT_READ | PROT_WRITE");
  // MAP_FIXED could replace memory the process is using; other flags (MAP_GROWSDOWN, ...)
  // have no use here. MAP_HUGE_* size bits (MAP_HUGE_SHIFT..+5) are allowed with MAP_HUGETLB.
  constexpr int64_t kAllowed = MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_HUGETLB |
                               MAP_POPULATE | (static_cast<int64_t>(MAP_HUGE_MASK) << MAP_HUGE_SHIFT);
  if (flags & ~kAllowed) return ThrowRange(env, "mmap flags outside the allowed set (no MAP_FIXED)");

  // Pages of a regular file past its end raise SIGBUS when touched: refuse such a mapping
  // (MmapRegion.fromFd reports MappingPastEof before getting here).
  bool anon_inode = false;
  if (fd >= 0 && !(flags & MAP_ANONYMOUS)) {
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) != 0) return Errno(env, errno);
    if (S_ISREG(st.st_mode) && (offset > static_cast<uint64_t>(st.st_size) || length > static_cast<uint64_t>(st.st_size) - offset)) {
      return ThrowRange(env, "mapping extends past the end of the file");
    }
    // An anonymous-inode fd (no file type: KVM vCPU fds, perf, io_uring) has no size to
    // check; its driver's fault handler raises SIGBUS for pages it does not back.
    anon_inode = (st.st_mode & S_IFMT) == 0;
  }
  void* addr = mmap(nullptr, length, static_cast<int>(prot), static_cast<int>(flags), static_cast<int>(fd),
                    static_cast<off_t>(offset));
  if (addr == MAP_FAILED) return Errno(env, errno);
  // Fault every page of such a mapping in now: MADV_POPULATE_READ (Linux 5.14) fails with
  // EFAULT exactly where a touch would have raised SIGBUS. Other failures (EINVAL for
  // VM_IO/VM_PFNMAP mappings, an older kernel) leave the mapping as it is.
  if (anon_inode && madvise(addr, length, 22 /* MADV_POPULATE_READ */) != 0 && errno == EFAULT) {
    munmap(addr, length);
    return Errno(env, EFAULT);
  }

  Mapping* m = new Mapping{addr, length, own_fd ? static_cast<int>(fd) : -1};
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_live.emplace(addr, m);
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> store = v8::SharedArrayBuffer::NewBackingStore(addr, length, Deleter, m);
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(store));

  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Value(env, FromV8(sab)));
  result.Set(1u, Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(addr))));
  return result;
}

// Looks up the Mapping behind a buffer made by Mmap; nullptr if the buffer is not one.
Mapping* FindMapping(uint8_t* data) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_live.find(data);
  return it == g_live.end() ? nullptr : it->second;
}

// Reads (buffer, offset, length) and checks the range lies inside the mapping.
bool ArgRange(const Napi::CallbackInfo& info, uint8_t** start, size_t* length) {
  uint8_t* data;
  size_t size;
  uint64_t offset, len;
  if (!ArgMapping(info, 0, &data, &size) || !ArgSize(info, 1, &offset) || !ArgSize(info, 2, &len)) return false;
  if (offset > size || len > size - offset) {
    ThrowRange(info.Env(), "range outside the mapping");
    return false;
  }
  *start = data + offset;
  *length = len;
  return true;
}

// madvise(buffer, offset, length, advice) -> 0 | -errno
Napi::Value Madvise(const Napi::CallbackInfo& info) {
  uint8_t* start;
  size_t length;
  int64_t advice;
  if (!ArgRange(info, &start, &length) || !ArgInt(info, 3, 0, INT32_MAX, &advice)) return Napi::Value();
  // Only advice that keeps every byte readable and writable: MADV_HWPOISON, MADV_GUARD_INSTALL
  // and the like would turn a later access through the buffer into SIGBUS/SIGSEGV.
  switch (advice) {
    case MADV_NORMAL: case MADV_RANDOM: case MADV_SEQUENTIAL: case MADV_WILLNEED: case MADV_DONTNEED:
    case MADV_REMOVE: case MADV_HUGEPAGE: case MADV_NOHUGEPAGE: case MADV_DONTDUMP: case MADV_DODUMP:
    // Prefaulting (Linux 5.14) fails with EFAULT where a touch would raise SIGBUS, never signals.
    case MADV_POPULATE_READ: case MADV_POPULATE_WRITE:
      break;
    default:
      return ThrowRange(info.Env(), "madvise advice outside the allowed set");
  }
  if (madvise(start, length, static_cast<int>(advice)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// msync(buffer, offset, length, flags) -> 0 | -errno
Napi::Value Msync(const Napi::CallbackInfo& info) {
  uint8_t* start;
  size_t length;
  int64_t flags;
  if (!ArgRange(info, &start, &length) || !ArgInt(info, 3, 0, INT32_MAX, &flags)) return Napi::Value();
  if (flags & ~(MS_SYNC | MS_ASYNC | MS_INVALIDATE)) return ThrowRange(info.Env(), "msync flags outside MS_SYNC|MS_ASYNC|MS_INVALIDATE");
  if (msync(start, length, static_cast<int>(flags)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// disownFd(buffer) -> fd | -1: takes the owned fd away from the mapping so the caller can
// close it now; the mapping itself stays until its last buffer is collected.
Napi::Value DisownFd(const Napi::CallbackInfo& info) {
  uint8_t* data;
  size_t size;
  if (!ArgMapping(info, 0, &data, &size)) return Napi::Value();
  Mapping* m = FindMapping(data);  // alive: the caller's buffer holds a reference
  int fd = m->fd.exchange(-1);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value LiveMappingCount(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return Napi::Number::New(info.Env(), static_cast<double>(g_live.size()));
}

}  // namespace

bool ArgMapping(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* length) {
  if (i >= info.Length()) {
    ThrowType(info.Env(), "argument must be a SharedArrayBuffer");
    return false;
  }
  v8::Local<v8::Value> v = ToV8(info[i]);
  if (!v->IsSharedArrayBuffer()) {
    ThrowType(info.Env(), "argument must be a SharedArrayBuffer");
    return false;
  }
  v8::Local<v8::SharedArrayBuffer> sab = v.As<v8::SharedArrayBuffer>();
  uint8_t* d = static_cast<uint8_t*>(sab->Data());
  if (FindMapping(d) == nullptr) {
    ThrowType(info.Env(), "SharedArrayBuffer is not a mapping made by this addon");
    return false;
  }
  *data = d;
  *length = sab->ByteLength();
  return true;
}

void InitMmap(Napi::Env env, Napi::Object exports) {
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("madvise", Napi::Function::New(env, Madvise, "madvise"));
  exports.Set("msync", Napi::Function::New(env, Msync, "msync"));
  exports.Set("disownFd", Napi::Function::New(env, DisownFd, "disownFd"));
  exports.Set("liveMappingCount", Napi::Function::New(env, LiveMappingCount, "liveMappingCount"));
  Napi::Object c = Napi::Object::New(env);
  VSU_CONST(c, PROT_READ);
  VSU_CONST(c, PROT_WRITE);
  VSU_CONST(c, MAP_SHARED);
  VSU_CONST(c, MAP_PRIVATE);
  VSU_CONST(c, MAP_ANONYMOUS);
  VSU_CONST(c, MAP_NORESERVE);
  VSU_CONST(c, MAP_HUGETLB);
  VSU_CONST(c, MAP_POPULATE);
  VSU_CONST(c, MAP_HUGE_SHIFT);
  VSU_CONST(c, MADV_DONTNEED);
  VSU_CONST(c, MADV_REMOVE);
  VSU_CONST(c, MADV_HUGEPAGE);
  VSU_CONST(c, MADV_NOHUGEPAGE);
  VSU_CONST(c, MADV_WILLNEED);
  VSU_CONST(c, MADV_POPULATE_READ);
  VSU_CONST(c, MADV_POPULATE_WRITE);
  VSU_CONST(c, MS_SYNC);
  VSU_CONST(c, MS_ASYNC);
  exports.Set("mmapConstants", c);
}

}  // namespace vsu
