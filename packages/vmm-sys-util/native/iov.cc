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
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>

#include <memory>
#include <unordered_map>
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
using GatherFn = int (*)(const v8::FunctionCallbackInfo<v8::Value>&, int*, struct iovec*, std::vector<struct iovec>*, struct iovec**, uint32_t*);

template <ssize_t (*Op)(int, const struct iovec*, int), GatherFn G>
void Vectored(const v8::FunctionCallbackInfo<v8::Value>& info) {
  int fd;
  struct iovec stack[kStackPieces];
  std::vector<struct iovec> heap;
  struct iovec* iov;
  uint32_t n;
  int bad = G(info, &fd, stack, &heap, &iov, &n);
  if (bad != 0) {
    info.GetReturnValue().Set(bad);
    return;
  }
  ssize_t r;
  do r = Op(fd, iov, static_cast<int>(n));
  while (r < 0 && errno == EINTR);
  // An int32 result (every frame, every short read) skips a HeapNumber check in Number::New.
  if (r < 0) info.GetReturnValue().Set(-static_cast<int32_t>(errno));
  else if (r <= INT32_MAX) info.GetReturnValue().Set(static_cast<int32_t>(r));
  else info.GetReturnValue().Set(static_cast<double>(r));
}

// readv(fd, views[, count]) or readv(fd, view, ...) -> bytes read | -errno, into the views in order.
void Readv(const v8::FunctionCallbackInfo<v8::Value>& info) { Vectored<::readv, Gather>(info); }

// writev(fd, views[, count]) or writev(fd, view, ...) -> bytes written | -errno, as readv.
void Writev(const v8::FunctionCallbackInfo<v8::Value>& info) { Vectored<::writev, Gather>(info); }

// ---- IovTable: views registered once, pieces named per call -------------------------------
//
// A table holds the base pointer and length of up to kMaxTableViews byte views over
// SharedArrayBuffers and of a Float64Array of spans (over a SharedArrayBuffer too), all
// checked once, when the table is made. A call then names only the table and a span count: no
// view is looked at per call (ArrayBufferView::Buffer / ByteOffset / ByteLength cost more
// than the rest of a call with views as arguments). The table holds a reference to each
// buffer's BackingStore, so the memory its pointers point into lives as long as the table,
// whatever JS does with the buffers; SharedArrayBuffers cannot be detached, and a resizable
// one (it could shrink under the pointers) is refused.
//
// A table is named by a number: an id from a per-thread counter, never reused, looked up in a
// per-thread map (a worker's tables are its own; a thread's are freed when it exits). No
// object is unwrapped, so nothing a caller passes is ever read as a pointer.

constexpr uint32_t kMaxTableViews = 8;

struct Table {
  uint32_t nviews = 0;
  uint32_t max_spans = 0;
  uint8_t* base[kMaxTableViews] = {};
  uint64_t size[kMaxTableViews] = {};
  const uint8_t* spans = nullptr;
  // The buffers' backing stores (spans' last): the memory stays mapped while the table lives.
  std::vector<std::shared_ptr<v8::BackingStore>> keep;
};

struct Tables {
  uint32_t next = 1;
  std::unordered_map<uint32_t, std::unique_ptr<Table>> by_id;
};
thread_local Tables tables;

// A view over a non-resizable SharedArrayBuffer: its bytes into data/len and its store into
// keep. 0, -EINVAL (another kind of buffer) or -ERANGE (outside its buffer).
int SharedView(v8::Local<v8::ArrayBufferView> view, uint8_t** data, uint64_t* len, std::vector<std::shared_ptr<v8::BackingStore>>* keep) {
  v8::Local<v8::ArrayBuffer> buffer = view->Buffer();
  std::shared_ptr<v8::BackingStore> store = buffer->GetBackingStore();
  if (!store || !store->IsShared() || store->IsResizableByUserJavaScript()) return -EINVAL;
  if (!ViewBytes(view, data, len)) return -ERANGE;
  keep->push_back(std::move(store));
  return 0;
}

