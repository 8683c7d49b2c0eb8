import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, readvSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gcUntil } from "../test/fixtures/gc.js";
import { TestWorker, sabWorkerUrl } from "../test/fixtures/worker.js";
import { MmapRegion, VmmSysError, closeFd, ftruncate, liveMappingCount, memfdCreate, pageSize } from "./index.js";
import { native } from "./native.js";

const PAGE = pageSize();

function expectCode(fn: () => unknown, code: string): VmmSysError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VmmSysError);
    expect((err as VmmSysError).code).toBe(code);
    return err as VmmSysError;
  }
  throw new Error(`expected VmmSysError ${code}, nothing was thrown`);
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "vmm-sys-util-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("memfd", () => {
  it("creates, sizes and closes a memfd", () => {
    const fd = memfdCreate("test-memfd");
    expect(fd).toBeGreaterThan(2);
    ftruncate(fd, 3 * PAGE);
    expect(fstatSync(fd).size).toBe(3 * PAGE);
    closeFd(fd);
    expectCode(() => closeFd(fd), "EBADF");
  });

  it("rejects bad names and options before any syscall", () => {
    expectCode(() => memfdCreate(42 as unknown as string), "InvalidArgument");
    expectCode(() => memfdCreate("a\0b"), "InvalidArgument");
    expectCode(() => memfdCreate("x".repeat(250)), "InvalidArgument");
    expectCode(() => memfdCreate("ok", { cloexec: "yes" as unknown as boolean }), "InvalidArgument");
    expectCode(() => ftruncate(-1, 10), "InvalidArgument");
    expectCode(() => ftruncate(0, -1), "InvalidArgument");
    expectCode(() => closeFd(1.5), "InvalidArgument");
  });

  it("reports a failed syscall with errno and syscall name", () => {
    const err = expectCode(() => ftruncate(0x7fff_fff0, 10), "EBADF");
    expect(err.errno).toBe(9);
    expect(err.syscall).toBe("ftruncate");
  });
});

