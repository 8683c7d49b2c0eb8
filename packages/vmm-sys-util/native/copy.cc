// copyBytes: memmove between two Uint8Arrays (guest memory is a SharedArrayBuffer).
//
// Why native (DESIGN.md "Copies"): V8 copies into or out of a SharedArrayBuffer-backed typed
// array (TypedArray.prototype.set, Buffer.copy) with a relaxed-atomic word loop, because
// another thread may write the memory at the same time; for plain buffers it calls memmove.
// Here both sides are copied with libc's memmove, which is what a C VMM does with guest
// memory: a racing guest write gives torn bytes in the copy, never an access outside it.
//
// Like run() in kvm-ioctls this is a plain V8 FunctionCallback, not Node-API: the call is
// made for every descriptor-sized copy, and N-API's callback wrapper costs more than a
// 512-byte memmove (measured: DESIGN.md "Copies"). Every argument is checked here, and only
// here: the hot path cannot afford the same checks twice (DESIGN.md "Copies"), so a bad
// argument is a negative status that TypeScript turns into a VmmSysError, and no call can
// touch memory outside the two views.
#include "common.h"

namespace vsu {

namespace {

// An offset or length argument: an integral number in [0, 2^53 - 1].
bool Size(v8::Local<v8::Value> v, uint64_t* out) {
  if (v->IsUint32()) {
    *out = v.As<v8::Uint32>()->Value();
    return true;
  }
  if (!v->IsNumber()) return false;
  double d = v.As<v8::Number>()->Value();
  if (!(d >= 0 && d <= kMaxSafeInteger) || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

// copyBytes(dst, dstOffset, src, srcOffset, length) -> 0 | -EINVAL | -ERANGE
// Copies src[srcOffset, +length) to dst[dstOffset, +length); the ranges may overlap.
// Bad input is a status, not an exception (TypeScript turns it into a VmmSysError without
// checking the arguments a second time on the hot path): -EINVAL if a view is not a
// Uint8Array or a number is not an integer in [0, 2^53-1], -ERANGE if a range is outside its
// view or a view outside its buffer (detached, or over a resizable buffer that shrank).
void CopyBytes(const v8::FunctionCallbackInfo<v8::Value>& info) {
  uint64_t dst_off, src_off, len;
  if (info.Length() < 5 || !info[0]->IsUint8Array() || !info[2]->IsUint8Array() || !Size(info[1], &dst_off) ||
      !Size(info[3], &src_off) || !Size(info[4], &len)) {
    info.GetReturnValue().Set(-EINVAL);
    return;
  }
  uint8_t *dst, *src;
  uint64_t dst_len, src_len;
  // Each term is below 2^53, so the sums cannot wrap.
  if (!ViewBytes(info[0].As<v8::ArrayBufferView>(), &dst, &dst_len) || !ViewBytes(info[2].As<v8::ArrayBufferView>(), &src, &src_len) ||
      dst_off + len > dst_len || src_off + len > src_len) {
    info.GetReturnValue().Set(-ERANGE);
    return;
  }
  if (len != 0) std::memmove(dst + dst_off, src + src_off, len);
  info.GetReturnValue().Set(0);
}

}  // namespace

void InitCopy(Napi::Env env, Napi::Object exports) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Function> fn =
      v8::FunctionTemplate::New(isolate, CopyBytes)->GetFunction(isolate->GetCurrentContext()).ToLocalChecked();
  fn->SetName(v8::String::NewFromUtf8Literal(isolate, "copyBytes"));
  exports.Set("copyBytes", Napi::Value(env, FromV8(fn)));
}

}  // namespace vsu
