// tap devices: TUNSETIFF on an fd of /dev/net/tun (opened in TypeScript with fs.openSync,
// which sets O_CLOEXEC), TUNSETOFFLOAD and TUNSETVNETHDRSZ. Values from linux/if_tun.h.
#include "common.h"

#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

namespace vsu {

namespace {

// tunSetIff(fd, name, flags) -> the interface name the kernel chose | -errno
Napi::Value TunSetIff(const Napi::CallbackInfo& info) {
  int64_t fd, flags;
  std::string name;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgString(info, 1, &name) || !ArgInt(info, 2, 0, 0xffff, &flags)) {
    return Napi::Value();
  }
  // ifr_name is IFNAMSIZ bytes including the terminating NUL.
  if (name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) {
    return ThrowRange(info.Env(), "interface name must be shorter than IFNAMSIZ and contain no NUL");
  }
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = static_cast<short>(flags);
  if (ioctl(static_cast<int>(fd), TUNSETIFF, &ifr) != 0) return Errno(info.Env(), errno);
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  return Napi::String::New(info.Env(), ifr.ifr_name);
}

// tapSetOffload(fd, flags) -> 0 | -errno
Napi::Value TapSetOffload(const Napi::CallbackInfo& info) {
  int64_t fd, flags;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, UINT32_MAX, &flags)) return Napi::Value();
  if (ioctl(static_cast<int>(fd), TUNSETOFFLOAD, static_cast<unsigned long>(flags)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// tapSetVnetHdrSize(fd, size) -> 0 | -errno
Napi::Value TapSetVnetHdrSize(const Napi::CallbackInfo& info) {
  int64_t fd, size;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, INT32_MAX, &size)) return Napi::Value();
  int sz = static_cast<int>(size);
  if (ioctl(static_cast<int>(fd), TUNSETVNETHDRSZ, &sz) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tunSetIff", Napi::Function::New(env, TunSetIff, "tunSetIff"));
  exports.Set("tapSetOffload", Napi::Function::New(env, TapSetOffload, "tapSetOffload"));
  exports.Set("tapSetVnetHdrSize", Napi::Function::New(env, TapSetVnetHdrSize, "tapSetVnetHdrSize"));
  Napi::Object c = Napi::Object::New(env);
  VSU_CONST(c, IFF_TAP);
  VSU_CONST(c, IFF_NO_PI);
  VSU_CONST(c, IFF_VNET_HDR);
  VSU_CONST(c, IFF_MULTI_QUEUE);
  VSU_CONST(c, TUN_F_CSUM);
  VSU_CONST(c, TUN_F_TSO4);
  VSU_CONST(c, TUN_F_TSO6);
  VSU_CONST(c, TUN_F_TSO_ECN);
  VSU_CONST(c, TUN_F_UFO);
  VSU_CONST(c, IFNAMSIZ);
  exports.Set("tapConstants", c);
}

}  // namespace vsu
