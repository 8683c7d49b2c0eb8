// Shared helpers of the vmm_sys_util addon.
//
// The addon is deliberately thin (see DESIGN.md "Addon"): every export takes
// positional arguments, checks their JS types and the ranges that protect
// memory, makes one system call and returns its result. A failed system call
// is reported as a negative errno number (a JS number below zero); TypeScript
// turns that into a VmmSysError. Argument type errors throw a TypeError/
// RangeError: they only happen when the addon is called directly, bypassing
// the TypeScript layer, and they never reach a system call.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <v8.h>

namespace vsu {

// Largest integer a JS number holds exactly (2^53 - 1).
constexpr double kMaxSafeInteger = 9007199254740991.0;

// Throws `type` (TypeError or RangeError) with `msg` and returns an empty value.
inline Napi::Value ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return Napi::Value();
}
inline Napi::Value ThrowRange(Napi::Env env, const char* msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return Napi::Value();
}

// Sets obj[NAME] = NAME (a constant from a system header).
#define VSU_CONST(obj, name) (obj).Set(#name, Napi::Number::New(env, static_cast<double>(name)))

// -errno as a JS number.
inline Napi::Value Errno(Napi::Env env, int err) { return Napi::Number::New(env, -static_cast<double>(err)); }

// Reads argument `i` as an int32. Returns false (with a pending exception) if it is not a number
// holding an integer in [min, max].
bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t min, int64_t max, int64_t* out);
// Reads argument `i` as a non-negative integral double <= 2^53-1 (a size or offset).
bool ArgSize(const Napi::CallbackInfo& info, size_t i, uint64_t* out);
// Reads argument `i` as a string.
bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out);
// Reads argument `i` as a boolean.
bool ArgBool(const Napi::CallbackInfo& info, size_t i, bool* out);

// node-api has no SharedArrayBuffer support on Node 20 (nor in the first releases of 22, 24
// and 26), so there the addon reaches V8 for it (mmap.cc; Node-API where Node has it).
// These two conversions are what Node's own js_native_api_v8.h does
// (v8impl::JsValueFromV8LocalValue / V8LocalValueFromJsValue): a napi_value is the
// address of a handle slot in the current HandleScope, exactly like a v8::Local.
// This ties the addon to the Node major it was compiled against (see DESIGN.md, Unsafe).
inline v8::Local<v8::Value> ToV8(napi_value v) {
  v8::Local<v8::Value> local;
  static_assert(sizeof(local) == sizeof(v), "v8::Local and napi_value differ in size");
  std::memcpy(static_cast<void*>(&local), &v, sizeof(v));
  return local;
}
inline napi_value FromV8(v8::Local<v8::Value> local) { return reinterpret_cast<napi_value>(*local); }

// Reads argument `i` as a SharedArrayBuffer created by this addon's mmap, returning its
// data pointer and byte length. The pointer stays valid while the caller's handle is alive.
bool ArgMapping(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* length);

// The bytes of a view: start pointer and length, checked against the buffer's backing store
// (a view over a resizable ArrayBuffer that shrank, or over a detached buffer, has none).
// On-heap typed arrays (V8 keeps those up to 64 bytes inside the object) are moved off-heap
// by Buffer() first, so the pointer stays valid for the call.
inline bool ViewBytes(v8::Local<v8::ArrayBufferView> view, uint8_t** data, uint64_t* length) {
  v8::Local<v8::ArrayBuffer> buffer = view->Buffer();
  size_t off = view->ByteOffset();
  size_t len = view->ByteLength();
  size_t cap = buffer->ByteLength();
  if (off > cap || len > cap - off) return false;
  void* base = buffer->Data();
  if (base == nullptr && len != 0) return false;
  *data = static_cast<uint8_t*>(base) + (base == nullptr ? 0 : off);
  *length = len;
  return true;
}

void InitMmap(Napi::Env env, Napi::Object exports);
void InitFd(Napi::Env env, Napi::Object exports);
void InitSignals(Napi::Env env, Napi::Object exports);
void InitPoll(Napi::Env env, Napi::Object exports);
void InitTap(Napi::Env env, Napi::Object exports);
void InitCopy(Napi::Env env, Napi::Object exports);
void InitIov(Napi::Env env, Napi::Object exports);

}  // namespace vsu
