// readv / writev: one system call over an array of byte views (guest memory is a SharedArrayBuffer).
//
// Why native (DESIGN.md "Scatter-gather I/O"): node:fs readvSync/writevSync cost about a
// microsecond a call over the system call itself (a request object, an exception for EAGAIN,
// Node's own argument walk), which is a third of the time a tap frame takes on the receive
// path. Like copyBytes this is a plain V8 FunctionCallback: every argument is checked here
// and only here, and a bad argument or a failed system call is a negative status, never an
// exception (EAGAIN on a non-blocking fd is the common case, not an error).
#include "common.h"

#include <climits>
#include <sys/uio.h>
#include <unistd.h>

#include <vector>

namespace vsu {

namespace {

// Pieces gathered on the stack; more go through a heap vector (up to IOV_MAX).
constexpr uint32_t kStackPieces = 16;

// One view: its bytes into `out`. 0, -EINVAL (not a Uint8Array) or -ERANGE (outside its buffer).
int Piece(v8::Local<v8::Value> v, struct iovec* out) {
  if (!v->IsUint8Array()) return -EINVAL;
  uint8_t* data;
  uint64_t len;
  if (!ViewBytes(v.As<v8::ArrayBufferView>(), &data, &len)) return -ERANGE;
  out->iov_base = data;
  out->iov_len = static_cast<size_t>(len);
  return 0;
}

// Checks the arguments and fills `iov`. Two forms: (fd, views[, count]), the first `count`
// elements of an array (all by default); or (fd, view, view, ...), the views as arguments
// (no array to walk: Object::Get costs ~100 ns an element, more than the rest of the call).
// 0, -EINVAL (not an fd number, not an array, a count that is not an integer in
// [0, views.length], more than IOV_MAX views, an element that is not a Uint8Array), or
// -ERANGE (a view outside its buffer).
int Gather(const v8::FunctionCallbackInfo<v8::Value>& info, int* fd, struct iovec* stack, std::vector<struct iovec>* heap,
           struct iovec** iov, uint32_t* count) {
  if (info.Length() < 2 || !info[0]->IsInt32()) return -EINVAL;
  int32_t f = info[0].As<v8::Int32>()->Value();
  if (f < 0) return -EINVAL;
  bool spread = info[1]->IsUint8Array();
  uint32_t n;
  v8::Local<v8::Array> views;
  if (spread) {
    n = static_cast<uint32_t>(info.Length() - 1);
  } else {
    if (!info[1]->IsArray()) return -EINVAL;
    views = info[1].As<v8::Array>();
    n = views->Length();
    if (info.Length() >= 3 && !info[2]->IsUndefined()) {
      if (!info[2]->IsUint32()) return -EINVAL;
      uint32_t c = info[2].As<v8::Uint32>()->Value();
      if (c > n) return -EINVAL;
      n = c;
    }
  }
  if (n > IOV_MAX) return -EINVAL;
  struct iovec* out = stack;
  if (n > kStackPieces) {
    heap->resize(n);
    out = heap->data();
  }
  if (spread) {
    for (uint32_t i = 0; i < n; i++) {
      int bad = Piece(info[static_cast<int>(i) + 1], &out[i]);
      if (bad != 0) return bad;
    }
  } else {
    // All elements first, then their bytes: a getter on an element (Get runs JS) could detach
    // the buffer of a view already looked at; nothing runs JS after the second loop starts.
    // A throwing getter is a -EINVAL, not an exception (TryCatch swallows it).
    v8::TryCatch tc(info.GetIsolate());
    v8::Local<v8::Context> context = info.GetIsolate()->GetCurrentContext();
    v8::Local<v8::Value> stack_vals[kStackPieces];
    std::vector<v8::Local<v8::Value>> heap_vals;
    v8::Local<v8::Value>* vals = stack_vals;
    if (n > kStackPieces) {
      heap_vals.resize(n);
      vals = heap_vals.data();
    }
    for (uint32_t i = 0; i < n; i++) {
      if (!views->Get(context, i).ToLocal(&vals[i])) return -EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
      int bad = Piece(vals[i], &out[i]);
      if (bad != 0) return bad;
    }
  }
  *fd = f;
  *iov = out;
  *count = n;
  return 0;
}

// The vectored call behind readv and writev: Op(fd, iov, n) over the views gathered from the
// arguments, EINTR retried; returns bytes moved or -errno (-EAGAIN when a non-blocking fd has nothing).
template <ssize_t (*Op)(int, const struct iovec*, int)>
void Vectored(const v8::FunctionCallbackInfo<v8::Value>& info) {
  int fd;
  struct iovec stack[kStackPieces];
  std::vector<struct iovec> heap;
  struct iovec* iov;
  uint32_t n;
  int bad = Gather(info, &fd, stack, &heap, &iov, &n);
  if (bad != 0) {
    info.GetReturnValue().Set(bad);
    return;
  }
  ssize_t r;
  do r = Op(fd, iov, static_cast<int>(n));
  while (r < 0 && errno == EINTR);
  info.GetReturnValue().Set(r < 0 ? -static_cast<double>(errno) : static_cast<double>(r));
}

// readv(fd, views[, count]) or readv(fd, view, ...) -> bytes read | -errno, into the views in order.
void Readv(const v8::FunctionCallbackInfo<v8::Value>& info) { Vectored<::readv>(info); }

// writev(fd, views[, count]) or writev(fd, view, ...) -> bytes written | -errno, as readv.
void Writev(const v8::FunctionCallbackInfo<v8::Value>& info) { Vectored<::writev>(info); }

void Export(Napi::Env env, Napi::Object exports, const char* name, v8::FunctionCallback cb) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Function> fn = v8::FunctionTemplate::New(isolate, cb)->GetFunction(isolate->GetCurrentContext()).ToLocalChecked();
  fn->SetName(v8::String::NewFromUtf8(isolate, name).ToLocalChecked());
  exports.Set(name, Napi::Value(env, FromV8(fn)));
}

}  // namespace

void InitIov(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "readv", Readv);
  Export(env, exports, "writev", Writev);
}

}  // namespace vsu
