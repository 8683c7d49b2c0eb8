// Thin, mechanical KVM ioctl layer (better-sqlite3 style): unpack positional
// arguments, check that every buffer the kernel will read or write is large
// enough for the request, make the system call, return its result or -errno.
// Struct layouts, defaults, options and messages live in TypeScript.
//
// Memory guard: for each ioctl whose argument is a pointer, the buffer must be
// at least _IOC_SIZE(request) bytes, or, for variable-length structs, the size
// implied by the count field the kernel will read (nent, nmsrs, n, nr). A
// second buffer whose address is written into the struct (dirty bitmap,
// ONE_REG value, device attribute value) is checked the same way.
#include <napi.h>
#include <v8.h>

#include <cpuid.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>
#include <vector>
#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

uint32_t ReadU32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t ReadU64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

// Request numbers that need more than _IOC_SIZE (values from linux/kvm.h;
// duplicated in src/generated/kvm-constants.ts, checked by the tests).
constexpr unsigned long kGetMsrIndexList = 0xc004ae02;
constexpr unsigned long kGetSupportedCpuid = 0xc008ae05;
constexpr unsigned long kGetEmulatedCpuid = 0xc008ae09;
constexpr unsigned long kGetMsrFeatureIndexList = 0xc004ae0a;
constexpr unsigned long kSetGsiRouting = 0x4008ae6a;
constexpr unsigned long kReinjectControl = 0x0000ae71;
constexpr unsigned long kGetMsrs = 0xc008ae88;
constexpr unsigned long kSetMsrs = 0x4008ae89;
constexpr unsigned long kSetCpuid2 = 0x4008ae90;
constexpr unsigned long kGetCpuid2 = 0xc008ae91;
constexpr unsigned long kGetOneReg = 0x4010aeab;
constexpr unsigned long kSetOneReg = 0x4010aeac;
constexpr unsigned long kGetRegList = 0xc008aeb0;
constexpr unsigned long kRun = 0x0000ae80;
constexpr unsigned long kGetXsave2 = 0x9000aecf;
constexpr unsigned long kSetXsave = 0x5000aea5;
constexpr unsigned long kGetSupportedHvCpuid = 0xc008aec1;  // struct kvm_cpuid2 + nent entries
constexpr unsigned long kSetCpuid = 0x4008ae8a;             // struct kvm_cpuid + nent 24-byte entries
constexpr unsigned long kGetNestedState = 0xc080aebe;       // kernel reads/writes `size` (u32 at 4) bytes
constexpr unsigned long kSetNestedState = 0x4080aebf;
constexpr unsigned long kSetPmuEventFilter = 0x4020aeb2;    // 32-byte header + nevents (u32 at 4) u64s
constexpr unsigned long kSetSignalMask = 0x4004ae8b;        // u32 len + len bytes of sigset
constexpr unsigned long kGetDirtyLog = 0x4010ae42;
constexpr unsigned long kClearDirtyLog = 0xc018aec0;        // reads ALIGN(num_pages (u32 at 4), 64) / 8 bytes
constexpr unsigned long kSetDeviceAttr = 0x4018aee1;
constexpr unsigned long kGetDeviceAttr = 0x4018aee2;
constexpr unsigned long kX86SetMsrFilter = 0x4188aec6;
constexpr unsigned long kMemoryEncryptOp = 0xc008aeba;
constexpr unsigned long kMemoryEncryptRegRegion = 0x8010aebb;
constexpr unsigned long kMemoryEncryptUnregRegion = 0x8010aebc;
constexpr unsigned long kSetUserMemoryRegion = 0x4020ae46;   // slot u32 @0, memory_size u64 @16
constexpr unsigned long kSetUserMemoryRegion2 = 0x40a0ae49;  // same prefix
constexpr unsigned long kXenHvmConfig = 0x4038ae7a;        // blob_addr_32/64: host addresses
constexpr unsigned long kXenHvmGetAttr = 0xc048aec8;       // attribute unions with host addresses (HVAs)
constexpr unsigned long kXenHvmSetAttr = 0x4048aec9;
constexpr unsigned long kXenVcpuGetAttr = 0xc048aeca;
constexpr unsigned long kXenVcpuSetAttr = 0x4048aecb;
constexpr unsigned long kCreateVcpu = 0xae41;
constexpr unsigned long kKvmIo = 0xae;

