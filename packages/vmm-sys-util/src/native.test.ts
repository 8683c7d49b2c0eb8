// The injectable binding: a wrapper over the real addon that injects failures the machine
// will not produce on demand (ENOMEM from mmap after a successful memfd, an error event from
// libuv), to check the TypeScript error paths.
import { fstatSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { EventFd, FdWatcher, MmapRegion, VmmSysError, setNativeBinding, type WatchEvent } from "./index.js";
import { type NativeBinding, native } from "./native.js";

const real = native();
afterEach(() => setNativeBinding(undefined));

describe("setNativeBinding", () => {
  it("an mmap failure after memfd_create closes the memfd and reports ENOMEM", () => {
    let fdSeen = -1;
    setNativeBinding({
      ...real,
      mmap: (fd: number) => {
        fdSeen = fd;
        return -12; // -ENOMEM
      },
    } as NativeBinding);
    let err: unknown;
    try {
      MmapRegion.memfd(4096);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VmmSysError);
    expect(err).toMatchObject({ code: "ENOMEM", errno: 12, syscall: "mmap" });
    expect(fdSeen).toBeGreaterThan(2);
    expect(() => fstatSync(fdSeen)).toThrow(/EBADF/); // not leaked
  });

  it("an error event from libuv reaches the callback as VmmSysError and closes the watcher", async () => {
    let fire: ((status: number, events: number) => void) | undefined;
    setNativeBinding({
      ...real,
      pollCreate: (fd: number, cb: (status: number, events: number) => void) => {
        fire = cb;
        return real.pollCreate(fd, () => undefined);
      },
    } as NativeBinding);
    const e = new EventFd();
    const events: WatchEvent[] = [];
    const w = FdWatcher.watch(e.fd, { readable: true }, (ev) => events.push(ev));
    fire?.(-9, 0); // UV_EBADF
    expect(events).toHaveLength(1);
    expect(events[0]?.error).toBeInstanceOf(VmmSysError);
    expect(events[0]?.error?.code).toBe("EBADF");
    expect(events[0]?.error?.syscall).toBe("uv_poll");
    expect(w.closed).toBe(true);
    e.close();
  });

  it("an unknown errno still yields a typed error", () => {
    const err = VmmSysError.fromErrno("ioctl", 4095);
    expect(err.code).toBe("EIO");
    expect(err.errno).toBe(4095);
    expect(err.message).toContain("errno 4095");
    expect(VmmSysError.fromErrno("read", 11).code).toBe("EAGAIN");
  });
});
