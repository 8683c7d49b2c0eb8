// VM ioctls on real /dev/kvm: ioeventfd, irqfd, GSI routing, MSI, irq line,
// irqchip, PIT, clock, dirty log and ring, coalesced MMIO, devices, guest_memfd.
import { EventFd, MmapRegion, closeFd } from "@ts-vmm/vmm-sys-util";
import { describeKvm, describeWith, type HostFeature } from "@ts-vmm/test-utils";
import { afterEach, expect, it } from "vitest";
import { type TestVm, MMIO_BASE, asm, makeVm } from "./guest.js";
import {
  Cap,
  GUEST_MEMFD_FLAG_INIT_SHARED,
  GUEST_MEMFD_FLAG_MMAP,
  KVM_DEV_TYPE_VFIO,
  KVM_DEV_VFIO_FILE,
  KVM_DEV_VFIO_FILE_ADD,
  KVM_X86_SW_PROTECTED_VM,
  Kvm,
  KvmError,
  dirtyPages,
} from "../src/index.js";

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});
function vmWith(code: number[], opts: Parameters<typeof makeVm>[1] = {}): TestVm {
  const g = makeVm(code, opts);
  cleanups.push(() => g.close());
  return g;
}
function efd(): EventFd {
  const e = new EventFd({ nonBlocking: true });
  cleanups.push(() => e.close());
  return e;
}

/** Guest: ecx = n; loop { eax = ecx & 1; mov [rdi], eax } ; ud2 */
function mmioLoop(n: number, addr: number): number[] {
  const code = [...asm.movEcx(n), ...asm.movRdi(addr)];
  const loop = code.length;
  code.push(0x89, 0xc8, 0x83, 0xe0, 0x01, ...asm.movMemRdiEax, ...asm.decEcx);
  code.push(...asm.jnz(code.length, loop), ...asm.ud2);
  return code;
}

