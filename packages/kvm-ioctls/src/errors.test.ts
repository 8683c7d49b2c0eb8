import { describe, expect, it } from "vitest";
import { KvmError, checkU64, checkUint, errnoName } from "./errors.js";

describe("KvmError", () => {
  it("names the ioctl and errno", () => {
    const e = KvmError.fromErrno("KVM_CREATE_VCPU", 17);
    expect(e).toBeInstanceOf(Error);
    expect(e.message).toBe("KVM_CREATE_VCPU failed: EEXIST");
    expect(e).toMatchObject({ code: "EEXIST", errno: 17, ioctl: "KVM_CREATE_VCPU", syscall: "KVM_CREATE_VCPU", name: "KvmError" });
  });

  it("maps errno numbers to names", () => {
    expect(errnoName(22)).toBe("EINVAL");
    expect(errnoName(7)).toBe("E2BIG");
    expect(errnoName(999999)).toBe("EUNKNOWN");
  });

  it("checks integers before any syscall", () => {
    expect(() => checkUint(-1, "x")).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => checkUint(1.5, "x")).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => checkUint("3" as unknown, "x")).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => checkUint(2 ** 32, "x")).toThrow(expect.objectContaining({ code: "OutOfRange" }));
    expect(checkUint(5, "x")).toBe(5);
    expect(checkU64(5, "x")).toBe(5n);
    expect(() => checkU64(-1n, "x")).toThrow(expect.objectContaining({ code: "OutOfRange" }));
    expect(() => checkU64(1n << 64n, "x")).toThrow(expect.objectContaining({ code: "OutOfRange" }));
    expect(() => checkU64(0.5, "x")).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
});