// iovTable(spans: Float64Array, view0[, view1 ...]) -> a table id (> 0), or -EINVAL (spans
// not a Float64Array over a SharedArrayBuffer, no view or more than kMaxTableViews, a view
// that is not a Uint8Array over a SharedArrayBuffer, a resizable buffer), -ERANGE (a view
// outside its buffer) or -ENOSPC (the thread's ids ran out).
void CreateTable(const v8::FunctionCallbackInfo<v8::Value>& info) {
  int nviews = info.Length() - 1;
  if (nviews < 1 || static_cast<uint32_t>(nviews) > kMaxTableViews || !info[0]->IsFloat64Array()) {
    info.GetReturnValue().Set(-EINVAL);
    return;
  }
  if (tables.next == 0 || tables.next > INT32_MAX) {
    info.GetReturnValue().Set(-ENOSPC);
    return;
  }
  auto t = std::make_unique<Table>();
  t->keep.reserve(static_cast<size_t>(nviews) + 1);
  t->nviews = static_cast<uint32_t>(nviews);
  for (int v = 0; v < nviews; v++) {
    v8::Local<v8::Value> view = info[v + 1];
    if (!view->IsUint8Array()) {
      info.GetReturnValue().Set(-EINVAL);
      return;
    }
    int bad = SharedView(view.As<v8::ArrayBufferView>(), &t->base[v], &t->size[v], &t->keep);
    if (bad != 0) {
      info.GetReturnValue().Set(bad);
      return;
    }
  }
  uint8_t* spans_bytes;
  uint64_t spans_len;
  int bad = SharedView(info[0].As<v8::ArrayBufferView>(), &spans_bytes, &spans_len, &t->keep);
  if (bad != 0) {
    info.GetReturnValue().Set(bad);
    return;
  }
  t->spans = spans_bytes;
  uint64_t triples = spans_len / (3 * sizeof(double));
  t->max_spans = static_cast<uint32_t>(triples < IOV_MAX ? triples : IOV_MAX);
  uint32_t id = tables.next++;
  tables.by_id.emplace(id, std::move(t));
  info.GetReturnValue().Set(static_cast<int32_t>(id));
}

// iovTableFree(id) -> 0, or -EINVAL for an id this thread has no table for. The buffers'
// stores are released with it.
void FreeTable(const v8::FunctionCallbackInfo<v8::Value>& info) {
  if (info.Length() < 1 || !info[0]->IsUint32()) {
    info.GetReturnValue().Set(-EINVAL);
    return;
  }
  info.GetReturnValue().Set(tables.by_id.erase(info[0].As<v8::Uint32>()->Value()) == 1 ? 0 : -EINVAL);
}

// Triple `i` of the table's spans, read once into locals and checked against its views, into
// `out`. 0, -EINVAL (a view index, offset or length that is not an integer in range) or -ERANGE
// (a piece outside its view).
int Triple(const Table* t, uint32_t i, struct iovec* out) {
  double tr[3];
  std::memcpy(tr, t->spans + static_cast<size_t>(i) * sizeof(tr), sizeof(tr));
  double vi = tr[0], off = tr[1], len = tr[2];
  if (!(vi >= 0 && vi < t->nviews && vi == static_cast<double>(static_cast<uint32_t>(vi)))) return -EINVAL;
  if (!(off >= 0 && off <= kMaxSafeInteger && off == static_cast<double>(static_cast<uint64_t>(off)))) return -EINVAL;
  if (!(len >= 0 && len <= kMaxSafeInteger && len == static_cast<double>(static_cast<uint64_t>(len)))) return -EINVAL;
  uint32_t v = static_cast<uint32_t>(vi);
  uint64_t o = static_cast<uint64_t>(off), l = static_cast<uint64_t>(len);
  if (o > t->size[v] || l > t->size[v] - o) return -ERANGE;
  out->iov_base = t->base[v] + o;
  out->iov_len = static_cast<size_t>(l);
  return 0;
}

// The table form: (fd, id, count) over the first `count` triples of the table's spans, each
// read once into locals and checked against the table's views. 0, -EINVAL (a bad fd, no such
// table on this thread, count not an integer in [0, the table's spans], a bad triple) or
// -ERANGE (a piece outside its view).
int GatherTable(const v8::FunctionCallbackInfo<v8::Value>& info, int* fd, struct iovec* stack, std::vector<struct iovec>* heap,
                struct iovec** iov, uint32_t* count) {
  if (info.Length() < 3 || !info[0]->IsInt32() || !info[1]->IsUint32() || !info[2]->IsUint32()) return -EINVAL;
  int32_t f = info[0].As<v8::Int32>()->Value();
  if (f < 0) return -EINVAL;
  auto it = tables.by_id.find(info[1].As<v8::Uint32>()->Value());
  if (it == tables.by_id.end()) return -EINVAL;
  const Table* t = it->second.get();
  uint32_t n = info[2].As<v8::Uint32>()->Value();
  if (n > t->max_spans) return -EINVAL;
  struct iovec* out = stack;
  if (n > kStackPieces) {
    heap->resize(n);
    out = heap->data();
  }
  for (uint32_t i = 0; i < n; i++) {
    int bad = Triple(t, i, &out[i]);
    if (bad != 0) return bad;
  }
  *fd = f;
  *iov = out;
  *count = n;
  return 0;
}