// Pages of each memory slot set through this addon, by (VM fd, slot): KVM_GET_DIRTY_LOG
// writes ALIGN(pages, 64) / 8 bytes, a size only the slot knows. Shared by every thread
// (the addon is loaded once per process). Entries of an fd go when the addon closes it; a
// stale entry (fd closed elsewhere, number reused) is replaced when the new VM sets that
// slot, and a slot the new VM never set has no bitmap for the kernel to write.
std::mutex g_slots_mutex;
std::map<std::pair<int, uint32_t>, uint64_t> g_slot_pages;

void RecordSlot(int fd, const uint8_t* region) {
  uint32_t slot = ReadU32(region);
  uint64_t size = ReadU64(region + 16);
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  if (size == 0) {
    g_slot_pages.erase({fd, slot});
  } else {
    g_slot_pages[{fd, slot}] = size / 4096;
  }
}

// XSAVE bytes of each vCPU created through this addon: the VM's KVM_CAP_XSAVE2 at
// KVM_CREATE_VCPU (the guest permission is locked once a VM exists, so the vCPU's uabi
// size never grows past it). Guarded by g_slots_mutex.
std::map<int, size_t> g_xsave_bytes;

void ForgetFd(int fd) {
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  g_slot_pages.erase(g_slot_pages.lower_bound({fd, 0}), g_slot_pages.upper_bound({fd, UINT32_MAX}));
  g_xsave_bytes.erase(fd);
}

void RecordVcpuXsave(int vmFd, int vcpuFd) {
  constexpr unsigned long kCheckExtension = 0xae03;
  constexpr unsigned long kCapXsave2 = 208;
  long r = ::ioctl(vmFd, kCheckExtension, kCapXsave2);
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  if (r > 0) g_xsave_bytes[vcpuFd] = std::max<size_t>(4096, static_cast<size_t>(r));
  else g_xsave_bytes.erase(vcpuFd);
}

bool RecordedXsave(int fd, size_t* bytes) {
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  auto it = g_xsave_bytes.find(fd);
  if (it == g_xsave_bytes.end()) return false;
  *bytes = it->second;
  return true;
}

// Bitmap bytes KVM_GET_DIRTY_LOG writes for (fd, slot); false if the slot is unknown.
bool DirtyBitmapBytes(int fd, uint32_t slot, size_t* bytes) {
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  auto it = g_slot_pages.find({fd, slot});
  if (it == g_slot_pages.end()) return false;
  *bytes = static_cast<size_t>((it->second + 63) / 64 * 8);
  return true;
}  // _IOC_TYPE of every KVM request (linux/kvm.h KVMIO)

// Requests whose struct holds a host address the kernel reads or writes through.
// ioctlBuf refuses them: the address would be whatever the caller wrote into the
// bytes. ioctlBufPtr writes a size-checked buffer's address instead.
bool CarriesPointer(unsigned long req) {
  switch (req) {
    case kGetOneReg: case kSetOneReg: case kGetDirtyLog: case kClearDirtyLog: case kSetDeviceAttr:
    case kGetDeviceAttr: case kX86SetMsrFilter: case kMemoryEncryptOp: case kMemoryEncryptRegRegion:
    case kMemoryEncryptUnregRegion: case kXenHvmConfig: case kXenHvmGetAttr: case kXenHvmSetAttr:
    case kXenVcpuGetAttr: case kXenVcpuSetAttr:
      return true;
    default:
      return false;
  }
}

// The requests ioctlBufPtr accepts, each with the offset of the struct's one host
// pointer field and the struct size. The size of the pointed-to buffer is computed per
// request in IoctlBufPtr (ONE_REG: from the register id; dirty logs: from the slot or
// num_pages; device attributes: at least a u64). Every other request is refused: a
// caller-chosen offset let the kernel write through whatever address sat at the
// struct's real pointer field. KVM_X86_SET_MSR_FILTER (16 bitmap pointers) has its
// own function, ioctlMsrFilter; the SEV/Xen requests (nested pointers) are in no path.
struct PtrRequest { unsigned long req; size_t ptrOffset; size_t structBytes; };
constexpr PtrRequest kPtrRequests[] = {
    {kGetOneReg, 8, 16},      // struct kvm_one_reg { u64 id; u64 addr; }
    {kSetOneReg, 8, 16},
    {kGetDirtyLog, 8, 16},    // struct kvm_dirty_log { u32 slot; u32 pad; u64 dirty_bitmap; }
    {kClearDirtyLog, 16, 24}, // struct kvm_clear_dirty_log { u32 slot, num_pages; u64 first_page; u64 dirty_bitmap; }
    {kSetDeviceAttr, 16, 24}, // struct kvm_device_attr { u32 flags, group; u64 attr; u64 addr; }
    {kGetDeviceAttr, 16, 24},
};