describe("MmapRegion", () => {
  it("maps anonymous memory as a zero-filled SharedArrayBuffer", () => {
    const r = MmapRegion.anonymous(4 * PAGE);
    expect(r.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(r.buffer.byteLength).toBe(4 * PAGE);
    expect(r.size).toBe(4 * PAGE);
    expect(r.fd).toBeNull();
    expect(typeof r.address).toBe("bigint");
    expect(r.address % BigInt(PAGE)).toBe(0n);
    const u8 = new Uint8Array(r.buffer);
    expect(u8.every((b) => b === 0)).toBe(true);
    u8[4 * PAGE - 1] = 0xab;
    expect(u8[4 * PAGE - 1]).toBe(0xab);
    r.close();
  });

  it("maps a memfd that the region owns and closes", () => {
    const r = MmapRegion.memfd(2 * PAGE, { name: "guest-ram" });
    const fd = r.fd;
    expect(fd).not.toBeNull();
    new Uint8Array(r.buffer).set([1, 2, 3], PAGE);
    // The same memfd mapped again sees the writes (MAP_SHARED).
    const again = MmapRegion.fromFd(fd as number, 2 * PAGE);
    expect(Array.from(new Uint8Array(again.buffer, PAGE, 3))).toEqual([1, 2, 3]);
    // And so does a plain read(2) of the memfd.
    const b = Buffer.alloc(3);
    readSync(fd as number, b, 0, 3, PAGE);
    expect(Array.from(b)).toEqual([1, 2, 3]);
    r.close();
    expect(() => fstatSync(fd as number)).toThrow(/EBADF/);
    // The mapping outlives the fd: `again` still works.
    expect(new Uint8Array(again.buffer)[PAGE + 2]).toBe(3);
    again.close();
  });

  it("maps a real file shared: writes reach the file, msync works", () => {
    const path = join(dir, "shared.bin");
    writeFileSync(path, Buffer.alloc(2 * PAGE, 0x11));
    const fd = openSync(path, "r+");
    const r = MmapRegion.fromFd(fd, 2 * PAGE, { shared: true });
    closeSync(fd); // the mapping does not need the fd
    expect(new Uint8Array(r.buffer)[5]).toBe(0x11);
    new Uint8Array(r.buffer).fill(0x22, PAGE, PAGE + 16);
    r.msync();
    r.msync(PAGE, 16);
    const file = readFileSync(path);
    expect(file[PAGE]).toBe(0x22);
    expect(file[PAGE + 15]).toBe(0x22);
    expect(file[PAGE + 16]).toBe(0x11);
    r.close();
  });

  it("maps a file at a page-aligned offset", () => {
    const path = join(dir, "offset.bin");
    const content = Buffer.alloc(3 * PAGE);
    content[2 * PAGE] = 0x77;
    writeFileSync(path, content);
    const fd = openSync(path, "r+");
    const r = MmapRegion.fromFd(fd, PAGE, { offset: 2 * PAGE });
    expect(new Uint8Array(r.buffer)[0]).toBe(0x77);
    expectCode(() => MmapRegion.fromFd(fd, PAGE, { offset: 100 }), "InvalidArgument");
    closeSync(fd);
    r.close();
  });

  it("gives copy-on-write with shared: false and readOnly: the file is unchanged", () => {
    const path = join(dir, "private.bin");
    writeFileSync(path, Buffer.alloc(PAGE, 0x33));
    const fd = openSync(path, "r+");
    const priv = MmapRegion.fromFd(fd, PAGE, { shared: false });
    new Uint8Array(priv.buffer).fill(0x44);
    expect(new Uint8Array(priv.buffer)[0]).toBe(0x44);
    priv.msync();
    expect(readFileSync(path).every((b) => b === 0x33)).toBe(true);
    closeSync(fd);
    // readOnly works on an O_RDONLY fd and never writes the file.
    const rofd = openSync(path, "r");
    const ro = MmapRegion.fromFd(rofd, PAGE, { readOnly: true });
    new Uint8Array(ro.buffer)[0] = 0x55;
    expect(readFileSync(path)[0]).toBe(0x33);
    expectCode(() => MmapRegion.fromFd(rofd, PAGE, { readOnly: true, shared: true }), "InvalidArgument");
    // A shared writable mapping of a read-only fd is refused by the kernel.
    const err = expectCode(() => MmapRegion.fromFd(rofd, PAGE), "EACCES");
    expect(err.syscall).toBe("mmap");
    closeSync(rofd);
    priv.close();
    ro.close();
  });

  it("refuses to map past the end of a regular file (SIGBUS otherwise)", () => {
    const path = join(dir, "short.bin");
    writeFileSync(path, Buffer.alloc(100));
    const fd = openSync(path, "r+");
    // 100 bytes: a 100-byte mapping is fine, one page is past EOF.
    const r = MmapRegion.fromFd(fd, 100);
    expect(r.size).toBe(100);
    r.close();
    expectCode(() => MmapRegion.fromFd(fd, PAGE), "MappingPastEof");
    expectCode(() => MmapRegion.fromFd(fd, 50, { offset: PAGE }), "MappingPastEof");
    closeSync(fd);
    expectCode(() => MmapRegion.fromFd(fd, PAGE), "EBADF");
  });

  it("Atomics.store/load/wait/notify work on an Int32Array over the mapping", () => {
    const r = MmapRegion.memfd(PAGE);
    const i32 = new Int32Array(r.buffer);
    Atomics.store(i32, 3, 42);
    expect(Atomics.load(i32, 3)).toBe(42);
    expect(Atomics.wait(i32, 3, 41, 0)).toBe("not-equal");
    expect(Atomics.wait(i32, 3, 42, 5)).toBe("timed-out");
    expect(Atomics.notify(i32, 3, 1)).toBe(0);
    r.close();
  });

  it("lets fs.readSync/writeSync move data straight into views over the mapping", async () => {
    const path = join(dir, "io.bin");
    writeFileSync(path, Buffer.from("hello guest"));
    const r = MmapRegion.memfd(PAGE);
    const fd = openSync(path, "r+");
    // A Uint8Array over the SharedArrayBuffer is an ArrayBufferView that fs accepts: no copy.
    const view = new Uint8Array(r.buffer, 128, 11);
    expect(readSync(fd, view, 0, 11, 0)).toBe(11);
    expect(Buffer.from(r.buffer, 128, 11).toString()).toBe("hello guest");
    view.set(Buffer.from("HELLO"));
    expect(writeSync(fd, view, 0, 11, 0)).toBe(11);
    expect(readFileSync(path).toString()).toBe("HELLO guest");
    // Scatter/gather and the async (thread-pool) API work the same way.
    const a = new Uint8Array(r.buffer, 1024, 5);
    const b = new Uint8Array(r.buffer, 2048, 6);
    expect(readvSync(fd, [a, b], 0)).toBe(11);
    expect(Buffer.from(b).toString()).toBe(" guest");
    closeSync(fd);
    const fh = await open(path, "r");
    const c = new Uint8Array(r.buffer, 3000, 11);
    expect((await fh.read(c, 0, 11, 0)).bytesRead).toBe(11);
    await fh.close();
    expect(Buffer.from(c).toString()).toBe("HELLO guest");
    r.close();
  });

  it("madvise: dontneed zeroes private anonymous memory, hugepage where THP exists", () => {
    const r = MmapRegion.anonymous(4 * PAGE, { shared: false });
    const u8 = new Uint8Array(r.buffer);
    u8.fill(7);
    r.madvise(PAGE, 2 * PAGE, "dontneed");
    expect(u8[0]).toBe(7);
    expect(u8[PAGE]).toBe(0);
    expect(u8[3 * PAGE - 1]).toBe(0);
    expect(u8[3 * PAGE]).toBe(7);
    r.madvise(0, 4 * PAGE, "willneed");
    r.madvise(0, 4 * PAGE, "nohugepage");
    expectCode(() => r.madvise(1, PAGE, "dontneed"), "InvalidArgument");
    expectCode(() => r.madvise(0, 5 * PAGE, "dontneed"), "InvalidArgument");
    expectCode(() => r.madvise(0, 0, "dontneed"), "InvalidArgument");
    expectCode(() => r.madvise(0, PAGE, "free" as "dontneed"), "InvalidArgument");
    expectCode(() => r.madvise(0, PAGE, "toString" as "dontneed"), "InvalidArgument");
    r.close();

    const m = MmapRegion.memfd(4 * PAGE);
    new Uint8Array(m.buffer).fill(9);
    m.madvise(0, PAGE, "remove"); // punches a hole in the memfd
    expect(new Uint8Array(m.buffer)[0]).toBe(0);
    expect(new Uint8Array(m.buffer)[PAGE]).toBe(9);
    m.close();
  });

  it("madviseHugepage succeeds on anonymous memory when THP is configured", () => {
    let thp = "";
    try {
      thp = readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8");
    } catch {
      // no THP in this kernel: the request must fail with a typed errno
    }
    const size = 4 << 20;
    if (thp.includes("[never]") || thp === "") {
      expectCode(() => MmapRegion.anonymous(size, { madviseHugepage: true }), "EINVAL");
    } else {
      const r = MmapRegion.anonymous(size, { madviseHugepage: true, noReserve: true });
      new Uint8Array(r.buffer)[size - 1] = 1;
      expect(new Uint8Array(r.buffer)[size - 1]).toBe(1);
      r.close();
    }
  });

  it("hugetlb: maps when huge pages are configured, else a typed errno", () => {
    const meminfo = readFileSync("/proc/meminfo", "utf8");
    const free = Number(/HugePages_Free:\s+(\d+)/.exec(meminfo)?.[1] ?? "0");
    const huge = 2 << 20;
    for (const make of [() => MmapRegion.anonymous(huge, { hugetlb: true }), () => MmapRegion.memfd(huge, { hugetlb: true })]) {
      if (free >= 1) {
        const r = make();
        new Uint8Array(r.buffer)[0] = 1;
        r.close();
      } else {
        let err: unknown;
        try {
          make().close();
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(VmmSysError);
        expect(["ENOMEM", "EINVAL"]).toContain((err as VmmSysError).code);
        expect(typeof (err as VmmSysError).errno).toBe("number");
      }
    }
  });

  it("after close: methods and getters throw Closed, close is idempotent, size stays", () => {
    const r = MmapRegion.memfd(PAGE);
    const view = new Uint8Array(r.buffer);
    r.close();
    r.close();
    expect(r.closed).toBe(true);
    expect(r.size).toBe(PAGE);
    expectCode(() => r.buffer, "Closed");
    expectCode(() => r.address, "Closed");
    expectCode(() => r.fd, "Closed");
    expectCode(() => r.madvise(0, PAGE, "dontneed"), "Closed");
    expectCode(() => r.msync(), "Closed");
    // A view taken before close is still backed by the mapping.
    view[0] = 5;
    expect(view[0]).toBe(5);
  });

  it("rejects bad sizes and options with InvalidArgument, never a crash", () => {
    const bad: unknown[] = [0, -1, 1.5, Number.NaN, Infinity, 2 ** 53, "4096", 4096n, null, undefined, {}];
    for (const size of bad) {
      expectCode(() => MmapRegion.anonymous(size as number), "InvalidArgument");
      expectCode(() => MmapRegion.memfd(size as number), "InvalidArgument");
      expectCode(() => MmapRegion.fromFd(0, size as number), "InvalidArgument");
    }
    for (const fd of [-1, 1.5, "3", 2 ** 31, null]) {
      expectCode(() => MmapRegion.fromFd(fd as number, PAGE), "InvalidArgument");
    }
    expectCode(() => MmapRegion.anonymous(PAGE, { shared: 1 as unknown as boolean }), "InvalidArgument");
    expectCode(() => MmapRegion.anonymous(PAGE, 5 as unknown as object), "InvalidArgument");
    expectCode(() => MmapRegion.memfd(PAGE, { name: 5 as unknown as string }), "InvalidArgument");
    expectCode(() => MmapRegion.fromFd(0, PAGE, { offset: -PAGE }), "InvalidArgument");
    expectCode(() => new (MmapRegion as unknown as new (...a: unknown[]) => MmapRegion)(Symbol("x")), "InvalidArgument");
    // Too large for the address space: a typed errno, not a crash.
    expectCode(() => MmapRegion.anonymous(2 ** 52), "ENOMEM");
  });

  it("the addon itself refuses MAP_FIXED and foreign buffers", async () => {
    const { native } = await import("./native.js");
    const n = native();
    expect(() => n.mmap(-1, PAGE, 3, 0x10 | 0x20 | 0x01, 0, false)).toThrow(RangeError);
    expect(() => n.madvise(new SharedArrayBuffer(PAGE), 0, PAGE, 4)).toThrow(TypeError);
    expect(() => n.madvise(new ArrayBuffer(PAGE) as unknown as SharedArrayBuffer, 0, PAGE, 4)).toThrow(TypeError);
    const r = MmapRegion.anonymous(PAGE);
    expect(() => n.madvise(r.buffer, PAGE, 1, 4)).toThrow(RangeError);
    expect(() => n.msync(r.buffer, 0, PAGE + 1, 4)).toThrow(RangeError);
    expect(() => n.madvise(r.buffer, 0, PAGE, 100 /* MADV_HWPOISON */)).toThrow(RangeError);
    expect(() => n.mmap(-1, PAGE, 1 /* PROT_READ only */, 0x21, 0, false)).toThrow(RangeError);
    expect(() => n.mmap(-1, PAGE, 3, 0x21 | 0x100 /* MAP_GROWSDOWN */, 0, false)).toThrow(RangeError);
    r.close();
  });
});

/** Collects garbage until the live-mapping count stops changing; returns it. */
async function settledCount(): Promise<number> {
  let last = -1;
  let stable = 0;
  await gcUntil(() => {
    const n = liveMappingCount();
    stable = n === last ? stable + 1 : 0;
    last = n;
    return stable >= 3;
  });
  return last;
}

/**
 * Whether this Node must have Node-API's SharedArrayBuffer functions: not Node 20; yes from
 * 24.16 and 26.1 (the releases that added node_api_create_external_sharedarraybuffer) and from
 * 22.23.5 (the 22 release checked here; the first 22 release with it is not known here);
 * undefined (either answer) for the releases between.
 */
function nodeApiSabExpected(): boolean | undefined {
  const [major = 0, minor = 0, patch = 0] = process.versions.node.split(".").map(Number);
  const atLeast = (m: number, p: number) => minor > m || (minor === m && patch >= p);
  if (major <= 20) return false;
  if (major >= 27 || (major === 26 && atLeast(1, 0)) || (major === 24 && atLeast(16, 0)) || (major === 22 && atLeast(23, 5))) return true;
  return undefined;
}

// The SharedArrayBuffer APIs this Node offers (DESIGN.md "SharedArrayBuffers"): the lifetime
// tests below run on each.
const backends = native().sabBackend() === "node-api" ? (["node-api", "v8"] as const) : (["v8"] as const);

describe("SharedArrayBuffer API", () => {
  afterAll(() => native().sabBackend("node-api")); // back to the default: Node-API where Node has it

  it(`uses Node-API's SharedArrayBuffers where Node ${process.versions.node} has them, else V8's`, () => {
    const expected = nodeApiSabExpected();
    const got = native().sabBackend();
    if (expected === undefined) expect(["node-api", "v8"]).toContain(got);
    else expect(got).toBe(expected ? "node-api" : "v8");
    expect(native().sabBackend("v8")).toBe("v8");
    expect(native().sabBackend("node-api")).toBe(got); // the default again
    expect(() => native().sabBackend("napi" as "v8")).toThrow(RangeError);
  });

  it.each(backends)("with %s: made by one API, read by the other; foreign buffers refused", (backend) => {
    const other = backend === "v8" ? "node-api" : "v8";
    native().sabBackend(backend);
    const r = MmapRegion.memfd(PAGE, { name: `sab-${backend}` });
    expect(r.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(r.buffer.byteLength).toBe(PAGE);
    new Uint8Array(r.buffer)[7] = 0x42;
    native().sabBackend(other);
    const n = native();
    expect(n.madvise(r.buffer, 0, PAGE, n.mmapConstants.MADV_WILLNEED)).toBe(0);
    expect(n.msync(r.buffer, 0, PAGE, n.mmapConstants.MS_SYNC)).toBe(0);
    expect(() => n.madvise(r.buffer, PAGE, 1, n.mmapConstants.MADV_WILLNEED)).toThrow(RangeError);
    native().sabBackend(backend);
    expect(() => n.madvise(new SharedArrayBuffer(PAGE), 0, PAGE, 4)).toThrow(/not a mapping made by this addon/);
    expect(() => n.madvise(new ArrayBuffer(PAGE) as unknown as SharedArrayBuffer, 0, PAGE, 4)).toThrow(/must be a SharedArrayBuffer/);
    expect(() => n.madvise(new Uint8Array(r.buffer) as unknown as SharedArrayBuffer, 0, PAGE, 4)).toThrow(/must be a SharedArrayBuffer/);
    expect(new Uint8Array(r.buffer)[7]).toBe(0x42);
    r.close();
  });
});

describe.each(backends)("MmapRegion lifetime across threads (%s SharedArrayBuffers)", (backend) => {
  beforeAll(() => {
    expect(native().sabBackend(backend)).toBe(backend);
  });
  afterAll(() => native().sabBackend("node-api"));

  it("keeps the mapping while a worker holds the buffer, unmaps after the last one is collected", async () => {
    const before = await settledCount();
    const worker = new TestWorker(sabWorkerUrl);
    try {
      await (async () => {
        const r = MmapRegion.memfd(PAGE, { name: "lifetime" });
        new Uint8Array(r.buffer)[10] = 0x5a;
        expect(liveMappingCount()).toBe(before + 1);
        expect(await worker.request({ op: "hold", buffer: r.buffer })).toMatchObject({ ok: true, length: PAGE });
        r.close();
      })();
      // Main holds no reference any more; force GCs: the worker's reference keeps it mapped.
      await gcUntil(() => false, 10);
      expect(liveMappingCount()).toBe(before + 1);
      expect(await worker.request({ op: "read", offset: 10 })).toMatchObject({ value: 0x5a });
      await worker.request({ op: "write", offset: 11, value: 0xa5 });
      expect(await worker.request({ op: "read", offset: 11 })).toMatchObject({ value: 0xa5 });
      // The worker drops it and collects: now the deleter munmaps.
      await worker.request({ op: "drop" });
      expect(await gcUntil(() => liveMappingCount() === before)).toBe(true);
    } finally {
      await worker.terminate();
    }
  });

  it("unmaps when the region is dropped without close (GC is the owner)", async () => {
    const before = await settledCount();
    (() => {
      const r = MmapRegion.anonymous(PAGE);
      new Uint8Array(r.buffer)[0] = 1;
    })();
    expect(liveMappingCount()).toBe(before + 1);
    expect(await gcUntil(() => liveMappingCount() === before)).toBe(true);
  });

  it("unmaps when the last holder is a terminated worker", async () => {
    const before = await settledCount();
    const worker = new TestWorker(sabWorkerUrl);
    await (async () => {
      const r = MmapRegion.anonymous(PAGE);
      await worker.request({ op: "hold", buffer: r.buffer });
      r.close();
    })();
    await gcUntil(() => false, 5);
    expect(liveMappingCount()).toBe(before + 1);
    await worker.terminate();
    expect(await gcUntil(() => liveMappingCount() === before)).toBe(true);
  });

  it("two workers see each other's writes; Atomics.wait in one is woken by the other", async () => {
    const r = MmapRegion.memfd(PAGE);
    const a = new TestWorker(sabWorkerUrl);
    const b = new TestWorker(sabWorkerUrl);
    try {
      await a.request({ op: "hold", buffer: r.buffer });
      await b.request({ op: "hold", buffer: r.buffer });
      await a.request({ op: "write", offset: 100, value: 77 });
      expect(await b.request({ op: "read", offset: 100 })).toMatchObject({ value: 77 });
      await Promise.all([a.request({ op: "add", index: 0, count: 10000 }), b.request({ op: "add", index: 0, count: 10000 })]);
      const i32 = new Int32Array(r.buffer);
      expect(Atomics.load(i32, 0)).toBe(20000);
      // a blocks in Atomics.wait on index 1; main stores and notifies.
      const waited = a.request<{ result: string; value: number }>({ op: "wait", index: 1, expect: 0, timeout: 10_000 });
      await new Promise((res) => setTimeout(res, 20));
      Atomics.store(i32, 1, 9);
      Atomics.notify(i32, 1);
      expect(await waited).toMatchObject({ result: expect.stringMatching(/^(ok|not-equal)$/), value: 9 });
    } finally {
      await a.terminate();
      await b.terminate();
      r.close();
    }
  });
});