// The environment's teardown (a worker's, or the process's) drops the thread's tables while
// V8 still runs: the last references to their backing stores are released before the
// isolate and its allocator go, not by the thread_local's destructor after them.
void ClearTables(void*) { tables.by_id.clear(); }

void ReadvTable(const v8::FunctionCallbackInfo<v8::Value>& info) { Vectored<::readv, GatherTable>(info); }
void WritevTable(const v8::FunctionCallbackInfo<v8::Value>& info) { Vectored<::writev, GatherTable>(info); }

// ---- Batches: several writev(2) in one system call ----------------------------------------
//
// writevTableBatch(fd, id, n, io: Int32Array) writes n messages (tap frames) in order, message
// i over the next io[i] triples of the table's spans; io[i] becomes its result: bytes written,
// or -errno. The batch stops at the first message that fails or is written short: it and
// every later one get their result, the later ones -ECANCELED (not written). One io_uring
// submission of n linked IORING_OP_WRITEV requests (a failed or short write cancels the rest,
// as the loop would stop), waited for in the same io_uring_enter: the kernel writes to a
// non-blocking fd inline, so the wait is the writes themselves. Where io_uring is refused
// (ENOSYS, EPERM under io_uring_disabled or a seccomp filter; kernels before 5.5) or turned
// off with iovBatchRing(false), a loop with the same results. Each write carries RWF_NOWAIT: a
// full fd answers -EAGAIN as writev(2) on a non-blocking fd does, where io_uring would otherwise
// wait for room (and this call with it); a file that does not take RWF_NOWAIT goes through the loop.

constexpr uint32_t kMaxBatch = 256;
// Fewer messages go through the loop: one or two writes cost less as writev(2) than as a ring
// submission (on the AMD EPYC machine of 2026-12-08, to a tap: writev ~1370 ns a frame, the ring
// ~1650 for one or two a call, ~990 for four, ~850 for 64).
constexpr uint32_t kRingMin = 3;

// One ring per thread, made on the first batch and kept; the SQE array holds kMaxBatch entries.
struct Ring {
  int fd = -1;
  bool tried = false;
  bool enabled = true;
  // Set when the kernel may still hold requests of a batch this thread gave up waiting for:
  // the ring is never used again (iovBatchRing(true) does not clear it).
  bool poisoned = false;
  unsigned char* sq = nullptr;
  size_t sq_len = 0;
  unsigned char* cq = nullptr;
  size_t cq_len = 0;
  struct io_uring_sqe* sqes = nullptr;
  size_t sqes_len = 0;
  unsigned *sq_tail = nullptr, *sq_mask = nullptr, *sq_array = nullptr;
  unsigned *cq_head = nullptr, *cq_tail = nullptr, *cq_mask = nullptr;
  struct io_uring_cqe* cqes = nullptr;
  std::vector<struct iovec> iov;

  bool Ready() {
    if (!enabled || poisoned) return false;
    if (tried) return fd >= 0;
    tried = true;
    struct io_uring_params p;
    std::memset(&p, 0, sizeof p);
    int f = static_cast<int>(syscall(__NR_io_uring_setup, kMaxBatch, &p));
    if (f < 0) return false;
    sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single && cq_len > sq_len) sq_len = cq_len;
    void* a = mmap(nullptr, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, f, IORING_OFF_SQ_RING);
    void* b = single ? a : mmap(nullptr, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, f, IORING_OFF_CQ_RING);
    sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    void* c = mmap(nullptr, sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, f, IORING_OFF_SQES);
    // Linked writes with RWF_NOWAIT and completions never dropped: Linux 5.5 and later.
    constexpr unsigned kNeeded = IORING_FEAT_NODROP | IORING_FEAT_SUBMIT_STABLE;
    if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED || p.sq_entries < kMaxBatch || p.cq_entries < kMaxBatch || (p.features & kNeeded) != kNeeded) {
      if (a != MAP_FAILED) munmap(a, sq_len);
      if (!single && b != MAP_FAILED) munmap(b, cq_len);
      if (c != MAP_FAILED) munmap(c, sqes_len);
      close(f);
      return false;
    }
    fd = f;
    sq = static_cast<unsigned char*>(a);
    cq = single ? sq : static_cast<unsigned char*>(b);
    if (single) cq_len = 0;  // one mapping, unmapped as sq
    sqes = static_cast<struct io_uring_sqe*>(c);
    sq_tail = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
    sq_mask = reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
    sq_array = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
    cq_head = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
    cq_tail = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
    cq_mask = reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
    cqes = reinterpret_cast<struct io_uring_cqe*>(cq + p.cq_off.cqes);
    return true;
  }

  ~Ring() {
    if (fd < 0) return;
    munmap(sqes, sqes_len);
    if (cq_len != 0) munmap(cq, cq_len);
    munmap(sq, sq_len);
    close(fd);
  }
};
thread_local Ring ring;

