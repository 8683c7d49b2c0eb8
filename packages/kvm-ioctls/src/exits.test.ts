import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ExitDecoder, type VcpuExit } from "./exits.js";
import { ExitReason } from "./generated/kvm-constants.js";
import { RUN, RUN_EXIT } from "./layouts/kvm-run.js";

function page(reason: number, fill?: (dv: DataView, u8: Uint8Array) => void): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(3 * 4096);
  const dv = new DataView(sab);
  dv.setUint32(RUN.exitReason, reason, true);
  fill?.(dv, new Uint8Array(sab));
  return sab;
}

describe("ExitDecoder on synthetic kvm_run pages", () => {
  it("IoOut and IoIn with string I/O", () => {
    const sab = page(ExitReason.IO, (dv, u8) => {
      u8[RUN_EXIT.ioDirection] = 1;
      u8[RUN_EXIT.ioSize] = 2;
      dv.setUint16(RUN_EXIT.ioPort, 0x1f0, true);
      dv.setUint32(RUN_EXIT.ioCount, 3, true);
      dv.setBigUint64(RUN_EXIT.ioDataOffset, 4096n, true);
      u8.set([1, 2, 3, 4, 5, 6], 4096);
    });
    const d = new ExitDecoder(sab);
    const e = d.decode();
    expect(e).toMatchObject({ kind: "IoOut", port: 0x1f0, size: 2, count: 3 });
    expect([...(e as Extract<VcpuExit, { kind: "IoOut" }>).data]).toEqual([1, 2, 3, 4, 5, 6]);
    new Uint8Array(sab)[RUN_EXIT.ioDirection] = 0;
    const e2 = d.decode();
    expect(e2.kind).toBe("IoIn");
    // same offset and length: the view is reused and writes land in kvm_run
    (e2 as Extract<VcpuExit, { kind: "IoIn" }>).data[0] = 0xaa;
    expect(new Uint8Array(sab)[4096]).toBe(0xaa);
  });

  it("an I/O data offset outside the mapping is reported as Unknown, not read", () => {
    const sab = page(ExitReason.IO, (dv, u8) => {
      u8[RUN_EXIT.ioSize] = 4;
      dv.setUint32(RUN_EXIT.ioCount, 1, true);
      dv.setBigUint64(RUN_EXIT.ioDataOffset, 3n * 4096n - 2n, true);
    });
    expect(new ExitDecoder(sab).decode()).toMatchObject({ kind: "Unknown", reason: ExitReason.IO });
  });

  it("MMIO read/write with 64-bit addresses below 2^52", () => {
    const sab = page(ExitReason.MMIO, (dv, u8) => {
      dv.setBigUint64(RUN_EXIT.mmioPhysAddr, 0xf_ffff_fff0_0000n, true);
      dv.setUint32(RUN_EXIT.mmioLen, 8, true);
      u8[RUN_EXIT.mmioIsWrite] = 1;
      u8.set([9, 8, 7, 6, 5, 4, 3, 2], RUN_EXIT.mmioData);
    });
    const e = new ExitDecoder(sab).decode();
    expect(e).toMatchObject({ kind: "MmioWrite", address: 0xf_ffff_fff0_0000, len: 8 });
    expect([...(e as Extract<VcpuExit, { kind: "MmioWrite" }>).data]).toEqual([9, 8, 7, 6, 5, 4, 3, 2]);
  });

  it("every named exit kind", () => {
    const cases: [number, (dv: DataView) => void, Partial<VcpuExit> & { kind: string }][] = [
      [ExitReason.HLT, () => {}, { kind: "Hlt" }],
      [ExitReason.SHUTDOWN, () => {}, { kind: "Shutdown" }],
      [ExitReason.INTR, () => {}, { kind: "Intr" }],
      [ExitReason.IRQ_WINDOW_OPEN, () => {}, { kind: "IrqWindowOpen" }],
      [ExitReason.DIRTY_RING_FULL, () => {}, { kind: "DirtyRingFull" }],
      [ExitReason.FAIL_ENTRY, (dv) => { dv.setBigUint64(32, 0x80000021n, true); dv.setUint32(40, 3, true); }, { kind: "FailEntry", hardwareEntryFailureReason: 0x80000021n, cpu: 3 }],
      [ExitReason.EXCEPTION, (dv) => { dv.setUint32(32, 13, true); dv.setUint32(36, 8, true); }, { kind: "Exception", exception: 13, errorCode: 8 }],
      [ExitReason.INTERNAL_ERROR, (dv) => { dv.setUint32(32, 1, true); dv.setUint32(36, 2, true); dv.setBigUint64(40, 5n, true); dv.setBigUint64(48, 6n, true); }, { kind: "InternalError", suberror: 1, data: [5n, 6n] }],
      [ExitReason.SYSTEM_EVENT, (dv) => { dv.setUint32(32, 2, true); dv.setUint32(36, 1, true); dv.setBigUint64(40, 7n, true); }, { kind: "SystemEvent", type: 2, data: [7n] }],
      [ExitReason.IOAPIC_EOI, (dv) => { dv.setUint8(32, 0x31); }, { kind: "IoapicEoi", vector: 0x31 }],
      [ExitReason.HYPERCALL, (dv) => { dv.setBigUint64(32, 12n, true); dv.setBigUint64(40, 1n, true); }, { kind: "Hypercall", nr: 12n, args: [1n, 0n, 0n, 0n, 0n, 0n], flags: 0n }],
      [ExitReason.X86_RDMSR, (dv) => { dv.setUint32(44, 0x10, true); dv.setUint32(40, 2, true); }, { kind: "X86Rdmsr", index: 0x10, reason: 2, data: 0n }],
      [ExitReason.X86_WRMSR, (dv) => { dv.setUint32(44, 0x10, true); dv.setBigUint64(48, 99n, true); }, { kind: "X86Wrmsr", index: 0x10, data: 99n }],
      [ExitReason.DEBUG, (dv) => { dv.setUint32(32, 1, true); dv.setBigUint64(40, 0x1000n, true); }, { kind: "Debug", exception: 1, pc: 0x1000n }],
      [ExitReason.MEMORY_FAULT, (dv) => { dv.setBigUint64(32, 8n, true); dv.setBigUint64(40, 0x200000n, true); dv.setBigUint64(48, 4096n, true); }, { kind: "MemoryFault", flags: 8n, gpa: 0x200000, size: 4096 }],
      [12345, (dv) => { dv.setBigUint64(32, 77n, true); }, { kind: "Unknown", reason: 12345 }],
      [0, (dv) => { dv.setBigUint64(32, 77n, true); }, { kind: "Unknown", reason: 0, hardwareExitReason: 77n }],
      [27, (dv) => { dv.setBigUint64(32, 77n, true); }, { kind: "Unknown", reason: 27 }], // Hyper-V: raw reason, no stray union bytes
    ];
    for (const [reason, fill, want] of cases) {
      expect(new ExitDecoder(page(reason, fill)).decode()).toMatchObject(want);
    }
    // Reasons the decoder does not know carry only the raw reason (issue 14 item 7:
    // Hyper-V, Xen, bus-lock, notify and TPR exits got a meaningless hardwareExitReason).
    for (const reason of [12, 27, 33, 34, 37]) {
      expect(new ExitDecoder(page(reason, (dv) => dv.setBigUint64(32, 77n, true))).decode()).toStrictEqual({ kind: "Unknown", reason });
    }
  });

  it("internal error and system event data are capped at 16 words", () => {
    const sab = page(ExitReason.INTERNAL_ERROR, (dv) => dv.setUint32(36, 0xffffffff, true));
    expect((new ExitDecoder(sab).decode() as Extract<VcpuExit, { kind: "InternalError" }>).data.length).toBe(16);
  });

  it("MSR and hypercall answers are written where KVM reads them", () => {
    const sab = page(ExitReason.X86_RDMSR);
    const d = new ExitDecoder(sab);
    d.setMsrResult(0x1122334455667788n, true);
    const dv = new DataView(sab);
    expect(dv.getUint8(RUN_EXIT.msrError)).toBe(1);
    expect(dv.getBigUint64(RUN_EXIT.msrData, true)).toBe(0x1122334455667788n);
    d.setHypercallRet(0xffffffffffffffffn);
    expect(dv.getBigUint64(RUN_EXIT.hypercallRet, true)).toBe(0xffffffffffffffffn);
  });

  it("decodes any kvm_run contents without throwing or reading outside the page", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.nat(45), (bytes, reason) => {
        const sab = new SharedArrayBuffer(3 * 4096);
        new Uint8Array(sab).set(bytes);
        new DataView(sab).setUint32(RUN.exitReason, reason, true);
        const e = new ExitDecoder(sab).decode();
        if ("data" in e && e.data instanceof Uint8Array) {
          expect(e.data.byteOffset + e.data.byteLength).toBeLessThanOrEqual(sab.byteLength);
        }
        expect(typeof e.kind).toBe("string");
      }),
      { numRuns: 500 },
    );
  });
});
