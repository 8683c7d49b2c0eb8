import { describe, expect, it } from "vitest";
import { EventFd, pollFd } from "./index.js";
import { codeOf } from "../test/code-of.js";

describe("EventFd", () => {
  it("counts writes and resets on read", () => {
    const e = new EventFd();
    expect(codeOf(() => e.read())).toBe("EAGAIN");
    expect(e.tryRead()).toBeNull();
    e.write();
    e.write(2);
    e.write(10n);
    expect(e.read()).toBe(13n);
    expect(e.tryRead()).toBeNull();
    e.write(0);
    expect(e.tryRead()).toBeNull();
    e.close();
  });

  it("starts from initval", () => {
    const e = new EventFd({ initval: 7 });
    expect(e.read()).toBe(7n);
    e.close();
  });

  it("semaphore mode hands out one at a time", () => {
    const e = new EventFd({ semaphore: true, initval: 2 });
    e.write(1);
    expect([e.read(), e.read(), e.read()]).toEqual([1n, 1n, 1n]);
    expect(e.tryRead()).toBeNull();
    e.close();
  });

  it("holds up to 2^64-2; a write that would overflow is EAGAIN when non-blocking", () => {
    const e = new EventFd();
    e.write(0xffff_ffff_ffff_fffen);
    expect(codeOf(() => e.write(1))).toBe("EAGAIN");
    expect(e.read()).toBe(0xffff_ffff_ffff_fffen);
    e.close();
  });

  it("blocking mode: tryRead polls first and returns null instead of blocking", () => {
    const e = new EventFd({ nonBlocking: false });
    expect(e.tryRead()).toBeNull();
    e.write(5);
    expect(pollFd(e.fd, { readable: true }, 0)).toMatchObject({ readable: true, timedOut: false });
    expect(e.tryRead()).toBe(5n);
    e.close();
  });

  it("pollFd reports writable, readable and a timeout", () => {
    const e = new EventFd();
    expect(pollFd(e.fd, { readable: true }, 10)).toEqual({ readable: false, writable: false, error: false, hangup: false, timedOut: true });
    expect(pollFd(e.fd, { writable: true }, 0)).toMatchObject({ writable: true });
    e.close();
  });

  it("after close: fd, read, write throw Closed; close is idempotent", () => {
    const e = new EventFd();
    e.close();
    e.close();
    expect(e.closed).toBe(true);
    expect(codeOf(() => e.fd)).toBe("Closed");
    expect(codeOf(() => e.read())).toBe("Closed");
    expect(codeOf(() => e.tryRead())).toBe("Closed");
    expect(codeOf(() => e.write())).toBe("Closed");
  });

  it("rejects bad values and options with InvalidArgument", () => {
    const e = new EventFd();
    for (const v of [-1, 1.5, Number.NaN, 2 ** 53, -1n, 0xffff_ffff_ffff_ffffn, "1", null]) {
      expect(codeOf(() => e.write(v as number))).toBe("InvalidArgument");
    }
    e.close();
    expect(codeOf(() => new EventFd({ initval: -1 }))).toBe("InvalidArgument");
    expect(codeOf(() => new EventFd({ initval: 2 ** 32 }))).toBe("InvalidArgument");
    expect(codeOf(() => new EventFd({ semaphore: "yes" as unknown as boolean }))).toBe("InvalidArgument");
    expect(codeOf(() => new EventFd(3 as unknown as object))).toBe("InvalidArgument");
    expect(codeOf(() => pollFd(-1))).toBe("InvalidArgument");
    expect(codeOf(() => pollFd(0, { readable: true }, -2))).toBe("InvalidArgument");
  });

  it("the addon rejects a non-bigint or oversized value itself", async () => {
    const { native } = await import("./native.js");
    const e = new EventFd();
    expect(() => native().eventfdWrite(e.fd, 1 as unknown as bigint)).toThrow(TypeError);
    expect(() => native().eventfdWrite(e.fd, 2n ** 64n)).toThrow(RangeError);
    e.close();
  });
});