// The n writes through the ring. Returns the first message the caller's loop must write: n
// when the ring answered for every message; 0 when the kernel took none; `k` when it took only
// the first k (a shortage of its request memory) and all of them were written whole, so the
// loop goes on from there (if one of them failed, the later ones are cancelled: n). A message
// the kernel took but this thread could not see complete (a wait that failed for good) is
// -EIO, an unknown outcome the caller must not write again, and the ring is poisoned.
uint32_t RingWrite(int fd, const uint32_t* counts, const size_t* first, const size_t* want, uint32_t n, int32_t* io) {
  unsigned tail = *ring.sq_tail;  // only this thread writes it
  unsigned mask = *ring.sq_mask;
  for (uint32_t i = 0; i < n; i++) {
    unsigned idx = (tail + i) & mask;
    struct io_uring_sqe* e = &ring.sqes[idx];
    std::memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_WRITEV;
    e->fd = fd;
    e->addr = reinterpret_cast<uint64_t>(ring.iov.data() + first[i]);
    e->len = counts[i];
    e->rw_flags = RWF_NOWAIT;  // -EAGAIN when the fd has no room, never a wait for it (or a worker thread)
    e->user_data = i;
    if (i + 1 < n) e->flags = IOSQE_IO_LINK;
    ring.sq_array[idx] = idx;
  }
  std::atomic_ref<unsigned>(*ring.sq_tail).store(tail + n, std::memory_order_release);
  uint32_t done = 0;
  auto harvest = [&](uint32_t limit) {
    unsigned head = *ring.cq_head;
    unsigned ctail = std::atomic_ref<unsigned>(*ring.cq_tail).load(std::memory_order_acquire);
    for (; head != ctail; head++) {
      const struct io_uring_cqe* c = &ring.cqes[head & *ring.cq_mask];
      if (c->user_data < limit) io[c->user_data] = c->res;
      done++;
    }
    std::atomic_ref<unsigned>(*ring.cq_head).store(head, std::memory_order_release);
  };
  long r;
  do r = syscall(__NR_io_uring_enter, ring.fd, n, n, IORING_ENTER_GETEVENTS, nullptr, 0);
  while (r < 0 && errno == EINTR);  // EINTR only when nothing was taken (else the count comes back)
  if (r <= 0) {
    // The kernel took none: take the entries back and let the caller loop.
    std::atomic_ref<unsigned>(*ring.sq_tail).store(tail, std::memory_order_release);
    return 0;
  }
  uint32_t submitted = static_cast<uint32_t>(r) < n ? static_cast<uint32_t>(r) : n;
  // Entries the kernel did not take are taken back (no SQPOLL: it reads them only in enter).
  if (submitted < n) std::atomic_ref<unsigned>(*ring.sq_tail).store(tail + submitted, std::memory_order_release);
  harvest(submitted);
  while (done < submitted) {
    long w = syscall(__NR_io_uring_enter, ring.fd, 0, submitted - done, IORING_ENTER_GETEVENTS, nullptr, 0);
    if (w < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) break;
    harvest(submitted);
  }
  if (done < submitted) {
    // Some may still complete later: their outcome is unknown, and this ring is not used again.
    ring.poisoned = true;
    for (uint32_t i = 0; i < submitted; i++)
      if (io[i] == -ECANCELED) io[i] = -EIO;
    return n;
  }
  if (submitted == n) return n;
  for (uint32_t i = 0; i < submitted; i++)
    if (io[i] < 0 || static_cast<size_t>(io[i]) != want[i]) return n;
  return submitted;
}