const PtrRequest* FindPtrRequest(unsigned long req) {
  for (const PtrRequest& p : kPtrRequests) {
    if (p.req == req) return &p;
  }
  return nullptr;
}

// Requests whose checked size depends on a count field in the struct (or whose struct
// is recorded after the call). The kernel reads that field again after the addon's
// check; in a SharedArrayBuffer view another thread could change it in between. They
// run on a private copy of the checked bytes, copied back afterwards.
bool CountCarrying(unsigned long req) {
  switch (req) {
    case kGetMsrIndexList: case kGetMsrFeatureIndexList: case kGetSupportedCpuid: case kGetEmulatedCpuid:
    case kGetSupportedHvCpuid: case kSetCpuid2: case kGetCpuid2: case kGetMsrs: case kSetMsrs:
    case kSetGsiRouting: case kGetRegList: case kSetCpuid: case kGetNestedState: case kSetNestedState:
    case kSetPmuEventFilter: case kSetSignalMask: case kSetUserMemoryRegion: case kSetUserMemoryRegion2:
      return true;
    default:
      return false;
  }
}

// A KVM request: the kernel takes the request as a 32-bit unsigned int, so a
// larger number would be truncated to a different request than the one checked;
// a request of another driver (FIONREAD, TCGETS, ...) does not follow the
// _IOC size encoding the checks rely on.
bool IsKvmRequest(unsigned long req) { return req <= 0xffffffffUL && _IOC_TYPE(req) == kKvmIo; }

// Fallback (a vCPU fd not created through this addon) for the bytes KVM_GET_XSAVE2
// writes and KVM_SET_XSAVE reads: the vCPU's uabi size, which is at most the
// uncompacted XSAVE size of the features the process may give guests
// (ARCH_GET_XCOMP_GUEST_PERM), and at least struct kvm_xsave (4096). On AMX hosts the
// CPU's largest area (CPUID.(0xD,0).ECX, 11008 on Sapphire Rapids) includes XTILE_DATA,
// which KVM only uses once the process requested ARCH_REQ_XCOMP_GUEST_PERM; demanding
// it made getXsave2()/setXsave() throw against the KVM_CAP_XSAVE2-sized buffers
// (issue 14 item 3). Falls back to the CPU's largest area if the permission is unknown.
size_t XsaveSizeForMask(uint64_t mask) {
  size_t end = 512 + 64;  // legacy area + XSAVE header
  for (unsigned i = 2; i < 64; i++) {
    if (!(mask & (uint64_t{1} << i))) continue;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(0xd, i, &a, &b, &c, &d)) continue;
    if (b + a > end) end = b + a;  // offset (EBX) + size (EAX), uncompacted
  }
  return end;
}

size_t XsaveBytes() {
  constexpr long kArchGetXcompGuestPerm = 0x1024;
  uint64_t perm = 0;
  size_t n = 4096;
  if (::syscall(SYS_arch_prctl, kArchGetXcompGuestPerm, &perm) == 0) {
    return std::max(n, XsaveSizeForMask(perm));  // a few CPUID calls; XSAVE calls are rare
  }
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(0xd, 0, &a, &b, &c, &d) && c > n) n = c;
  return n;
}

bool GetBytes(const Napi::Value& v, uint8_t** data, size_t* len) {
  if (v.IsTypedArray()) {
    // napi_get_typedarray_info's data pointer, not the ArrayBuffer's: a view of a
    // SharedArrayBuffer has no napi ArrayBuffer (Data() was NULL, so the kernel
    // got NULL + byteOffset).
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    void* p = nullptr;
    if (napi_get_typedarray_info(v.Env(), v, nullptr, nullptr, &p, nullptr, nullptr) != napi_ok) return false;
    *data = static_cast<uint8_t*>(p);
    *len = p == nullptr ? 0 : ta.ByteLength();
    return true;
  }
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    *data = static_cast<uint8_t*>(ab.Data());
    *len = ab.ByteLength();
    return true;
  }
  return false;
}

