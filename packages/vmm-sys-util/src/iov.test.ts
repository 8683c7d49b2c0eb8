// readvFd / writevFd / nativeReadv / nativeWritev over real fds: a FIFO opened O_RDWR |
// O_NONBLOCK (one fd both ends, so an empty one answers EAGAIN) and an eventfd. Every case
// checks the bytes that moved, not only the return value.
import { execFileSync } from "node:child_process";
import { closeSync, constants as fsConstants, mkdtempSync, openSync, rmSync } from "node:fs";
import { constants } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, MmapRegion, nativeReadv, nativeWritev, readvFd, writevFd, type NativeIov } from "./index.js";
import { codeOf } from "../test/code-of.js";

const { EAGAIN, EBADF, EINVAL } = constants.errno;

interface ResizableArrayBuffer extends ArrayBuffer {
  resize(n: number): void;
}
const RAB = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ResizableArrayBuffer;

function pattern(n: number, seed = 1): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 31 + seed) & 0xff;
  return a;
}

const concat = (views: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(views.reduce((s, v) => s + v.length, 0));
  let off = 0;
  for (const v of views) {
    out.set(v, off);
    off += v.length;
  }
  return out;
};

describe("readv / writev on a FIFO", () => {
  let dir: string;
  let fd: number;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "vsu-iov-"));
    const path = join(dir, "fifo");
    execFileSync("mkfifo", [path]);
    fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
  });
  afterEach(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  it("gathers pieces in order and scatters them back (arrays, arguments, shared and guest memory)", () => {
    const region = MmapRegion.anonymous(65536);
    try {
      const guest = new Uint8Array(region.buffer);
      guest.set(pattern(3000, 7), 1000);
      const pieces = [pattern(12, 2), guest.subarray(1000, 4000), Buffer.from(pattern(5, 9))];
      expect(writevFd(fd, pieces)).toBe(3017);
      const sab = new Uint8Array(new SharedArrayBuffer(100));
      const into = [new Uint8Array(10), guest.subarray(20000, 23000), sab];
      expect(readvFd(fd, into)).toBe(3017);
      expect(concat(into).subarray(0, 3017)).toEqual(concat(pieces));
      expect(sab.subarray(7)).toEqual(new Uint8Array(93)); // only 7 bytes were left for it

      // The argument form, and the array form with a count (the rest of the array ignored).
      const w = nativeWritev();
      const r = nativeReadv();
      expect(w(fd, pattern(4, 1), pattern(6, 2))).toBe(10);
      expect(w(fd, [pattern(3, 3), pattern(99, 4)], 1)).toBe(3);
      const a = new Uint8Array(7);
      const b = new Uint8Array(6);
      expect(r(fd, a, b)).toBe(13);
      expect(concat([a, b])).toEqual(concat([pattern(4, 1), pattern(6, 2), pattern(3, 3)]));
    } finally {
      region.close();
    }
  });

  it("answers an empty non-blocking fd with \"again\" (-EAGAIN from the raw call, no exception)", () => {
    expect(readvFd(fd, [new Uint8Array(8)])).toBe("again");
    expect(nativeReadv()(fd, new Uint8Array(8))).toBe(-EAGAIN);
    expect(nativeReadv()(fd, [new Uint8Array(8)])).toBe(-EAGAIN);
  });

  it("takes more pieces than fit on the addon's stack (up to IOV_MAX), and refuses more", () => {
    const many = Array.from({ length: 1024 }, (_, i) => pattern(1, i));
    expect(writevFd(fd, many)).toBe(1024);
    const back = Array.from({ length: 1024 }, () => new Uint8Array(1));
    // The argument form with 1024 views (the type wants at least one: `first` then `...more`).
    const spread = (call: NativeIov, views: Uint8Array[]): number => call(fd, views[0] as Uint8Array, ...views.slice(1));
    expect(spread(nativeReadv(), back)).toBe(1024);
    expect(concat(back)).toEqual(concat(many));
    const tooMany = [...many, new Uint8Array(1)];
    expect(nativeWritev()(fd, tooMany)).toBe(-EINVAL);
    expect(spread(nativeWritev(), tooMany)).toBe(-EINVAL);
    expect(codeOf(() => writevFd(fd, tooMany))).toBe("InvalidArgument");
    expect(readvFd(fd, [new Uint8Array(1)])).toBe("again"); // nothing was written
  });

  it("a view outside its buffer (a shrunk resizable buffer, a detached one) gets no byte", () => {
    const rab = new RAB(64, { maxByteLength: 64 });
    const fixed = new Uint8Array(rab, 32, 32);
    rab.resize(40);
    const detached = new Uint8Array(16);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expect(writevFd(fd, [pattern(20, 5)])).toBe(20);
    const tail = new Uint8Array(20);
    expect(readvFd(fd, [fixed, detached, tail])).toBe(20);
    expect(tail).toEqual(pattern(20, 5));
  });

  it("returns -EINVAL for bad arguments and never throws, whatever it is given", () => {
    const r = nativeReadv() as unknown as (...args: unknown[]) => number;
    const v = new Uint8Array(4);
    const bad: unknown[][] = [
      [],
      [fd],
      [-1, v],
      [1.5, v],
      [2 ** 31, v],
      ["3", v],
      [fd, "x"],
      [fd, {}],
      [fd, [v, "x"]],
      [fd, [v, new Uint16Array(2)]],
      [fd, [v], 2],
      [fd, [v], -1],
      [fd, [v], 0.5],
      [fd, v, [v]],
      [fd, v, new DataView(new ArrayBuffer(4))],
    ];
    for (const args of bad) expect(r(...args)).toBe(-EINVAL);
    // A getter that throws: a status, not an exception.
    const hostile = [v];
    Object.defineProperty(hostile, 1, { get: () => { throw new Error("no"); }, enumerable: true });
    expect(r(fd, hostile)).toBe(-EINVAL);
    // A getter that detaches the buffer of a view already looked at: no access to freed memory.
    const early = new Uint8Array(64);
    const sneaky: Uint8Array[] = [early];
    Object.defineProperty(sneaky, 1, { get: () => (structuredClone(early.buffer, { transfer: [early.buffer] }), new Uint8Array(4)) });
    expect(writevFd(fd, [pattern(4, 8)])).toBe(4);
    expect(r(fd, sneaky)).toBe(4);
    expect(early.length).toBe(0);
    // Nothing went wrong in the fd: what was left reads as usual.
    expect(readvFd(fd, [new Uint8Array(1)])).toBe("again");
  });
});

describe("readv / writev errors", () => {
  it("reports the system call's errno: EBADF on a closed fd, EINVAL for a short eventfd read", () => {
    const e = new EventFd();
    const fd = e.fd;
    e.write(5n);
    // An eventfd reads 8 bytes or fails with EINVAL: the kernel's error, not an argument error.
    expect(codeOf(() => readvFd(fd, [new Uint8Array(4)]))).toBe("EINVAL");
    const got = new Uint8Array(8);
    expect(readvFd(fd, [got.subarray(0, 3), got.subarray(3)])).toBe(8);
    expect(new DataView(got.buffer).getBigUint64(0, true)).toBe(5n);
    e.close();
    expect(nativeReadv()(fd, new Uint8Array(8))).toBe(-EBADF);
    expect(codeOf(() => readvFd(fd, [new Uint8Array(8)]))).toBe("EBADF");
    expect(codeOf(() => writevFd(fd, [new Uint8Array(8)]))).toBe("EBADF");
  });
});
