// Adversarial calls of the raw addon found by the 2026-11-22 audit: each one
// made the kernel or the addon touch memory outside the buffers it was given.
// Crashing cases run in a child process so a segfault is a failed assertion.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { MmapRegion } from "@ts-vmm/vmm-sys-util";
import { describeKvm } from "@ts-vmm/test-utils";
import { afterEach, expect, it } from "vitest";
import { type TestVm, asm, makeVm } from "./guest.js";
import { Ioctl, x86MsrRegId } from "../src/index.js";
import { native } from "../src/native.js";

let g: TestVm | undefined;
afterEach(() => {
  g?.close();
  g = undefined;
});

const addon = fileURLToPath(new URL("../build/Release/kvm_ioctls.node", import.meta.url));

/** Runs `body` (CommonJS, with `n` = the addon and `vcpu`, `vm`, `kvm` fds) in a child node. */
function child(body: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const src = `const n = require(${JSON.stringify(addon)});
const kvm = n.open("/dev/kvm"); const vm = n.ioctlVal(kvm, 0xae01, 0); const vcpu = n.ioctlVal(vm, 0xae41, 0);
${body}`;
  const r = spawnSync(process.execPath, ["-e", src], { encoding: "utf8", timeout: 30_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describeKvm("raw addon: memory outside the buffers", () => {
  it("ioctlBufPtr refuses a struct buffer shorter than 8 bytes (the pointer offset check underflowed: SIGSEGV)", () => {
    const r = child(`
try { n.ioctlBufPtr(vcpu, 0x4010aeab, new Uint8Array(4), 2 ** 40, new Uint8Array(8), 8); console.log("called"); }
catch (e) { console.log(e.name); }`);
    expect({ status: r.status, signal: r.signal, stdout: r.stdout.trim() }).toEqual({ status: 0, signal: null, stdout: "RangeError" });
  });

  it("ioctlBufPtr does not write the pointer outside a view with a byteOffset", () => {
    g = makeVm([...asm.ud2]);
    const ab = new ArrayBuffer(64);
    const big = new Uint8Array(ab).fill(0xaa);
    const small = new Uint8Array(ab, 0, 4);
    expect(() => native().ioctlBufPtr(g!.vcpu.fd, Ioctl.KVM_GET_ONE_REG, small, 8, new Uint8Array(8), 8)).toThrow(RangeError);
    expect(big.every((b) => b === 0xaa)).toBe(true);
  });

  it("views over a SharedArrayBuffer pass their real address (was NULL + byteOffset)", () => {
    g = makeVm([...asm.ud2]);
    const sab = new SharedArrayBuffer(4096);
    const regs = new Uint8Array(sab, 1024, 144);
    expect(native().ioctlBuf(g.vcpu.fd, Ioctl.KVM_GET_REGS, regs)).toBe(0);
    // rip of the test guest (CODE = 0x1000) at offset 128 of struct kvm_regs
    expect(new DataView(sab, 1024).getBigUint64(128, true)).toBe(0x1000n);
    const oneReg = new Uint8Array(16);
    new DataView(oneReg.buffer).setBigUint64(0, x86MsrRegId(0x174), true);
    expect(native().ioctlBufPtr(g.vcpu.fd, Ioctl.KVM_GET_ONE_REG, oneReg, 8, new Uint8Array(sab, 2048, 8), 8)).toBe(0);
  });

  it("ioctlBuf refuses requests whose struct carries a host pointer (the kernel wrote through any address)", () => {
    g = makeVm([...asm.ud2]);
    const target = MmapRegion.anonymous(4096);
    const bytes = new Uint8Array(target.buffer).fill(0xaa);
    const n = native();
    const st = new Uint8Array(16);
    const dv = new DataView(st.buffer);
    dv.setBigUint64(0, x86MsrRegId(0x174), true); // MSR_IA32_SYSENTER_CS
    dv.setBigUint64(8, target.address + 8n, true);
    expect(() => n.ioctlBuf(g!.vcpu.fd, Ioctl.KVM_GET_ONE_REG, st)).toThrow(TypeError);
    for (const req of [Ioctl.KVM_SET_ONE_REG, Ioctl.KVM_GET_DIRTY_LOG, Ioctl.KVM_CLEAR_DIRTY_LOG, Ioctl.KVM_GET_DEVICE_ATTR, Ioctl.KVM_SET_DEVICE_ATTR]) {
      expect(() => n.ioctlBuf(g!.vcpu.fd, req, new Uint8Array(64))).toThrow(TypeError);
    }
    expect(bytes.every((b) => b === 0xaa)).toBe(true);
    target.close();
  });

  it("only KVM requests: a non-KVM ioctl with a pointer argument is refused (FIONREAD wrote through any address)", () => {
    const n = native();
    const target = MmapRegion.anonymous(4096);
    const bytes = new Uint8Array(target.buffer).fill(0xaa);
    const r = child(`
const fs = require("node:fs"); const os = require("node:os"); const path = require("node:path");
const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "kvm-audit-")), "x");
fs.writeFileSync(f, "hello");
const fd = fs.openSync(f, "r");
for (const c of [() => n.ioctlVal(fd, 0x541b, 0x1000), () => n.ioctlBuf(fd, 0x80085401, new Uint8Array(64))]) {
  try { console.log(c()); } catch (e) { console.log(e.name); }
}`);
    expect({ status: r.status, stdout: r.stdout.trim().split("\n") }).toEqual({ status: 0, stdout: ["TypeError", "TypeError"] });
    expect(() => n.ioctlVal(0, 0x541b, Number(target.address))).toThrow(TypeError);
    // The kernel truncates the request to 32 bits: 2^32 + KVM_GET_SUPPORTED_CPUID was
    // sized as an unknown 8-byte request, then ran as KVM_GET_SUPPORTED_CPUID (nent x 40 bytes).
    const cpuid = new Uint8Array(8);
    new DataView(cpuid.buffer).setUint32(0, 100, true);
    expect(() => n.ioctlBuf(0, 2 ** 32 + Ioctl.KVM_GET_SUPPORTED_CPUID, cpuid)).toThrow(TypeError);
    expect(() => n.ioctlVal(0, 2 ** 32 + Ioctl.KVM_REINJECT_CONTROL, Number(target.address))).toThrow(TypeError);
    expect(bytes.every((b) => b === 0xaa)).toBe(true);
    target.close();
  });

  it("ioctlBufPtr writes the data pointer only at the request's own pointer field (KVM_GET_DEVICE_ATTR wrote supported_xcr0 through offset 16)", () => {
    const n = native();
    const kvm = n.open("/dev/kvm");
    const target = MmapRegion.anonymous(4096);
    const bytes = new Uint8Array(target.buffer).fill(0xaa);
    // struct kvm_device_attr: flags, group = KVM_X86_GRP_CPU, attr = KVM_X86_XCOMP_GUEST_SUPP, addr @16.
    const st = new Uint8Array(32);
    new DataView(st.buffer).setBigUint64(16, target.address, true);
    expect(() => n.ioctlBufPtr(kvm, Ioctl.KVM_GET_DEVICE_ATTR, st, 24, new Uint8Array(8), 8)).toThrow(TypeError);
    expect(bytes.every((b) => b === 0xaa)).toBe(true);
    // At the real field the kernel writes into the checked buffer (or refuses the attribute).
    const out = new Uint8Array(8).fill(0xaa);
    const r = n.ioctlBufPtr(kvm, Ioctl.KVM_GET_DEVICE_ATTR, new Uint8Array(24), 16, out, 8);
    expect(r === 0 || r < 0).toBe(true);
    expect(bytes.every((b) => b === 0xaa)).toBe(true);
    n.close(kvm);
    target.close();
  });

  it("ioctlBufPtr refuses requests outside its pointer table (an unrecorded KVM_SET_USER_MEMORY_REGION, MSR filter, SEV)", () => {
    g = makeVm([...asm.ud2]);
    const n = native();
    const data = new Uint8Array(4096);
    for (const req of [Ioctl.KVM_SET_USER_MEMORY_REGION, 0x4188aec6, 0xc008aeba, 0x8010aebb, 0xc000aeff]) {
      expect(() => n.ioctlBufPtr(g!.vm.fd, req, new Uint8Array(512), 24, data, 8), req.toString(16)).toThrow(TypeError);
    }
  });

  it("ioctlBuf refuses the Xen requests whose structs hold host addresses", () => {
    g = makeVm([...asm.ud2]);
    const n = native();
    for (const req of [0x4038ae7a, 0xc048aec8, 0x4048aec9, 0xc048aeca, 0x4048aecb]) {
      expect(() => n.ioctlBuf(g!.vm.fd, req, new Uint8Array(128)), req.toString(16)).toThrow(TypeError);
    }
  });

  it("count-carrying structs in a SharedArrayBuffer run on a private copy and copy results back", () => {
    const n = native();
    const kvm = n.open("/dev/kvm");
    const sab = new SharedArrayBuffer(8 + 4096 * 40);
    const dv = new DataView(sab);
    dv.setUint32(0, 4096, true);
    expect(n.ioctlBuf(kvm, Ioctl.KVM_GET_SUPPORTED_CPUID, new Uint8Array(sab))).toBe(0);
    const nent = dv.getUint32(0, true);
    expect(nent).toBeGreaterThan(0);
    expect(nent).toBeLessThan(4096);
    // Leaf 0 comes back in the shared view.
    expect(dv.getUint32(8, true)).toBe(0);
    expect(dv.getUint32(8 + 12, true)).toBeGreaterThan(0); // eax of leaf 0: max basic leaf
    n.close(kvm);
  });

  it("variable-length requests the addon did not size (HV CPUID, nested state, KVM_SET_CPUID, PMU filter, signal mask)", () => {
    g = makeVm([...asm.ud2]);
    const n = native();
    const fd = g.vcpu.fd;
    const claim = (size: number, off: number, count: number) => {
      const b = new Uint8Array(size);
      new DataView(b.buffer).setUint32(off, count, true);
      return b;
    };
    expect(() => n.ioctlBuf(fd, 0xc008aec1, claim(8, 0, 100))).toThrow(RangeError); // KVM_GET_SUPPORTED_HV_CPUID
    expect(() => n.ioctlBuf(g!.kvm.fd, 0xc008aec1, claim(8, 0, 100))).toThrow(RangeError);
    expect(() => n.ioctlBuf(fd, 0xc080aebe, claim(128, 4, 65536))).toThrow(RangeError); // KVM_GET_NESTED_STATE
    expect(() => n.ioctlBuf(fd, 0x4080aebf, claim(128, 4, 65536))).toThrow(RangeError); // KVM_SET_NESTED_STATE
    expect(() => n.ioctlBuf(fd, 0x4008ae8a, claim(8, 0, 100))).toThrow(RangeError); // KVM_SET_CPUID
    expect(() => n.ioctlBuf(g!.vm.fd, 0x4020aeb2, claim(32, 4, 100))).toThrow(RangeError); // KVM_SET_PMU_EVENT_FILTER
    expect(() => n.ioctlBuf(fd, 0x4004ae8b, claim(4, 0, 8))).toThrow(RangeError); // KVM_SET_SIGNAL_MASK
    // Well-sized versions reach the kernel, which answers: either the data (checked) or
    // EINVAL (this PVM host: no Hyper-V CPUID on the vCPU, no nested state) — never a
    // RangeError/TypeError from the addon.
    const hv = claim(8 + 100 * 40, 0, 100);
    const rHv = n.ioctlBuf(fd, 0xc008aec1, hv);
    const hvDv = new DataView(hv.buffer);
    if (rHv === 0) {
      const nent = hvDv.getUint32(0, true);
      expect(nent).toBeGreaterThan(0);
      expect(nent).toBeLessThanOrEqual(100);
      expect(Array.from({ length: nent }, (_, i) => hvDv.getUint32(8 + 40 * i, true))).toContain(0x40000000);
    } else {
      expect(rHv).toBe(-22);
      expect(hvDv.getUint32(0, true)).toBe(100); // untouched
    }
    const ns = claim(4096, 4, 4096);
    const rNs = n.ioctlBuf(fd, 0xc080aebe, ns);
    if (rNs === 0) expect(new DataView(ns.buffer).getUint32(4, true)).toBeLessThanOrEqual(4096);
    else expect(rNs).toBe(-22);
  });
});

describeKvm("memory slots keep their mapping alive", () => {
  const script = fileURLToPath(new URL("./fixtures/slot-lifetime.mjs", import.meta.url));
  for (const mode of ["drop", "close"]) {
    it(`a slot's MmapRegion that is ${mode === "drop" ? "dropped" : "closed"} and collected stays mapped for the guest`, () => {
      const r = spawnSync(process.execPath, ["--expose-gc", script, mode], { encoding: "utf8", timeout: 60_000 });
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: "" });
      const out = JSON.parse(r.stdout) as { before: number; after: number; exit: string; hit: boolean };
      // Before the fix the mapping was unmapped by GC, the next mmap reused its address and
      // the guest wrote into that unrelated host mapping (hit: true).
      expect(out).toMatchObject({ after: out.before, exit: "IoOut", hit: false });
    });
  }
});

describeKvm("raw addon: dirty bitmap size", () => {
  it("ioctlBufPtr sizes KVM_GET_DIRTY_LOG's bitmap from the slot, not from dataMinBytes (the kernel overflowed an 8-byte buffer)", () => {
    const n = native();
    const kvm = n.open("/dev/kvm");
    const vm = n.ioctlVal(kvm, Ioctl.KVM_CREATE_VM, 0);
    const mem = MmapRegion.anonymous(0x200000); // 512 pages: a 64-byte bitmap
    const region = new Uint8Array(32);
    const rv = new DataView(region.buffer);
    rv.setUint32(0, 3, true); // slot
    rv.setUint32(4, 1, true); // KVM_MEM_LOG_DIRTY_PAGES
    rv.setBigUint64(16, 0x200000n, true);
    rv.setBigUint64(24, mem.address, true);
    expect(n.ioctlBuf(vm, Ioctl.KVM_SET_USER_MEMORY_REGION, region)).toBe(0);
    const log = new Uint8Array(16);
    new DataView(log.buffer).setUint32(0, 3, true);
    const ab = new ArrayBuffer(128);
    const all = new Uint8Array(ab).fill(0xaa);
    expect(() => n.ioctlBufPtr(vm, Ioctl.KVM_GET_DIRTY_LOG, log, 8, new Uint8Array(ab, 0, 8), 8)).toThrow(RangeError);
    expect(all.every((b) => b === 0xaa)).toBe(true);
    // A slot the addon never saw registered is refused too; the right size works.
    new DataView(log.buffer).setUint32(0, 4, true);
    expect(() => n.ioctlBufPtr(vm, Ioctl.KVM_GET_DIRTY_LOG, log, 8, new Uint8Array(ab), 128)).toThrow(RangeError);
    new DataView(log.buffer).setUint32(0, 3, true);
    expect(n.ioctlBufPtr(vm, Ioctl.KVM_GET_DIRTY_LOG, log, 8, new Uint8Array(ab, 0, 64), 64)).toBe(0);
    expect(all.subarray(0, 64).every((b) => b === 0)).toBe(true);
    expect(all.subarray(64).every((b) => b === 0xaa)).toBe(true);
    // Deleting the slot forgets its size.
    rv.setBigUint64(16, 0n, true);
    expect(n.ioctlBuf(vm, Ioctl.KVM_SET_USER_MEMORY_REGION, region)).toBe(0);
    expect(() => n.ioctlBufPtr(vm, Ioctl.KVM_GET_DIRTY_LOG, log, 8, new Uint8Array(ab, 0, 64), 64)).toThrow(RangeError);
    n.close(vm);
    n.close(kvm);
    mem.close();
  });
});

describeKvm("MmapRegion over a vCPU fd (vmm-sys-util audit, tested here where KVM is)", () => {
  it("a mapping larger than the kvm_run area is refused with EFAULT instead of SIGBUS on touch", () => {
    const script = fileURLToPath(new URL("./fixtures/vcpu-oversized-map.mjs", import.meta.url));
    const r = spawnSync(process.execPath, [script], { encoding: "utf8", timeout: 30_000 });
    expect({ status: r.status, signal: r.signal, out: r.stdout.trim().split("\n") }).toEqual({ status: 0, signal: null, out: ["EFAULT", "alive"] });
  });
});
