// Entry point of the vmm_sys_util addon and the argument helpers shared by its parts.
#include "common.h"

#include <unistd.h>

namespace vsu {

bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t min, int64_t max, int64_t* out) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    ThrowType(info.Env(), "argument must be a number");
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<int64_t>(d))) {
    ThrowRange(info.Env(), "argument out of range or not an integer");
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgSize(const Napi::CallbackInfo& info, size_t i, uint64_t* out) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    ThrowType(info.Env(), "argument must be a number");
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= kMaxSafeInteger) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowRange(info.Env(), "size/offset must be an integer in [0, 2^53-1]");
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (i >= info.Length() || !info[i].IsString()) {
    ThrowType(info.Env(), "argument must be a string");
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, bool* out) {
  if (i >= info.Length() || !info[i].IsBoolean()) {
    ThrowType(info.Env(), "argument must be a boolean");
    return false;
  }
  *out = info[i].As<Napi::Boolean>().Value();
  return true;
}

static Napi::Value PageSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(sysconf(_SC_PAGESIZE)));
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("pageSize", Napi::Function::New(env, PageSize, "pageSize"));
  InitMmap(env, exports);
  InitFd(env, exports);
  InitSignals(env, exports);
  InitPoll(env, exports);
  InitTap(env, exports);
  InitCopy(env, exports);
  InitIov(env, exports);
  return exports;
}

}  // namespace vsu

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return vsu::Init(env, exports); }

// NODE_API_MODULE registers a context-aware module, so the addon loads in worker threads too.
NODE_API_MODULE(vmm_sys_util, InitAddon)
