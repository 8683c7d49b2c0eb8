// KVM_GET/SET_NESTED_STATE (issue 14 item 7): VcpuFd.getNestedState/setNestedState.
// This host (kvm_pvm) has no nested virtualization: KVM_CAP_NESTED_STATE is 0 and both
// ioctls answer EINVAL, so the round trip through the TypeScript layer runs over the
// real addon with CHECK_EXTENSION and the two ioctls answered the way an SVM host's
// KVM answers them (svm_get_nested_state: a 128-byte header, size 128 outside guest mode).
import { describeKvm } from "@ts-vmm/test-utils";
import { afterEach, expect, it } from "vitest";
import { type TestVm, asm, makeVm } from "./guest.js";
import {
  Cap, Ioctl, KVM_STATE_NESTED_FORMAT_SVM, KVM_STATE_NESTED_GIF_SET, KVM_STATE_NESTED_SVM_VMCB_SIZE, setNativeBinding,
} from "../src/index.js";
import { type KvmNative, native } from "../src/native.js";

let g: TestVm | undefined;
afterEach(() => {
  setNativeBinding(undefined);
  g?.close();
  g = undefined;
});

const SVM_MAX = 128 + KVM_STATE_NESTED_SVM_VMCB_SIZE; // what KVM_CAP_NESTED_STATE reports on SVM

describeKvm("KVM_GET/SET_NESTED_STATE", () => {
  it("on this host: nestedStateSize is KVM_CAP_NESTED_STATE; with 0, Unsupported before the call (the kernel says EINVAL)", () => {
    g = makeVm([...asm.ud2]);
    const cap = g.vm.checkExtension(Cap.NESTED_STATE);
    expect(g.vcpu.nestedStateSize).toBe(cap);
    expect(g.vcpu.toTransferable().nestedStateSize).toBe(cap);
    if (cap === 0) {
      expect(() => g!.vcpu.getNestedState()).toThrow(expect.objectContaining({ code: "Unsupported" }));
      expect(() => g!.vcpu.setNestedState(new Uint8Array(128))).toThrow(expect.objectContaining({ code: "Unsupported" }));
      // Why: no nested_ops->get_state/set_state here, so KVM refuses both with EINVAL.
      const hdr = new Uint8Array(128);
      new DataView(hdr.buffer).setUint32(4, 128, true);
      expect(native().ioctlBuf(g.vcpu.fd, Ioctl.KVM_GET_NESTED_STATE, hdr)).toBe(-22);
      expect(native().ioctlBuf(g.vcpu.fd, Ioctl.KVM_SET_NESTED_STATE, hdr)).toBe(-22);
    } else {
      // A host with nested virtualization: outside guest mode the state is the header only.
      const s = g.vcpu.getNestedState();
      expect(s.size).toBe(s.blob.byteLength);
      expect(s.size).toBeGreaterThanOrEqual(128);
      g.vcpu.setNestedState(s.blob);
    }
  });

  function svmHost(): { sets: Uint8Array[]; gets: number[]; report: number } {
    const real = native();
    const seen = { sets: [] as Uint8Array[], gets: [] as number[], report: 128 };
    const fake: KvmNative = {
      ...real,
      ioctlVal: (fd, req, arg) => (req === Ioctl.KVM_CHECK_EXTENSION && arg === Cap.NESTED_STATE ? SVM_MAX : real.ioctlVal(fd, req, arg)),
      ioctlBuf: (fd, req, buf, min) => {
        const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
        if (req === Ioctl.KVM_GET_NESTED_STATE) {
          seen.gets.push(buf.byteLength, dv.getUint32(4, true));
          dv.setUint16(0, KVM_STATE_NESTED_GIF_SET, true);
          dv.setUint16(2, KVM_STATE_NESTED_FORMAT_SVM, true);
          dv.setUint32(4, seen.report, true);
          return 0;
        }
        if (req === Ioctl.KVM_SET_NESTED_STATE) {
          seen.sets.push(buf.slice());
          return 0;
        }
        return real.ioctlBuf(fd, req, buf, min);
      },
    };
    setNativeBinding(fake);
    g = makeVm([...asm.ud2]);
    return seen;
  }

  it("round trip: the kernel gets a buffer of KVM_CAP_NESTED_STATE bytes; the blob is `size` bytes with the header decoded", () => {
    const host = svmHost();
    expect(g!.vcpu.nestedStateSize).toBe(SVM_MAX);
    const s = g!.vcpu.getNestedState();
    expect(host.gets).toEqual([SVM_MAX, SVM_MAX]); // buffer length and the size field the kernel reads
    expect({ flags: s.flags, format: s.format, size: s.size, len: s.blob.byteLength }).toEqual({ flags: KVM_STATE_NESTED_GIF_SET, format: KVM_STATE_NESTED_FORMAT_SVM, size: 128, len: 128 });
    g!.vcpu.setNestedState(s.blob);
    expect(host.sets).toHaveLength(1);
    expect(host.sets[0]).toEqual(s.blob);
    // A longer blob: only `size` bytes go to the kernel.
    const longer = new Uint8Array(200);
    longer.set(s.blob);
    g!.vcpu.setNestedState(longer);
    expect(host.sets[1]!.byteLength).toBe(128);
  });

  it("setNestedState checks the header, the size field and the capability before the call", () => {
    const host = svmHost();
    const blob = (len: number, size: number) => {
      const b = new Uint8Array(len);
      new DataView(b.buffer).setUint32(4, size, true);
      return b;
    };
    expect(() => g!.vcpu.setNestedState(blob(64, 64))).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => g!.vcpu.setNestedState(blob(128, 64))).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => g!.vcpu.setNestedState(blob(200, 300))).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => g!.vcpu.setNestedState(blob(SVM_MAX + 8, SVM_MAX + 8))).toThrow(expect.objectContaining({ code: "TooLarge" }));
    expect(() => g!.vcpu.setNestedState("x" as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(host.sets).toHaveLength(0);
    g!.vcpu.setNestedState(blob(SVM_MAX, SVM_MAX));
    expect(host.sets[0]!.byteLength).toBe(SVM_MAX);
  });

  it("a size the kernel reports outside 128..max is refused, not sliced", () => {
    const host = svmHost();
    host.report = SVM_MAX + 4096;
    expect(() => g!.vcpu.getNestedState()).toThrow(expect.objectContaining({ code: "OutOfRange" }));
    host.report = 64;
    expect(() => g!.vcpu.getNestedState()).toThrow(expect.objectContaining({ code: "OutOfRange" }));
  });

  it("the addon refuses a buffer shorter than the size field the kernel reads", () => {
    g = makeVm([...asm.ud2]);
    const b = new Uint8Array(256);
    new DataView(b.buffer).setUint32(4, 4096, true);
    expect(() => native().ioctlBuf(g!.vcpu.fd, Ioctl.KVM_SET_NESTED_STATE, b)).toThrow(RangeError);
    expect(() => native().ioctlBuf(g!.vcpu.fd, Ioctl.KVM_GET_NESTED_STATE, b)).toThrow(RangeError);
  });
});
