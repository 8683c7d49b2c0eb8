// mmap regions exposed as SharedArrayBuffers whose backing-store deleter unmaps them.
//
// Lifetime (DESIGN.md "Mapping lifetime"): the mapping belongs to the V8 BackingStore,
// which V8 reference-counts across every SharedArrayBuffer that shares it, in every
// isolate (worker) it was posted to. munmap runs in Deleter() only when the last of them
// is collected, so no reachable view can ever point at unmapped memory.
//
// Two ways to make and read such a buffer (DESIGN.md "SharedArrayBuffers"): Node-API's
// node_api_create_external_sharedarraybuffer / node_api_is_sharedarraybuffer where the running
// Node has them (Node 22.2x, 24.16, 26.1 and later), else V8's API directly (Node 20 and the
// earlier releases of 22, 24 and 26). Both end in the same reference-counted backing store
// whose deleter may run on any thread.
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

// Node-API's SharedArrayBuffer functions are experimental (declared only under
// NAPI_EXPERIMENTAL, which would opt the whole module into experimental Node-API behaviour)
// and missing from earlier releases of the same majors, which load the same prebuild (one per
// ABI): Node loads addons with lazy binding, so a plain call would end the process there with
// "symbol lookup error". Declared here as weak symbols instead: the loader leaves them null
// where this Node does not export them. Signatures as in js_native_api.h of Node 22.23/24.22/26.12.
extern "C" {
__attribute__((weak)) napi_status node_api_create_external_sharedarraybuffer(napi_env env, void* external_data,
                                                                             size_t byte_length,
                                                                             void (*finalize_cb)(void* data, void* hint),
                                                                             void* finalize_hint, napi_value* result);
__attribute__((weak)) napi_status node_api_is_sharedarraybuffer(napi_env env, napi_value value, bool* result);
}

namespace vsu {

namespace {

// Both functions present: the SharedArrayBuffers go through Node-API. napi_get_arraybuffer_info
// accepts a SharedArrayBuffer since the same release that added node_api_is_sharedarraybuffer.
bool NodeApiHasSab() { return node_api_create_external_sharedarraybuffer != nullptr && node_api_is_sharedarraybuffer != nullptr; }

// Which API makes and reads the buffers; sabBackend("v8") switches to V8 where both exist
// (for tests of that path on Node 22+). Process-wide: every worker loads this same library.
std::atomic<bool> g_use_node_api{NodeApiHasSab()};

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

// Node-API's finalizer for the same backing store (node_api_noenv_finalize: any thread, no env).
void NoEnvFinalize(void* data, void* hint) { Deleter(data, 0, hint); }

// The buffer over [addr, addr+length) owned by m, or an empty value with a pending exception.
napi_value NewSab(napi_env env, void* addr, size_t length, Mapping* m) {
  if (g_use_node_api.load()) {
    napi_value sab = nullptr;
    if (node_api_create_external_sharedarraybuffer(env, addr, length, NoEnvFinalize, m, &sab) != napi_ok) return nullptr;
    return sab;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> store = v8::SharedArrayBuffer::NewBackingStore(addr, length, Deleter, m);
  return FromV8(v8::SharedArrayBuffer::New(isolate, std::move(store)));
}

// data and length of a SharedArrayBuffer; false if v is none.
bool SabInfo(napi_env env, napi_value v, uint8_t** data, size_t* length) {
  if (g_use_node_api.load()) {
    bool is = false;
    void* d = nullptr;
    if (node_api_is_sharedarraybuffer(env, v, &is) != napi_ok || !is || napi_get_arraybuffer_info(env, v, &d, length) != napi_ok) {
      return false;
    }
    *data = static_cast<uint8_t*>(d);
    return true;
  }
  v8::Local<v8::Value> local = ToV8(v);
  if (!local->IsSharedArrayBuffer()) return false;
  v8::Local<v8::SharedArrayBuffer> sab = local.As<v8::SharedArrayBuffer>();
  *data = static_cast<uint8_t*>(sab->Data());
  *length = sab->ByteLength();
  return true;
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
  napi_value sab = NewSab(env, addr, length, m);
  if (sab == nullptr) {
    // Node-API refused (a runtime without external buffers): nothing refers to the mapping yet.
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_live.erase(addr);
    }
    munmap(addr, length);
    delete m;  // an owned fd stays the caller's, as when mmap fails
    if (!env.IsExceptionPending()) Napi::Error::New(env, "node_api_create_external_sharedarraybuffer failed").ThrowAsJavaScriptException();
    return Napi::Value();
  }

  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Value(env, sab));
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
  uint8_t* d;
  size_t len;
  if (!SabInfo(info.Env(), info[i], &d, &len)) {
    ThrowType(info.Env(), "argument must be a SharedArrayBuffer");
    return false;
  }
  if (FindMapping(d) == nullptr) {
    ThrowType(info.Env(), "SharedArrayBuffer is not a mapping made by this addon");
    return false;
  }
  *data = d;
  *length = len;
  return true;
}

namespace {

// sabBackend([want]) -> "node-api" | "v8": the API that makes and reads the buffers. With
// want ("v8" or "node-api") it switches first; "node-api" stays "v8" where Node lacks it.
Napi::Value SabBackend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    std::string want;
    if (!ArgString(info, 0, &want)) return Napi::Value();
    if (want == "v8") {
      g_use_node_api.store(false);
    } else if (want == "node-api") {
      g_use_node_api.store(NodeApiHasSab());
    } else {
      return ThrowRange(env, "sabBackend: \"v8\" or \"node-api\"");
    }
  }
  return Napi::String::New(env, g_use_node_api.load() ? "node-api" : "v8");
}

}  // namespace

void InitMmap(Napi::Env env, Napi::Object exports) {
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("madvise", Napi::Function::New(env, Madvise, "madvise"));
  exports.Set("msync", Napi::Function::New(env, Msync, "msync"));
  exports.Set("disownFd", Napi::Function::New(env, DisownFd, "disownFd"));
  exports.Set("liveMappingCount", Napi::Function::New(env, LiveMappingCount, "liveMappingCount"));
  exports.Set("sabBackend", Napi::Function::New(env, SabBackend, "sabBackend"));
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
