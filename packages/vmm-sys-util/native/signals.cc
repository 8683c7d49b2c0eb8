// Thread ids and the vCPU "kick" signal: a no-op handler installed without SA_RESTART, so a
// thread blocked in a system call (KVM_RUN, poll, read) returns EINTR when signalled.
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mutex>
#include <set>

namespace vsu {

namespace {

void NoopHandler(int) {}

bool ArgRtSignal(const Napi::CallbackInfo& info, size_t i, int* out) {
  int64_t signo;
  if (!ArgInt(info, i, 1, 64, &signo)) return false;
  // Only real-time signals: a no-op handler on SIGSEGV or SIGTERM would change how the
  // process fails or stops.
  if (signo < SIGRTMIN || signo > SIGRTMAX) {
    ThrowRange(info.Env(), "signal must be a real-time signal (SIGRTMIN..SIGRTMAX)");
    return false;
  }
  *out = static_cast<int>(signo);
  return true;
}

Napi::Value Gettid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(syscall(SYS_gettid)));
}

Napi::Value Sigrtmin(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), SIGRTMIN); }
Napi::Value Sigrtmax(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), SIGRTMAX); }

// installNoopHandler(signo) -> 0 | -errno. Idempotent. Refuses (-EBUSY) to replace a handler
// that someone else installed.
Napi::Value InstallNoopHandler(const Napi::CallbackInfo& info) {
  int signo;
  if (!ArgRtSignal(info, 0, &signo)) return Napi::Value();
  struct sigaction old;
  if (sigaction(signo, nullptr, &old) != 0) return Errno(info.Env(), errno);
  bool ours = !(old.sa_flags & SA_SIGINFO) && old.sa_handler == NoopHandler;
  if (!ours && !(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
    return Errno(info.Env(), EBUSY);
  }
  if (!ours && (old.sa_flags & SA_SIGINFO)) return Errno(info.Env(), EBUSY);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = NoopHandler;
  sa.sa_flags = 0;  // no SA_RESTART: blocked system calls return EINTR
  sigemptyset(&sa.sa_mask);
  if (sigaction(signo, &sa, nullptr) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// unblockSignal(signo) -> 0 | -errno: removes signo from the calling thread's mask.
Napi::Value UnblockSignal(const Napi::CallbackInfo& info) {
  int signo;
  if (!ArgRtSignal(info, 0, &signo)) return Napi::Value();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signo);
  int err = pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  if (err != 0) return Errno(info.Env(), err);
  return Napi::Number::New(info.Env(), 0);
}

// Whether a real-time signal still has its default disposition (it would end the process).
bool DefaultDisposition(int signo, bool* out, int* err) {
  struct sigaction old;
  if (sigaction(signo, nullptr, &old) != 0) {
    *err = errno;
    return false;
  }
  *out = !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL;
  return true;
}

// tgkill(tid, signo) -> 0 | -errno: signals one thread of this process (tgid = getpid()).
Napi::Value Tgkill(const Napi::CallbackInfo& info) {
  int64_t tid;
  int signo;
  if (!ArgInt(info, 0, 1, INT32_MAX, &tid)) return Napi::Value();
  // Signal 0 only checks that the thread exists.
  if (info.Length() > 1 && info[1].IsNumber() && info[1].As<Napi::Number>().DoubleValue() == 0) {
    signo = 0;
  } else if (!ArgRtSignal(info, 1, &signo)) {
    return Napi::Value();
  }
  // A real-time signal whose disposition is still SIG_DFL terminates the whole process:
  // refuse it (-EINVAL, which tgkill itself cannot return for a valid signal) until a
  // handler is installed (installNoopHandler, or anyone else's).
  if (signo != 0) {
    bool dfl;
    int err;
    if (!DefaultDisposition(signo, &dfl, &err)) return Errno(info.Env(), err);
    if (dfl) return Errno(info.Env(), EINVAL);
  }
  if (syscall(SYS_tgkill, getpid(), static_cast<pid_t>(tid), signo) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// Timers made here (kernel timer ids): only these are armed or deleted, so a wrong id from
// JavaScript cannot touch a timer someone else in the process owns.
std::mutex timers_mu;
std::set<int> timers;

bool OwnTimer(int id) {
  std::lock_guard<std::mutex> g(timers_mu);
  return timers.count(id) != 0;
}

// threadTimerCreate(signo) -> kernel timer id (>= 0) | -errno: a CLOCK_MONOTONIC POSIX timer
// that sends signo to the calling thread (SIGEV_THREAD_ID). Refuses (-EINVAL) a signal without
// a handler, as tgkill does.
Napi::Value ThreadTimerCreate(const Napi::CallbackInfo& info) {
  int signo;
  if (!ArgRtSignal(info, 0, &signo)) return Napi::Value();
  bool dfl;
  int err;
  if (!DefaultDisposition(signo, &dfl, &err)) return Errno(info.Env(), err);
  if (dfl) return Errno(info.Env(), EINVAL);
  struct sigevent sev;
  std::memset(&sev, 0, sizeof(sev));
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = signo;
  sev._sigev_un._tid = static_cast<pid_t>(syscall(SYS_gettid));
  int id = -1;
  // The raw system call: glibc's timer_t for SIGEV_THREAD_ID wraps the same kernel id.
  if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, &id) != 0) return Errno(info.Env(), errno);
  std::lock_guard<std::mutex> g(timers_mu);
  timers.insert(id);
  return Napi::Number::New(info.Env(), id);
}

// threadTimerSet(id, firstNs, intervalNs) -> 0 | -errno: arms (firstNs > 0) or disarms
// (firstNs == 0) a timer from threadTimerCreate; intervalNs > 0 repeats it. -EBADF for an id
// this addon did not create (or deleted).
Napi::Value ThreadTimerSet(const Napi::CallbackInfo& info) {
  int64_t id;
  uint64_t first, interval;
  if (!ArgInt(info, 0, 0, INT32_MAX, &id) || !ArgSize(info, 1, &first) || !ArgSize(info, 2, &interval)) return Napi::Value();
  if (!OwnTimer(static_cast<int>(id))) return Errno(info.Env(), EBADF);
  struct itimerspec its;
  its.it_value.tv_sec = static_cast<time_t>(first / 1000000000ULL);
  its.it_value.tv_nsec = static_cast<long>(first % 1000000000ULL);
  its.it_interval.tv_sec = static_cast<time_t>(interval / 1000000000ULL);
  its.it_interval.tv_nsec = static_cast<long>(interval % 1000000000ULL);
  if (syscall(SYS_timer_settime, static_cast<int>(id), 0, &its, nullptr) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// threadTimerDelete(id) -> 0 | -errno (-EBADF for an id this addon does not own).
Napi::Value ThreadTimerDelete(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, 0, INT32_MAX, &id)) return Napi::Value();
  {
    std::lock_guard<std::mutex> g(timers_mu);
    if (timers.erase(static_cast<int>(id)) == 0) return Errno(info.Env(), EBADF);
  }
  if (syscall(SYS_timer_delete, static_cast<int>(id)) != 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

}  // namespace

void InitSignals(Napi::Env env, Napi::Object exports) {
  exports.Set("gettid", Napi::Function::New(env, Gettid, "gettid"));
  exports.Set("sigrtmin", Napi::Function::New(env, Sigrtmin, "sigrtmin"));
  exports.Set("sigrtmax", Napi::Function::New(env, Sigrtmax, "sigrtmax"));
  exports.Set("installNoopHandler", Napi::Function::New(env, InstallNoopHandler, "installNoopHandler"));
  exports.Set("unblockSignal", Napi::Function::New(env, UnblockSignal, "unblockSignal"));
  exports.Set("tgkill", Napi::Function::New(env, Tgkill, "tgkill"));
  exports.Set("threadTimerCreate", Napi::Function::New(env, ThreadTimerCreate, "threadTimerCreate"));
  exports.Set("threadTimerSet", Napi::Function::New(env, ThreadTimerSet, "threadTimerSet"));
  exports.Set("threadTimerDelete", Napi::Function::New(env, ThreadTimerDelete, "threadTimerDelete"));
}

}  // namespace vsu
