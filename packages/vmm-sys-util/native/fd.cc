// File-descriptor primitives: memfd_create, close, ftruncate, eventfd, blocking poll.
#include "common.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

// linux/memfd.h (HUGETLB_FLAG_ENCODE_SHIFT); not in every C library's sys/mman.h.
#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26
#endif

namespace vsu {

namespace {

// memfdCreate(name, flags) -> fd | -errno
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name;
  int64_t flags;
  if (!ArgString(info, 0, &name) || !ArgInt(info, 1, 0, UINT32_MAX, &flags)) return Napi::Value();
  if (name.find('\0') != std::string::npos) return ThrowRange(info.Env(), "name contains a NUL byte");
  int fd = memfd_create(name.c_str(), static_cast<unsigned>(flags));
  if (fd < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), fd);
}

// close(fd) -> 0 | -errno
Napi::Value Close(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return Napi::Value();
  if (close(static_cast<int>(fd)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// ftruncate(fd, size) -> 0 | -errno
Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int64_t fd;
  uint64_t size;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgSize(info, 1, &size)) return Napi::Value();
  if (ftruncate(static_cast<int>(fd), static_cast<off_t>(size)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// fallocate(fd, mode, offset, len) -> 0 | -errno. mode is FALLOC_FL_* bits, passed through.
Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  int64_t fd, mode;
  uint64_t offset, len;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, INT32_MAX, &mode) || !ArgSize(info, 2, &offset) ||
      !ArgSize(info, 3, &len))
    return Napi::Value();
  if (fallocate(static_cast<int>(fd), static_cast<int>(mode), static_cast<off_t>(offset), static_cast<off_t>(len)) != 0)
    return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// addSeals(fd, seals) -> 0 | -errno: fcntl(F_ADD_SEALS) on a memfd made with MFD_ALLOW_SEALING.
Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  int64_t fd, seals;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, INT32_MAX, &seals)) return Napi::Value();
  if (fcntl(static_cast<int>(fd), F_ADD_SEALS, static_cast<int>(seals)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// eventfd(initval, flags) -> fd | -errno
Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  int64_t initval, flags;
  if (!ArgInt(info, 0, 0, UINT32_MAX, &initval) || !ArgInt(info, 1, 0, INT32_MAX, &flags)) return Napi::Value();
  int fd = eventfd(static_cast<unsigned>(initval), static_cast<int>(flags));
  if (fd < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), fd);
}

// eventfdRead(fd) -> bigint | -errno (a number). Blocks unless the fd is non-blocking.
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return Napi::Value();
  uint64_t value = 0;
  ssize_t n = read(static_cast<int>(fd), &value, sizeof(value));
  if (n < 0) return Errno(info.Env(), errno);
  if (n != sizeof(value)) return Errno(info.Env(), EIO);
  return Napi::BigInt::New(info.Env(), value);
}

// eventfdWrite(fd, value: bigint) -> 0 | -errno
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return Napi::Value();
  if (info.Length() < 2 || !info[1].IsBigInt()) return ThrowType(info.Env(), "value must be a bigint");
  bool lossless = false;
  uint64_t value = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) return ThrowRange(info.Env(), "value must fit in 64 bits");
  ssize_t n = write(static_cast<int>(fd), &value, sizeof(value));
  if (n < 0) return Errno(info.Env(), errno);
  if (n != sizeof(value)) return Errno(info.Env(), EIO);
  return Napi::Number::New(info.Env(), 0);
}

// poll(fd, events, timeoutMs) -> revents | -errno. Blocks the calling thread (use in workers).
Napi::Value Poll(const Napi::CallbackInfo& info) {
  int64_t fd, events, timeout;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, INT16_MAX, &events) ||
      !ArgInt(info, 2, -1, INT32_MAX, &timeout)) {
    return Napi::Value();
  }
  struct pollfd p = {static_cast<int>(fd), static_cast<short>(events), 0};
  int n = poll(&p, 1, static_cast<int>(timeout));
  if (n < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), n == 0 ? 0 : p.revents);
}

}  // namespace

void InitFd(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("addSeals", Napi::Function::New(env, AddSeals, "addSeals"));
  exports.Set("eventfd", Napi::Function::New(env, EventfdCreate, "eventfd"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
  exports.Set("poll", Napi::Function::New(env, Poll, "poll"));
  Napi::Object c = Napi::Object::New(env);
  VSU_CONST(c, MFD_CLOEXEC);
  VSU_CONST(c, MFD_ALLOW_SEALING);
  VSU_CONST(c, MFD_HUGETLB);
  VSU_CONST(c, MFD_HUGE_SHIFT);
  VSU_CONST(c, F_SEAL_SHRINK);
  VSU_CONST(c, FALLOC_FL_KEEP_SIZE);
  VSU_CONST(c, FALLOC_FL_PUNCH_HOLE);
  VSU_CONST(c, FALLOC_FL_ZERO_RANGE);
  VSU_CONST(c, EFD_CLOEXEC);
  VSU_CONST(c, EFD_NONBLOCK);
  VSU_CONST(c, EFD_SEMAPHORE);
  VSU_CONST(c, POLLIN);
  VSU_CONST(c, POLLOUT);
  VSU_CONST(c, POLLERR);
  VSU_CONST(c, POLLHUP);
  VSU_CONST(c, POLLNVAL);
  exports.Set("fdConstants", c);
}

}  // namespace vsu