function waitFor(cond: () => boolean): boolean {
  const end = Date.now() + 2000;
  while (Date.now() < end) {
    if (cond()) return true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
  return cond();
}

function lapicIrr(lapic: Uint8Array, vector: number): boolean {
  const off = 0x200 + (vector >> 5) * 0x10;
  const word = new DataView(lapic.buffer, lapic.byteOffset).getUint32(off, true);
  return ((word >>> (vector & 31)) & 1) === 1;
}

describeKvm("VmFd on /dev/kvm", () => {
  it("ioeventfd on MMIO counts every guest write without exits", () => {
    const g = vmWith(mmioLoop(25, MMIO_BASE + 0x100));
    const e = efd();
    g.vm.registerIoevent(e, { kind: "mmio", address: MMIO_BASE + 0x100 }, { len: 4 });
    expect(g.vcpu.run().kind).toBe("Shutdown");
    expect(e.read()).toBe(25n);
    g.vm.unregisterIoevent(e, { kind: "mmio", address: MMIO_BASE + 0x100 }, { len: 4 });
    expect(() => g.vm.unregisterIoevent(e, { kind: "mmio", address: MMIO_BASE + 0x100 }, { len: 4 })).toThrow(KvmError);
  });

  it("ioeventfd with datamatch counts only matching writes; the rest exit", () => {
    const g = vmWith(mmioLoop(10, MMIO_BASE + 0x100));
    const e = efd();
    g.vm.registerIoevent(e, { kind: "mmio", address: MMIO_BASE + 0x100 }, { len: 4, datamatch: 1 });
    let exits = 0;
    for (;;) {
      const x = g.vcpu.run();
      if (x.kind !== "MmioWrite") {
        expect(x.kind).toBe("Shutdown");
        break;
      }
      expect([...x.data]).toEqual([0, 0, 0, 0]);
      exits++;
    }
    expect(exits).toBe(5);
    expect(e.read()).toBe(5n);
  });

  it("ioeventfd on a port", () => {
    const code = [...asm.movEcx(7), ...asm.movDx(0x510)];
    const loop = code.length;
    code.push(...asm.outDxAl, ...asm.decEcx, ...asm.jnz(code.length + 3, loop), ...asm.ud2);
    const g = vmWith(code);
    const e = efd();
    g.vm.registerIoevent(e, { kind: "pio", address: 0x510 });
    expect(g.vcpu.run().kind).toBe("Shutdown");
    expect(e.read()).toBe(7n);
  });

  it("irqfd through an MSI route sets the vector in the LAPIC IRR; signalMsi too", () => {
    const g = vmWith([...asm.ud2], { irqchip: true });
    const lapic = g.vcpu.getLapic();
    const dv = new DataView(lapic.buffer);
    dv.setUint32(0xf0, dv.getUint32(0xf0, true) | 0x100, true); // SVR: software-enable the APIC
    g.vcpu.setLapic(lapic);
    g.vm.setGsiRouting([
      { gsi: 10, type: "msi", address: 0xfee00000n, data: 0x45 },
      { gsi: 4, type: "irqchip", irqchip: 0, pin: 4 },
    ]);
    const e = efd();
    g.vm.registerIrqfd(e, 10);
    expect(lapicIrr(g.vcpu.getLapic(), 0x45)).toBe(false);
    e.write(1);
    expect(waitFor(() => lapicIrr(g.vcpu.getLapic(), 0x45))).toBe(true);
    g.vm.unregisterIrqfd(e, 10);

    expect(g.vm.signalMsi({ address: 0xfee00000n, data: 0x46 })).toBeGreaterThan(0);
    expect(lapicIrr(g.vcpu.getLapic(), 0x46)).toBe(true);
  });

  it("irqfd with a resample fd holds the line asserted until it is unregistered", () => {
    // kvm_ioapic_state.irr (u32 at 16). A resample irqfd asserts GSI 5 and keeps it
    // asserted until the guest EOIs (no guest here) or the irqfd is removed, which
    // de-asserts it (a plain irqfd only pulses it).
    const irr5 = (g: TestVm): boolean => (new DataView(g.vm.getIrqchip(2).buffer).getUint32(16, true) & (1 << 5)) !== 0;
    const g = vmWith([...asm.ud2], { irqchip: true });
    const e = efd();
    const r = efd();
    g.vm.registerIrqfd(e, 5, { resampleFd: r });
    expect(irr5(g)).toBe(false);
    e.write(1);
    expect(waitFor(() => irr5(g))).toBe(true);
    g.vm.unregisterIrqfd(e, 5);
    expect(waitFor(() => !irr5(g))).toBe(true);
  });

  it("setIrqLine raises the PIC's IRR; get/setIrqchip round-trip", () => {
    const g = vmWith([...asm.ud2], { irqchip: true });
    g.vm.setIrqLine(3, true);
    const pic = g.vm.getIrqchip(0);
    expect(pic[1]! & 0x08).toBe(0x08); // kvm_pic_state.irr
    g.vm.setIrqLine(3, false);
    pic[2] = 0xa5; // imr
    g.vm.setIrqchip(0, pic);
    expect(g.vm.getIrqchip(0)[2]).toBe(0xa5);
    const ioapic = g.vm.getIrqchip(2);
    expect(new DataView(ioapic.buffer).getBigUint64(0, true)).toBe(0xfec00000n); // base_address
  });

  it("split irqchip via enableCap", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    cleanups.push(() => { vm.close(); kvm.close(); });
    vm.enableSplitIrqchip(24);
    expect(() => vm.createIrqChip()).toThrow(KvmError);
    // The local APIC is in the kernel (KVM_GET_LAPIC works, and fails without any
    // irqchip); the PIC and IOAPIC are not (KVM_GET_IRQCHIP fails).
    const vcpu = vm.createVcpu(0);
    cleanups.unshift(() => vcpu.close());
    expect(vcpu.getLapic().byteLength).toBe(1024);
    expect(() => vm.getIrqchip(2)).toThrow(KvmError);
    const plain = kvm.createVm();
    const v2 = plain.createVcpu(0);
    expect(() => v2.getLapic()).toThrow(KvmError);
    v2.close();
    plain.close();
  });

  it("PIT: createPit2, state round trip, reinject control", () => {
    const g = vmWith([...asm.ud2], { irqchip: true, setup: (vm) => vm.createPit2({ speakerDummy: true }) });
    const st = g.vm.getPit2();
    expect(st.byteLength).toBe(112);
    g.vm.setPit2(st);
    g.vm.setPitReinject(false);
    g.vm.setPitReinject(true);
    const err = (() => { try { g.vm.createPit2(); } catch (e) { return e as KvmError; } return undefined; })();
    expect(err?.code).toBe("EEXIST");
    expect(err?.message).toBe("KVM_CREATE_PIT2 failed: EEXIST");
  });

  it("kvmclock get/set", () => {
    const g = vmWith([...asm.ud2]);
    const c = g.vm.getClock();
    expect(c.clock).toBeGreaterThanOrEqual(0n);
    g.vm.setClock({ clock: 5_000_000_000n, flags: 0, realtime: 0n, hostTsc: 0n });
    const c2 = g.vm.getClock();
    expect(c2.clock).toBeGreaterThanOrEqual(5_000_000_000n);
    expect(c2.clock).toBeLessThan(6_000_000_000n);
  });

  it("dirty log shows exactly the pages the guest wrote", () => {
    const pages = [0, 3, 7, 200];
    const code: number[] = [];
    for (const p of pages) code.push(...asm.movRdi(0x100000 + p * 4096 + 8), ...asm.movMemRdiAl);
    code.push(...asm.ud2);
    const g = vmWith(code, {
      slots: (vm, mem) => {
        vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, size: 0x100000 });
        vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: mem, memoryOffset: 0x100000, size: 0x100000, logDirtyPages: true });
      },
    });
    expect(dirtyPages(g.vm.getDirtyLog(1))).toEqual([]);
    expect(g.vcpu.run().kind).toBe("Shutdown");
    const bitmap = g.vm.getDirtyLog(1);
    expect(bitmap.byteLength).toBe(32); // 256 pages
    expect(dirtyPages(bitmap)).toEqual(pages);
    expect(dirtyPages(g.vm.getDirtyLog(1))).toEqual([]);
    expect(() => g.vm.getDirtyLog(0)).toThrow(expect.objectContaining({ code: "NotRegistered" }));
  });

  it("dirty ring: harvest the written pages, then reset", () => {
    const kvm = new Kvm();
    const ok = kvm.checkExtension(Cap.DIRTY_LOG_RING_ACQ_REL) > 0 || kvm.checkExtension(Cap.DIRTY_LOG_RING) > 0;
    kvm.close();
    expect(ok).toBe(true); // the probes found it on this machine kind
    const pages = [1, 2, 9];
    const code: number[] = [];
    for (const p of pages) code.push(...asm.movRdi(0x100000 + p * 4096), ...asm.movMemRdiAl);
    code.push(...asm.ud2);
    const g = vmWith(code, {
      setup: (vm) => vm.enableDirtyRing(65536),
      slots: (vm, mem) => {
        vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, size: 0x100000 });
        vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: mem, memoryOffset: 0x100000, size: 0x100000, logDirtyPages: true });
      },
    });
    expect(g.vcpu.run().kind).toBe("Shutdown");
    const got = g.vcpu.harvestDirtyRing().filter((d) => d.slot === 1).map((d) => Number(d.offset));
    expect(got.sort((a, b) => a - b)).toEqual(pages);
    expect(g.vm.resetDirtyRings()).toBeGreaterThanOrEqual(pages.length);
    expect(g.vcpu.harvestDirtyRing()).toEqual([]);
  });

  it("DirtyRingFull when the guest dirties more pages than the ring holds", () => {
    // ecx = 512; rdi = 0x200000; loop { mov [rdi], al; add rdi, 4096; dec ecx; jnz } ; ud2
    const code = [...asm.movEcx(512), ...asm.movRdi(0x200000)];
    const loop = code.length;
    code.push(...asm.movMemRdiAl, 0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, ...asm.decEcx);
    code.push(...asm.jnz(code.length, loop), ...asm.ud2);
    const mem2 = MmapRegion.anonymous(0x200000);
    cleanups.push(() => mem2.close());
    const g = vmWith(code, {
      setup: (vm) => vm.enableDirtyRing(4096),
      slots: (vm, mem) => {
        vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });
        vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x200000, memory: mem2, logDirtyPages: true });
      },
    });
    // Map 2-4 MiB too: PD[1] = 2 MiB page at 0x200000.
    new DataView(g.bytes.buffer).setBigUint64(0xb008, 0x200000n | 0x87n, true);
    const seen = new Set<number>();
    let fulls = 0;
    for (;;) {
      const e = g.vcpu.run();
      for (const d of g.vcpu.harvestDirtyRing()) if (d.slot === 1) seen.add(Number(d.offset));
      g.vm.resetDirtyRings();
      if (e.kind === "DirtyRingFull") {
        fulls++;
        continue;
      }
      expect(e.kind).toBe("Shutdown");
      break;
    }
    expect(fulls).toBeGreaterThan(0);
    expect(seen.size).toBe(512);
  });

  it("coalesced MMIO: writes are buffered in the ring, not exits", () => {
    const code: number[] = [...asm.movRdi(MMIO_BASE + 0x200)];
    for (let i = 1; i <= 3; i++) code.push(...asm.movEax(i * 0x11), ...asm.movMemRdiEax);
    code.push(...asm.ud2);
    const g = vmWith(code);
    g.vm.registerCoalescedMmio(MMIO_BASE + 0x200, 0x100);
    expect(g.vcpu.run().kind).toBe("Shutdown");
    const w = g.vcpu.drainCoalescedMmio();
    expect(w.map((x) => [x.address, x.len, x.data[0]])).toEqual([
      [MMIO_BASE + 0x200, 4, 0x11],
      [MMIO_BASE + 0x200, 4, 0x22],
      [MMIO_BASE + 0x200, 4, 0x33],
    ]);
    expect(g.vcpu.drainCoalescedMmio()).toEqual([]);
    g.vm.unregisterCoalescedMmio(MMIO_BASE + 0x200, 0x100);
  });

  it("setTssAddress and setIdentityMapAddress", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    cleanups.push(() => { vm.close(); kvm.close(); });
    vm.setTssAddress(0xfffbd000);
    vm.setIdentityMapAddress(0xfffbc000);
  });

  it("createDevice (VFIO) and device attributes", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    cleanups.push(() => { vm.close(); kvm.close(); });
    expect(vm.createDevice({ type: KVM_DEV_TYPE_VFIO, test: true })).toBeUndefined();
    const dev = vm.createDevice({ type: KVM_DEV_TYPE_VFIO })!;
    cleanups.push(() => dev.close());
    expect(dev.hasDeviceAttr({ group: KVM_DEV_VFIO_FILE, attr: KVM_DEV_VFIO_FILE_ADD })).toBe(true);
    expect(dev.hasDeviceAttr({ group: 99, attr: 0 })).toBe(false);
    const fd = new Uint8Array(4);
    new DataView(fd.buffer).setInt32(0, 0x7ffffff0, true); // not an open fd
    expect(() => dev.setDeviceAttr({ group: KVM_DEV_VFIO_FILE, attr: KVM_DEV_VFIO_FILE_ADD }, fd)).toThrow(expect.objectContaining({ code: "EBADF" }));
    expect(() => dev.getDeviceAttr({ group: KVM_DEV_VFIO_FILE, attr: KVM_DEV_VFIO_FILE_ADD })).toThrow(KvmError);
    expect(() => vm.createDevice({ type: 0xffff })).toThrow(KvmError);
  });

  // guest_memfd is a build option of the host's KVM (CONFIG_KVM_GUEST_MEMFD): this workplace's
  // kernel 6.18.44-fc-v1252 (2026-12-04) answers KVM_CAP_GUEST_MEMFD with 0, its earlier ones did not.
  const capOf = (cap: number): number => {
    const kvm = new Kvm();
    try {
      return kvm.checkExtension(cap);
    } finally {
      kvm.close();
    }
  };
  const guestMemfd: HostFeature = { name: "KVM_CAP_GUEST_MEMFD (a host KVM built with guest_memfd, Linux 6.8+)", present: () => capOf(Cap.GUEST_MEMFD) > 0 };
  const mappable: HostFeature = {
    name: "GUEST_MEMFD_FLAG_MMAP in KVM_CAP_GUEST_MEMFD_FLAGS (Linux 6.18+ built with guest_memfd)",
    present: () => (BigInt(capOf(Cap.GUEST_MEMFD_FLAGS)) & GUEST_MEMFD_FLAG_MMAP) === GUEST_MEMFD_FLAG_MMAP,
  };
  it("the guest_memfd probes agree with KVM: a default VM's KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP works where `mappable` says present, and fails (ENOTTY or EINVAL) where it says absent", () => {
    const kvm = new Kvm();
    cleanups.push(() => kvm.close());
    const vm = kvm.createVm();
    cleanups.push(() => vm.close());
    let err: unknown;
    try {
      const fd = vm.createGuestMemfd(0x200000, GUEST_MEMFD_FLAG_MMAP);
      cleanups.push(() => closeFd(fd));
    } catch (e) {
      err = e;
    }
    if (mappable.present()) {
      expect(err).toBeUndefined();
      expect(guestMemfd.present()).toBe(true);
    } else {
      expect(err).toMatchObject({ code: expect.stringMatching(/^(ENOTTY|EINVAL)$/) });
    }
    if (!guestMemfd.present()) expect(() => vm.createGuestMemfd(0x200000)).toThrow(expect.objectContaining({ code: expect.stringMatching(/^(ENOTTY|EINVAL)$/) }));
  });
  describeWith({ hostFeatures: [guestMemfd] }, "guest_memfd", () => {
  it("guest_memfd and setUserMemoryRegion2", () => {
    const kvm = new Kvm();
    cleanups.push(() => kvm.close());
    expect(kvm.checkExtension(Cap.GUEST_MEMFD)).toBeGreaterThan(0);
    const types = kvm.checkExtension(Cap.VM_TYPES);
    const type = types & (1 << KVM_X86_SW_PROTECTED_VM) ? KVM_X86_SW_PROTECTED_VM : 0;
    const vm = kvm.createVm({ type });
    cleanups.push(() => vm.close());
    let gmem: number;
    if (type === 0) {
      // A default VM gets guest_memfd only with GUEST_MEMFD_FLAG_MMAP (Linux 6.18).
      gmem = vm.createGuestMemfd(0x200000, GUEST_MEMFD_FLAG_MMAP);
    } else {
      gmem = vm.createGuestMemfd(0x200000);
    }
    expect(gmem).toBeGreaterThan(2);
    cleanups.push(() => closeFd(gmem));
    const mem = MmapRegion.anonymous(0x200000);
    cleanups.push(() => mem.close());
    vm.setUserMemoryRegion2({ slot: 0, guestPhysAddr: 0, memory: mem, guestMemfd: { fd: gmem } });
    cleanups.push(() => { vm.removeUserMemoryRegion(0); });
    expect(() => vm.createGuestMemfd(4095)).toThrow(expect.objectContaining({ code: "Unaligned" }));
  });
  });
  describeWith({ hostFeatures: [mappable] }, "guest_memfd with mmap", () => {

  it("a guest_memfd (GUEST_MEMFD_FLAG_MMAP, Linux 6.18) backs guest memory: guest writes land in it", () => {
    const kvm = new Kvm();
    const flags = kvm.checkExtension(Cap.GUEST_MEMFD_FLAGS);
    kvm.close();
    expect(BigInt(flags) & GUEST_MEMFD_FLAG_MMAP).toBe(GUEST_MEMFD_FLAG_MMAP);
    let gmem = -1;
    const g = vmWith([...asm.movRdi(0x100000 + 0x10), ...asm.movAl(0x55), ...asm.movMemRdiAl, ...asm.ud2], {
      slots: (vm, mem) => {
        vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, size: 0x100000 });
        gmem = vm.createGuestMemfd(0x100000, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
        const fd = gmem;
        cleanups.push(() => closeFd(fd));
        vm.setUserMemoryRegion2({ slot: 1, guestPhysAddr: 0x100000, memory: mem, memoryOffset: 0x100000, guestMemfd: { fd: gmem } });
      },
    });
    expect(g.vcpu.run().kind).toBe("Shutdown");
    const view = MmapRegion.fromFd(gmem, 0x100000, { shared: true });
    cleanups.push(() => view.close());
    expect(new Uint8Array(view.buffer)[0x10]).toBe(0x55);
    expect(g.bytes[0x100000 + 0x10]).toBe(0); // not the user-space mapping
  });
  });
});
