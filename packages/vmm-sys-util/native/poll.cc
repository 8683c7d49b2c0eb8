// FdWatcher's native half: one uv_poll_t per watched fd on the calling thread's libuv loop.
//
// Lifetime:
// - The uv_poll_t lives in a heap UvPoll freed by uv_close's callback, never before, so it
//   can outlive the JS wrapper (which may be collected before libuv is done with the handle).
// - While started, the wrapper holds a strong reference to itself (ObjectWrap::Ref), so an
//   active watcher is not collected even if JS drops it; close() or an error releases it.
// - An async cleanup hook closes the handle when the thread's environment is torn down
//   (a worker exits without closing its watchers); libuv's loop cannot close with open handles.
#include "common.h"

#include <fcntl.h>
#include <unistd.h>
#include <uv.h>

namespace vsu {

namespace {

class PollHandle;

struct UvPoll {
  uv_poll_t poll;
  PollHandle* owner;                          // null once the owner is closed
  int fd;                                     // our duplicate of the watched fd, closed by DoClose (-1 after)
  napi_async_cleanup_hook_handle hook_done;   // set when closing from the env cleanup hook
};

class PollHandle : public Napi::ObjectWrap<PollHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativePollHandle",
                       {InstanceMethod("start", &PollHandle::Start), InstanceMethod("ref", &PollHandle::DoRef),
                        InstanceMethod("unref", &PollHandle::DoUnref), InstanceMethod("close", &PollHandle::Close)});
  }

  // new NativePollHandle(fd, callback): check initError() afterwards.
  explicit PollHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PollHandle>(info) {
    int64_t fd;
    if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      ThrowType(info.Env(), "callback must be a function");
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(info.Env(), &loop) != napi_ok || loop == nullptr) {
      init_error_ = EINVAL;
      return;
    }
    // libuv watches a duplicate the caller cannot close: closing the caller's fd between
    // start() and the loop's next epoll_ctl made libuv abort() (EBADF), and a reused fd
    // number would have been watched in place of the original file.
    int dup_fd = fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
      init_error_ = errno;
      return;
    }
    uv_ = new UvPoll{};
    uv_->fd = dup_fd;
    int r = uv_poll_init(loop, &uv_->poll, dup_fd);
    if (r < 0) {
      // Never registered with the loop, so it can be freed directly.
      close(dup_fd);
      delete uv_;
      uv_ = nullptr;
      init_error_ = -r;
      return;
    }
    uv_->owner = this;
    uv_->poll.data = uv_;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(info.Env(), "FdWatcher");
    napi_add_async_cleanup_hook(info.Env(), OnEnvCleanup, this, &hook_);
  }

  ~PollHandle() override {
    destructing_ = true;
    DoClose(nullptr);
  }

  int InitError() const { return init_error_; }

 private:
  // start(events) -> 0 | -errno
  Napi::Value Start(const Napi::CallbackInfo& info) {
    int64_t events;
    if (!ArgInt(info, 0, 0, UV_READABLE | UV_WRITABLE | UV_DISCONNECT, &events)) return Napi::Value();
    if (uv_ == nullptr) return Errno(info.Env(), EBADF);
    int r = uv_poll_start(&uv_->poll, static_cast<int>(events), OnPoll);
    if (r < 0) return Errno(info.Env(), -r);
    if (!active_) {
      active_ = true;
      Ref();
    }
    return Napi::Number::New(info.Env(), 0);
  }

  Napi::Value DoRef(const Napi::CallbackInfo& info) {
    if (uv_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&uv_->poll));
    return info.Env().Undefined();
  }

  Napi::Value DoUnref(const Napi::CallbackInfo& info) {
    if (uv_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&uv_->poll));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    DoClose(nullptr);
    return info.Env().Undefined();
  }

  // Stops and closes the handle; idempotent. `from_hook` is the cleanup-hook handle when called
  // from the environment's cleanup, which must be removed only once uv_close has completed.
  void DoClose(napi_async_cleanup_hook_handle from_hook) {
    if (uv_ == nullptr) return;
    UvPoll* uv = uv_;
    uv_ = nullptr;
    uv->owner = nullptr;
    if (from_hook != nullptr) {
      uv->hook_done = from_hook;
    } else if (hook_ != nullptr) {
      napi_remove_async_cleanup_hook(hook_);
    }
    hook_ = nullptr;
    uv_poll_stop(&uv->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&uv->poll), OnClosed);
    // The duplicate goes now, not in OnClosed on a later turn of the loop: uv_close has taken
    // the fd out of epoll already (uv__poll_stop calls epoll_ctl directly in the libuv of Node
    // 20-26 here; a libuv that batched epoll_ctl through io_uring would remove it only at its
    // next poll, after this close, as it would have after OnClosed's) and libuv does not touch it again, and a
    // file must not outlive its watcher's close (a tap the kernel made for its fd disappears
    // only when the last descriptor of it is closed).
    close(uv->fd);
    uv->fd = -1;
    if (from_hook == nullptr && !destructing_) {
      // The callback usually closes over the JS watcher, which holds this wrapper: a strong
      // reference to it would keep the whole cycle alive forever.
      callback_.Reset();
    }
    if (active_) {
      active_ = false;
      // Not from the destructor: a collected wrapper has no references left to drop.
      if (from_hook == nullptr && !destructing_) Unref();
    }
  }

  static void OnClosed(uv_handle_t* h) {
    UvPoll* uv = static_cast<UvPoll*>(h->data);
    if (uv->hook_done != nullptr) napi_remove_async_cleanup_hook(uv->hook_done);
    if (uv->fd >= 0) close(uv->fd);
    delete uv;
  }

  static void OnEnvCleanup(napi_async_cleanup_hook_handle hook, void* arg) {
    PollHandle* self = static_cast<PollHandle*>(arg);
    self->hook_ = nullptr;
    self->destructing_ = true;  // the env is going away: do not touch JS references
    self->DoClose(hook);
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    UvPoll* uv = static_cast<UvPoll*>(h->data);
    PollHandle* self = uv->owner;
    if (self == nullptr) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    Napi::Object keep = self->Value();  // keeps the wrapper alive while the callback runs
    napi_value argv[2] = {Napi::Number::New(env, status), Napi::Number::New(env, events)};
    napi_value result;
    // The C call, not FunctionReference::MakeCallback: while a worker is being terminated the
    // call fails, and node-addon-api would then throw, which is fatal in a libuv callback.
    napi_status st = napi_make_callback(env, static_cast<napi_async_context>(*self->context_), keep,
                                        self->callback_.Value(), 2, argv, &result);
    if (st == napi_pending_exception) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
    // libuv stops a handle that reported an error; drop the self-reference with it.
    if (status < 0 && uv->owner == self && self->active_) {
      self->active_ = false;
      self->Unref();
    }
  }

  UvPoll* uv_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  int init_error_ = 0;
  bool active_ = false;
  bool destructing_ = false;
};

struct PollData {
  Napi::FunctionReference ctor;
};

// pollCreate(fd, callback) -> NativePollHandle | -errno
Napi::Value PollCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  PollData* data = static_cast<PollData*>(info.Data());
  Napi::Object obj = data->ctor.New({info.Length() > 0 ? info[0] : env.Undefined(), info.Length() > 1 ? info[1] : env.Undefined()});
  if (env.IsExceptionPending()) return Napi::Value();
  PollHandle* h = PollHandle::Unwrap(obj);
  if (h->InitError() != 0) return Errno(env, h->InitError());
  return obj;
}

}  // namespace

void InitPoll(Napi::Env env, Napi::Object exports) {
  PollData* data = new PollData{Napi::Persistent(PollHandle::Define(env))};
  env.AddCleanupHook([data]() { delete data; });
  exports.Set("pollCreate", Napi::Function::New(env, PollCreate, "pollCreate", data));
  Napi::Object c = Napi::Object::New(env);
  VSU_CONST(c, UV_READABLE);
  VSU_CONST(c, UV_WRITABLE);
  VSU_CONST(c, UV_DISCONNECT);
  exports.Set("uvConstants", c);
}

}  // namespace vsu