bool GetFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 0x7fffffff) || d != static_cast<int>(d)) return false;
  *fd = static_cast<int>(d);
  return true;
}

bool GetUlong(const Napi::CallbackInfo& info, size_t i, unsigned long* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<unsigned long>(d);
  return true;
}

Napi::Value Fail(Napi::Env env, const char* what) {
  Napi::TypeError::New(env, what).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value Result(Napi::Env env, long r) {
  return Napi::Number::New(env, r < 0 ? -static_cast<double>(errno) : static_cast<double>(r));
}


// Bytes the kernel may touch behind the pointer argument of `req`, given the
// header already in `buf` (len >= 8 checked by the caller for the variable ones).
// Returns false if the count field is beyond any sane limit.
bool RequiredSize(unsigned long req, const uint8_t* buf, size_t len, size_t* need) {
  size_t base = _IOC_SIZE(req);
  switch (req) {
    case kGetMsrIndexList:
    case kGetMsrFeatureIndexList:
      if (len < 4) { *need = 4; return true; }
      *need = 4 + static_cast<size_t>(ReadU32(buf)) * 4;
      return true;
    case kGetSupportedCpuid:
    case kGetEmulatedCpuid:
    case kGetSupportedHvCpuid:
    case kSetCpuid2:
    case kGetCpuid2:
      if (len < 8) { *need = 8; return true; }
      *need = 8 + static_cast<size_t>(ReadU32(buf)) * 40;
      return true;
    case kGetMsrs:
    case kSetMsrs:
      if (len < 8) { *need = 8; return true; }
      *need = 8 + static_cast<size_t>(ReadU32(buf)) * 16;
      return true;
    case kSetGsiRouting:
      if (len < 8) { *need = 8; return true; }
      *need = 8 + static_cast<size_t>(ReadU32(buf)) * 48;  // kvm_irq_routing_entry
      return true;
    case kGetRegList: {
      if (len < 8) { *need = 8; return true; }
      uint64_t n = ReadU64(buf);
      if (n > (1u << 24)) return false;
      *need = 8 + static_cast<size_t>(n) * 8;
      return true;
    }
    case kReinjectControl:
      *need = 32;  // struct kvm_reinject_control, passed to an _IO request
      return true;
    case kSetCpuid:
      if (len < 8) { *need = 8; return true; }
      *need = 8 + static_cast<size_t>(ReadU32(buf)) * 24;
      return true;
    case kGetNestedState:
    case kSetNestedState:
      if (len < 8) { *need = base; return true; }
      *need = std::max(base, static_cast<size_t>(ReadU32(buf + 4)));
      return true;
    case kSetPmuEventFilter:
      if (len < 8) { *need = base; return true; }
      *need = base + static_cast<size_t>(ReadU32(buf + 4)) * 8;
      return true;
    case kSetSignalMask:
      if (len < 4) { *need = 4; return true; }
      *need = 4 + static_cast<size_t>(ReadU32(buf));
      return true;
    case kGetXsave2:
    case kSetXsave:
      *need = std::max(base, XsaveBytes());
      return true;  // IoctlBuf uses the vCPU's recorded size instead when it has one
    default:
      *need = base;
      return true;
  }
}

// open(path) -> fd | -errno. O_RDWR | O_CLOEXEC.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return Fail(env, "open(path: string)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  return Result(env, fd);
}

// close(fd) -> 0 | -errno
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return Fail(env, "close(fd: number)");
  ForgetFd(fd);
  return Result(env, ::close(fd));
}

// ioctlVal(fd, request, arg: number) -> result | -errno, for _IO requests.
Napi::Value IoctlVal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  unsigned long req, arg;
  if (!GetFd(info, 0, &fd) || !GetUlong(info, 1, &req) || !GetUlong(info, 2, &arg)) {
    return Fail(env, "ioctlVal(fd: number, request: number, arg: number)");
  }
  if (!IsKvmRequest(req)) return Fail(env, "ioctlVal: not a KVM request");
  if (_IOC_DIR(req) != _IOC_NONE || req == kReinjectControl) {
    return Fail(env, "ioctlVal: request takes a pointer argument");
  }
  long r = ::ioctl(fd, req, arg);
  int e = errno;
  if (req == kCreateVcpu && r >= 0) RecordVcpuXsave(fd, static_cast<int>(r));
  errno = e;
  return Result(env, r);
}