void WritevTableBatch(const v8::FunctionCallbackInfo<v8::Value>& info) {
  auto ret = [&](int32_t v) { info.GetReturnValue().Set(v); };
  if (info.Length() < 4 || !info[0]->IsInt32() || !info[1]->IsUint32() || !info[2]->IsUint32() || !info[3]->IsInt32Array()) return ret(-EINVAL);
  int32_t fd = info[0].As<v8::Int32>()->Value();
  if (fd < 0) return ret(-EINVAL);
  auto it = tables.by_id.find(info[1].As<v8::Uint32>()->Value());
  if (it == tables.by_id.end()) return ret(-EINVAL);
  const Table* t = it->second.get();
  uint32_t n = info[2].As<v8::Uint32>()->Value();
  uint8_t* io_bytes;
  uint64_t io_len;
  if (!ViewBytes(info[3].As<v8::ArrayBufferView>(), &io_bytes, &io_len)) return ret(-ERANGE);
  if (n == 0 || n > kMaxBatch || io_len / sizeof(int32_t) < n) return ret(-EINVAL);
  int32_t* io = reinterpret_cast<int32_t*>(io_bytes);  // a typed array's bytes are aligned to its element size
  // Every count and every triple checked before anything is written.
  uint32_t counts[kMaxBatch];
  size_t first[kMaxBatch];
  size_t want[kMaxBatch];
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    int32_t c = io[i];
    if (c < 1 || c > IOV_MAX || total + static_cast<size_t>(c) > t->max_spans) return ret(-EINVAL);
    counts[i] = static_cast<uint32_t>(c);
    first[i] = total;
    total += static_cast<size_t>(c);
  }
  ring.iov.resize(total);
  for (size_t k = 0; k < total; k++) {
    int bad = Triple(t, static_cast<uint32_t>(k), &ring.iov[k]);
    if (bad != 0) return ret(bad);
  }
  for (uint32_t i = 0; i < n; i++) {
    want[i] = 0;
    for (uint32_t k = 0; k < counts[i]; k++) want[i] += ring.iov[first[i] + k].iov_len;
  }
  for (uint32_t i = 0; i < n; i++) io[i] = -ECANCELED;
  uint32_t from = 0;
  if (n >= kRingMin && ring.Ready()) {
    from = RingWrite(fd, counts, first, want, n, io);
    // A file that cannot say "no room" without waiting (no FMODE_NOWAIT) refuses RWF_NOWAIT
    // before anything is written: the loop writes from that message on.
    if (from == n) {
      from = 0;
      while (from < n && io[from] >= 0) from++;
      if (from == n || io[from] != -EOPNOTSUPP) return ret(0);
      for (uint32_t i = from; i < n; i++) io[i] = -ECANCELED;
    }
  }
  // The loop: pwritev2 with RWF_NOWAIT as the ring's writes (a full fd answers -EAGAIN at
  // once), plain writev for a file that refuses the flag (which blocks on a blocking fd).
  bool nowait = true;
  for (uint32_t i = from; i < n; i++) {
    const struct iovec* v = ring.iov.data() + first[i];
    int c = static_cast<int>(counts[i]);
    ssize_t r;
    do r = nowait ? ::pwritev2(fd, v, c, -1, RWF_NOWAIT) : ::writev(fd, v, c);
    while (r < 0 && errno == EINTR);
    if (r < 0 && nowait && errno == EOPNOTSUPP) {
      nowait = false;  // this message and the rest without the flag
      do r = ::writev(fd, v, c);
      while (r < 0 && errno == EINTR);
    }
    io[i] = r < 0 ? -static_cast<int32_t>(errno) : static_cast<int32_t>(r);
    if (r < 0 || static_cast<size_t>(r) != want[i]) break;
  }
  ret(0);
}

// iovBatchRing(on?) -> whether this thread's batches go through io_uring (1) or a writev loop
// (0), after turning the ring off (false) or back on (true) when an argument is given.
void BatchRing(const v8::FunctionCallbackInfo<v8::Value>& info) {
  if (info.Length() >= 1 && info[0]->IsBoolean()) ring.enabled = info[0].As<v8::Boolean>()->Value();
  info.GetReturnValue().Set(ring.Ready() ? 1 : 0);
}

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
  Export(env, exports, "readvTable", ReadvTable);
  Export(env, exports, "writevTable", WritevTable);
  Export(env, exports, "writevTableBatch", WritevTableBatch);
  Export(env, exports, "iovBatchRing", BatchRing);
  Export(env, exports, "iovTable", CreateTable);
  Export(env, exports, "iovTableFree", FreeTable);
  napi_add_env_cleanup_hook(env, ClearTables, nullptr);
}

}  // namespace vsu