// ioctlBuf(fd, request, buf, minBytes) -> result | -errno
Napi::Value IoctlBuf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  unsigned long req, extra = 0;
  uint8_t* data;
  size_t len;
  if (!GetFd(info, 0, &fd) || !GetUlong(info, 1, &req) || info.Length() < 3 ||
      !GetBytes(info[2], &data, &len) || (info.Length() > 3 && !GetUlong(info, 3, &extra))) {
    return Fail(env, "ioctlBuf(fd: number, request: number, buf: Uint8Array, minBytes?: number)");
  }
  if (!IsKvmRequest(req)) return Fail(env, "ioctlBuf: not a KVM request");
  if (_IOC_DIR(req) == _IOC_NONE && req != kReinjectControl) {
    return Fail(env, "ioctlBuf: request takes no pointer argument");
  }
  if (CarriesPointer(req)) return Fail(env, "ioctlBuf: the struct holds a host address (use ioctlBufPtr)");
  size_t need;
  if (!RequiredSize(req, data, len, &need)) return Fail(env, "ioctlBuf: count field out of range");
  size_t recorded;
  if ((req == kGetXsave2 || req == kSetXsave) && RecordedXsave(fd, &recorded)) need = recorded;
  if (extra > need) need = extra;
  if (len < need || len == 0) {
    Napi::RangeError::New(env, "ioctlBuf: buffer smaller than the kernel will access").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!CountCarrying(req)) return Result(env, ::ioctl(fd, req, data));
  // The kernel sees a private copy whose count field is the one checked above.
  std::vector<uint8_t> copy(data, data + need);
  long r = ::ioctl(fd, req, copy.data());
  int e = errno;
  if (r == 0 && (req == kSetUserMemoryRegion || req == kSetUserMemoryRegion2)) RecordSlot(fd, copy.data());
  if (_IOC_DIR(req) & _IOC_READ || req == kGetMsrIndexList || req == kGetMsrFeatureIndexList) {
    std::memcpy(data, copy.data(), need);
  }
  errno = e;
  return Result(env, r);
}

// ioctlBufPtr(fd, request, buf, ptrOffset, data, dataMinBytes) -> result | -errno.
// Writes data's address as a u64 at buf[ptrOffset] first (dirty bitmap, ONE_REG
// value, device attribute value).
Napi::Value IoctlBufPtr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  unsigned long req, off, dmin;
  uint8_t *buf, *data;
  size_t len, dlen;
  if (!GetFd(info, 0, &fd) || !GetUlong(info, 1, &req) || info.Length() < 6 ||
      !GetBytes(info[2], &buf, &len) || !GetUlong(info, 3, &off) || !GetBytes(info[4], &data, &dlen) ||
      !GetUlong(info, 5, &dmin)) {
    return Fail(env, "ioctlBufPtr(fd, request, buf, ptrOffset, data, dataMinBytes)");
  }
  if (!IsKvmRequest(req)) return Fail(env, "ioctlBufPtr: not a KVM request");
  const PtrRequest* pr = FindPtrRequest(req);
  if (pr == nullptr) return Fail(env, "ioctlBufPtr: request not in the pointer table");
  if (len < pr->structBytes) {
    Napi::RangeError::New(env, "ioctlBufPtr: struct buffer too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (off != pr->ptrOffset) return Fail(env, "ioctlBufPtr: ptrOffset is not the request's pointer field");
  // Private copy: the kernel reads the fields checked below (register id, slot,
  // num_pages) from this copy, which no other thread can change.
  uint8_t st[24];
  std::memcpy(st, buf, pr->structBytes);
  if (req == kGetOneReg || req == kSetOneReg) {
    uint64_t id = ReadU64(st);
    size_t regSize = size_t{1} << ((id >> 52) & 0xf);
    if (dmin < regSize) dmin = regSize;
  }
  if (req == kGetDirtyLog) {
    size_t bitmap;
    if (!DirtyBitmapBytes(fd, ReadU32(st), &bitmap)) {
      Napi::RangeError::New(env, "ioctlBufPtr: KVM_GET_DIRTY_LOG of a slot not set through this addon").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (dmin < bitmap) dmin = bitmap;
  }
  if (req == kClearDirtyLog) {
    size_t bitmap = (static_cast<size_t>(ReadU32(st + 4)) + 63) / 64 * 8;
    if (dmin < bitmap) dmin = bitmap;
  }
  if (req == kGetDeviceAttr || req == kSetDeviceAttr) {
    // x86 attributes are u64s (system, VM and vCPU groups); the one exception is
    // KVM_SET_DEVICE_ATTR of KVM_DEV_VFIO_FILE (group 1) ADD/DEL, which reads an s32 fd.
    uint32_t group = ReadU32(st + 4);
    uint64_t attr = ReadU64(st + 8);
    size_t least = req == kSetDeviceAttr && group == 1 && (attr == 1 || attr == 2) ? 4 : 8;
    if (dmin < least) dmin = least;
  }
  if (dlen < dmin || dlen == 0) {
    Napi::RangeError::New(env, "ioctlBufPtr: data buffer smaller than the kernel will access").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint64_t addr = reinterpret_cast<uintptr_t>(data);
  std::memcpy(st + off, &addr, 8);
  long r = ::ioctl(fd, req, st);
  int e = errno;
  std::memset(st + off, 0, 8);  // do not leave a host address in JS-visible memory
  std::memcpy(buf, st, pr->structBytes);
  errno = e;
  return Result(env, r);
}

// ioctlMsrFilter(fd, filter, bitmaps) -> result | -errno: KVM_X86_SET_MSR_FILTER.
// `filter` holds struct kvm_msr_filter (392 bytes: u32 flags, then 16 ranges of
// { u32 flags, nmsrs, base; u8 *bitmap } at 8 + 24 * i); `bitmaps` is an array of
// at most 16 byte buffers, bitmaps[i] for range i. The kernel copies
// BITS_TO_LONGS(nmsrs) * sizeof(long) bytes from each range with nmsrs != 0 and
// ignores the others, so such a range needs a bitmaps[i] of at least that many
// bytes; the addon writes the 16 pointers itself (a range with nmsrs 0 gets NULL)
// into a private copy of the struct, which no other thread can change after the check.
Napi::Value IoctlMsrFilter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  constexpr size_t kFilterBytes = 392, kRanges = 16, kRangeBytes = 24, kRangesAt = 8;
  int fd;
  uint8_t* buf;
  size_t len;
  if (!GetFd(info, 0, &fd) || info.Length() < 3 || !GetBytes(info[1], &buf, &len) || !info[2].IsArray()) {
    return Fail(env, "ioctlMsrFilter(fd: number, filter: Uint8Array, bitmaps: Uint8Array[])");
  }
  if (len < kFilterBytes || buf == nullptr) {
    Napi::RangeError::New(env, "ioctlMsrFilter: filter smaller than struct kvm_msr_filter").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array bitmaps = info[2].As<Napi::Array>();
  if (bitmaps.Length() > kRanges) {
    Napi::RangeError::New(env, "ioctlMsrFilter: more than 16 bitmaps").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint8_t st[kFilterBytes];
  std::memcpy(st, buf, kFilterBytes);
  for (size_t i = 0; i < kRanges; i++) {
    uint8_t* range = st + kRangesAt + i * kRangeBytes;
    uint64_t addr = 0;
    uint32_t nmsrs = ReadU32(range + 4);
    if (nmsrs != 0) {
      size_t need = (static_cast<size_t>(nmsrs) + 63) / 64 * 8;
      uint8_t* data = nullptr;
      size_t dlen = 0;
      if (i >= bitmaps.Length() || !GetBytes(bitmaps.Get(static_cast<uint32_t>(i)), &data, &dlen)) {
        return Fail(env, "ioctlMsrFilter: a range with nmsrs > 0 has no bitmap buffer");
      }
      if (data == nullptr || dlen < need) {
        Napi::RangeError::New(env, "ioctlMsrFilter: bitmap smaller than the kernel will read").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      addr = reinterpret_cast<uintptr_t>(data);
    }
    std::memcpy(range + 16, &addr, 8);
  }
  long r = ::ioctl(fd, kX86SetMsrFilter, st);
  int e = errno;
  std::memset(st, 0, kFilterBytes);
  errno = e;
  return Result(env, r);
}

// Threads inside KVM_RUN, for kickRunning: Node joins a worker on process.exit() and on
// worker.terminate(), and a worker blocked in KVM_RUN under a spinning guest never
// returns to JavaScript, so neither ever finished (issue 14 item 4). Each thread that
// runs a vCPU takes a slot (kernel tid, Node threadId) on its first run; run() marks
// the slot running around the ioctl and returns -EINTR at once if its thread is
// being stopped. The flags are seq_cst: either run() sees `stop`, or the kicker sees
// `running` and signals the thread (again, until it is out).
struct RunSlot {
  std::atomic<int> tid{0};
  std::atomic<int> nodeThread{-1};
  std::atomic<int> running{0};
  std::atomic<int> stop{0};
};
constexpr int kRunSlots = 256;
RunSlot g_run_slots[kRunSlots];
std::atomic<int> g_stop_all{0};
thread_local int t_node_thread = -1;

// Frees the thread's slot when the thread ends.
struct SlotOwner {
  RunSlot* slot = nullptr;
  ~SlotOwner() {
    if (slot != nullptr) {
      slot->running.store(0);
      slot->nodeThread.store(-1);
      slot->tid.store(0);
    }
  }
};
thread_local SlotOwner t_slot;

// The calling thread's slot, taken on first use; nullptr if all are taken (that
// thread's runs are then not kicked on exit/terminate).
RunSlot* ThreadSlot() {
  if (t_slot.slot != nullptr) return t_slot.slot;
  int tid = static_cast<int>(::syscall(SYS_gettid));
  for (RunSlot& s : g_run_slots) {
    int expected = 0;
    if (s.tid.compare_exchange_strong(expected, tid)) {
      s.stop.store(0);
      s.running.store(0);
      s.nodeThread.store(t_node_thread);
      t_slot.slot = &s;
      return &s;
    }
  }
  return nullptr;
}

// setThreadId(threadId): records the calling thread's worker_threads.threadId.
Napi::Value SetThreadId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return Fail(env, "setThreadId(threadId: number)");
  t_node_thread = info[0].As<Napi::Number>().Int32Value();
  if (t_slot.slot != nullptr) t_slot.slot->nodeThread.store(t_node_thread);
  return env.Undefined();
}

// kickRunning(signo, threadId) -> vCPU threads still in KVM_RUN after ~2 s (0 normally),
// or -EINVAL if signo has no handler. threadId -1: every thread (process exit); else
// the threads whose Node threadId it is (worker.terminate). Marks them stopping (their
// later runs return EINTR at once), then signals each running one every millisecond
// until none is left in KVM_RUN.
Napi::Value KickRunning(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) return Fail(env, "kickRunning(signo, threadId)");
  int signo = info[0].As<Napi::Number>().Int32Value();
  int node = info[1].As<Napi::Number>().Int32Value();
  struct sigaction old {};
  if (signo <= 0 || signo >= 65 || sigaction(signo, nullptr, &old) != 0 || old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) {
    return Napi::Number::New(env, -EINVAL);
  }
  auto matches = [node](RunSlot& s) { return s.tid.load() != 0 && (node == -1 || s.nodeThread.load() == node); };
  if (node == -1) g_stop_all.store(1);
  for (RunSlot& s : g_run_slots) {
    if (matches(s)) s.stop.store(1);
  }
  int left = 0;
  for (int round = 0; round < 2000; round++) {
    left = 0;
    for (RunSlot& s : g_run_slots) {
      if (!matches(s) || s.running.load() == 0) continue;
      left++;
      ::syscall(SYS_tgkill, getpid(), s.tid.load(), signo);
    }
    if (left == 0) break;
    usleep(1000);
  }
  return Napi::Number::New(env, left);
}

// requestGuestXcompPerm(feature) -> 0 | -errno: arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM,
// feature), e.g. 18 (XTILE_DATA) before exposing AMX to guests. Process-wide; vCPUs
// created afterwards get the larger XSAVE size (KVM_CAP_XSAVE2 reports it).
Napi::Value RequestGuestXcompPerm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return Fail(env, "requestGuestXcompPerm(feature: number)");
  int feature = info[0].As<Napi::Number>().Int32Value();
  if (feature < 0 || feature > 63) return Fail(env, "requestGuestXcompPerm: feature is not an XSAVE feature number");
  constexpr long kArchReqXcompGuestPerm = 0x1025;
  return Result(env, ::syscall(SYS_arch_prctl, kArchReqXcompGuestPerm, static_cast<unsigned long>(feature)));
}

// cpuid(leaf, subleaf, out) -> 0: the CPUID instruction on the calling
// thread's CPU, EAX/EBX/ECX/EDX into out (a Uint32Array of at least 4
// elements). Not an ioctl: the host-CPU side of CPU-feature reports, without
// the privileges /dev/cpu/N/cpuid needs.
Napi::Value Cpuid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsTypedArray()) {
    Napi::TypeError::New(env, "cpuid(leaf: number, subleaf: number, out: Uint32Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint32_array || ta.ElementLength() < 4) {
    Napi::RangeError::New(env, "cpuid: out must be a Uint32Array of at least 4 elements").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  unsigned a, b, c, d;
  __cpuid_count(info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value(), a, b, c, d);
  Napi::Uint32Array out = info[2].As<Napi::Uint32Array>();
  out[0] = a;
  out[1] = b;
  out[2] = c;
  out[3] = d;
  return Napi::Number::New(env, 0);
}

// run(fd) -> 0 | -errno: KVM_RUN, the hot path. This one function uses the V8
// API directly instead of N-API: after each exit the CPU's caches and branch
// predictors are cold (the guest ran in between), and N-API's callback wrapper
// (env scope, TryCatch, pending-exception checks) then cost ~2 us per call on
// this machine, against ~0.5 us for a plain V8 FunctionCallback (measured
// with bench/exit-roundtrip.mjs; see DESIGN.md "Hot path"). The addon is
// always compiled against the running Node's headers, so V8 ABI is not at risk.
void RunV8(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Local<v8::Value> arg = info[0];
  if (!arg->IsInt32() || arg.As<v8::Int32>()->Value() < 0) {
    v8::Isolate* isolate = info.GetIsolate();
    isolate->ThrowException(v8::Exception::TypeError(v8::String::NewFromUtf8Literal(isolate, "run(fd: number)")));
    return;
  }
  RunSlot* slot = ThreadSlot();
  if (slot != nullptr) {
    slot->running.store(1);
    if (slot->stop.load() != 0 || g_stop_all.load() != 0) {
      slot->running.store(0);
      info.GetReturnValue().Set(static_cast<int32_t>(-EINTR));
      return;
    }
  }
  int r = ::ioctl(arg.As<v8::Int32>()->Value(), kRun, 0);
  int e = errno;
  if (slot != nullptr) slot->running.store(0);
  info.GetReturnValue().Set(static_cast<int32_t>(r < 0 ? -e : r));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("ioctlVal", Napi::Function::New(env, IoctlVal, "ioctlVal"));
  exports.Set("ioctlBuf", Napi::Function::New(env, IoctlBuf, "ioctlBuf"));
  exports.Set("ioctlBufPtr", Napi::Function::New(env, IoctlBufPtr, "ioctlBufPtr"));
  exports.Set("ioctlMsrFilter", Napi::Function::New(env, IoctlMsrFilter, "ioctlMsrFilter"));
  exports.Set("cpuid", Napi::Function::New(env, Cpuid, "cpuid"));
  exports.Set("setThreadId", Napi::Function::New(env, SetThreadId, "setThreadId"));
  exports.Set("kickRunning", Napi::Function::New(env, KickRunning, "kickRunning"));
  exports.Set("requestGuestXcompPerm", Napi::Function::New(env, RequestGuestXcompPerm, "requestGuestXcompPerm"));
  // A napi_value is a v8::Local's slot pointer in Node's implementation
  // (v8impl::JsValueFromV8LocalValue); vmm-sys-util relies on the same.
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Function> run;
  // Empty only when the isolate cannot run (a worker being terminated during this init):
  // return without `run`, as a failed Node-API call above would, instead of aborting.
  if (!v8::FunctionTemplate::New(isolate, RunV8)->GetFunction(isolate->GetCurrentContext()).ToLocal(&run)) return exports;
  run->SetName(v8::String::NewFromUtf8Literal(isolate, "run"));
  exports.Set("run", Napi::Value(env, reinterpret_cast<napi_value>(*run)));
  return exports;
}

}  // namespace

NODE_API_MODULE(kvm_ioctls, Init)
