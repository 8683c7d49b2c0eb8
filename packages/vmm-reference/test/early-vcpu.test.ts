// vCPU 0's early window (DESIGN.md, start-up): Vmm.run runs vCPU 0 on the main thread until
// its worker is ready, then hands it over. Most tests here ask for it (earlyVcpu: true) with a
// worker that is not prestarted, so it needs its whole isolate start (~25–60 ms here) and the
// window is long enough to see; by default there is a window only with a prestarted worker.
// Hand-assembled CPL0 guests (raw-elf.ts, entered in long mode, 4 GiB identity-mapped).
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { beforeAll, expect, it } from "vitest";
import { Vmm } from "../src/index.js";
import type { RunResult } from "../src/index.js";
import { closePrestartedVcpuWorkers, prestartVcpuWorkers } from "../src/worker-pool.js";
import { rawElf } from "./raw-elf.js";

const le32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

/** Writes N bytes to COM1, byte i = '0' + (i & 63), then leaves through debug-exit with 0x2a. */
const counting = (n: number): number[] => [
  0x31, 0xc9, //                  0: xor ecx, ecx
  0x66, 0xba, 0xf8, 0x03, //      2: mov dx, 0x3f8
  0x88, 0xc8, //                  6: mov al, cl
  0x24, 0x3f, //                  8: and al, 63
  0x04, 0x30, //                 10: add al, '0'
  0xee, //                       12: out dx, al
  0xff, 0xc1, //                 13: inc ecx
  0x81, 0xf9, ...le32(n), //     15: cmp ecx, n
  0x75, 0xef, //                 21: jne 6
  0xb0, 0x2a, 0xe6, 0xf4, //     23: mov al, 0x2a; out 0xf4, al
  0xeb, 0xfe,
];
const expected = (n: number): string => Array.from({ length: n }, (_, i) => String.fromCharCode(0x30 + (i & 63))).join("");
/** `cli; hlt`: no exit to the VMM ever (the in-kernel LAPIC keeps the halted vCPU in KVM). */
const HALT = [0xfa, 0xf4, 0xeb, 0xfc];
/** Writes 'x' to COM1 forever. */
const PRINT_FOREVER = [0x66, 0xba, 0xf8, 0x03, 0xb0, 0x78, 0xee, 0xeb, 0xfd];

const text = (): { sink: (b: Uint8Array) => void; readonly value: string } => {
  let s = "";
  return { sink: (b) => { s += Buffer.from(b).toString("latin1"); }, get value() { return s; } };
};

describeWith({ kvm: true }, "vCPU 0's early window", () => {
  it("serial output written across the handover arrives complete and in order; the counters hold the window's exits", async () => {
    const n = 20_000;
    // A long bound: the window must end because the worker is ready, not by the clock.
    const vmm = Vmm.create({ kernel: rawElf(counting(n)), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    const out = text();
    let during: ReturnType<Vmm["metrics"]> | undefined;
    const r = await vmm.run({ serial: (b) => { out.sink(b); during ??= vmm.metrics(); } });
    vmm.close();
    expect(r.reason, r.detail).toBe("DebugExit");
    expect(r.guestExitValue).toBe(0x2a);
    expect(out.value.length).toBe(n);
    expect(out.value).toBe(expected(n));
    const w = vmm.earlyWindow;
    expect(w?.outcome).toBe("handed");
    // Some of the bytes went out on the main thread, the rest from the worker.
    expect(w!.exits).toBeGreaterThan(0);
    expect(w!.exits).toBeLessThan(n);
    // One IoOut per byte and the debug-exit, from both threads.
    expect(r.exits["IoOut"]).toBe(n + 1);
    expect(vmm.metrics().exits.byReason["IoOut"]).toBe(n + 1);
    // The first bytes were delivered while the window ran (the metrics read then saw its exits).
    expect(during?.exits.total ?? 0).toBeGreaterThan(0);
  }, 60_000);

  it("a guest that exits through debug-exit in the window ends the run there; the worker never runs", async () => {
    const vmm = Vmm.create({ kernel: rawElf([0xb0, 0x07, 0xe6, 0xf4, 0xeb, 0xfe]), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    const r = await vmm.run({ serial: () => {} });
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 7 });
    expect(vmm.earlyWindow).toMatchObject({ outcome: "ended", exits: 1 });
    expect(r.exits["IoOut"]).toBe(1);
    expect(vmm.state).toBe("Stopped");
  });

  it("ACPI power-off and an i8042 reset in the window end the run with their reasons", async () => {
    // mov dx, 0x3c0; mov al, SLP_EN | SLP_TYP 5 << 2; out dx, al
    const off = Vmm.create({ kernel: rawElf([0x66, 0xba, 0xc0, 0x03, 0xb0, 0x34, 0xee, 0xeb, 0xfe]), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    const a = await off.run({ serial: () => {} });
    off.close();
    expect(a.reason, a.detail).toBe("PowerOff");
    expect(a.detail).toContain("ACPI S5");
    expect(off.earlyWindow?.outcome).toBe("ended");
    // mov al, 0xfe; out 0x64, al
    const reset = Vmm.create({ kernel: rawElf([0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    const b = await reset.run({ serial: () => {} });
    reset.close();
    expect(b.reason, b.detail).toBe("Reset");
    expect(reset.earlyWindow?.outcome).toBe("ended");
  });

  it("serves a virtio-mmio register read inline in the window", async () => {
    // mov ebx, 0xd0001000; mov eax, [rbx] (MagicValue); cmp eax, "virt"; jne fail; out 0xf4 with 0x11, else 0x22
    const code = [0xbb, ...le32(0xd000_1000), 0x8b, 0x03, 0x3d, ...le32(0x74726976), 0x75, 0x04, 0xb0, 0x11, 0xe6, 0xf4, 0xb0, 0x22, 0xe6, 0xf4, 0xeb, 0xfe];
    const vmm = Vmm.create({ kernel: rawElf(code), memMiB: 16, virtio: [{ kind: "rng" }], earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    const r = await vmm.run({ serial: () => {} });
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x11 });
    expect(vmm.earlyWindow?.outcome).toBe("ended");
    expect(r.exits["MmioRead"]).toBe(1);
  });

  it("stop() during the window (from the serial callback) ends the run Stopped", async () => {
    const vmm = Vmm.create({ kernel: rawElf(PRINT_FOREVER), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    let seen = 0;
    const r = await vmm.run({ serial: (b) => { seen += b.length; vmm.stop(); } });
    vmm.close();
    expect(r.reason, r.detail).toBe("Stopped");
    expect(seen).toBeGreaterThan(0);
    expect(vmm.earlyWindow?.outcome).toBe("ended");
  });

  it("a halted guest (no exits) still hands over when the worker is ready, and stop() then ends it", async () => {
    const vmm = Vmm.create({ kernel: rawElf(HALT), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 10_000 });
    const t0 = performance.now();
    const p = vmm.run({ serial: () => {} });
    // run() returns after the window: the worker's kick got the main thread out of KVM_RUN.
    // Were the kick broken, the window's hard bound (10 s here) would end it given-up: this
    // fails instead of hanging (early-vcpu-bound.test.ts covers the bound itself).
    const windowMs = performance.now() - t0;
    expect(vmm.earlyWindow?.outcome).toBe("handed");
    expect(windowMs).toBeLessThan(5_000);
    await vmm.whenRunning();
    setTimeout(() => vmm.stop(), 50);
    const r: RunResult = await p;
    vmm.close();
    expect(r.reason, r.detail).toBe("Stopped");
    // The guest halted right away: only the kick's Intr exits (main thread, then the stop's in the worker).
    expect(r.exits["IoOut"] ?? 0).toBe(0);
    expect(r.exits["Intr"]).toBeGreaterThanOrEqual(2);
  }, 30_000);

  it("the window gives up at its bound when the guest keeps exiting; the worker takes the vCPU when ready", async () => {
    const n = 20_000;
    const vmm = Vmm.create({ kernel: rawElf(counting(n)), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: 1 });
    const out = text();
    const r = await vmm.run({ serial: out.sink });
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x2a });
    expect(out.value).toBe(expected(n));
    expect(vmm.earlyWindow?.outcome).toBe("given-up");
    expect(vmm.earlyWindow!.exits).toBeGreaterThan(0);
    expect(r.exits["IoOut"]).toBe(n + 1);
  }, 60_000);

  it("by default only with a prestarted worker; earlyVcpu: false and TS_VMM_EARLY_VCPU=0 run vCPU 0 in its worker only, as before", async () => {
    const runOnce = async (config: { earlyVcpu?: boolean }, prestart: boolean): Promise<{ r: RunResult; vmm: Vmm; out: string }> => {
      const vmm = Vmm.create({ kernel: rawElf(counting(500)), memMiB: 16, ...config });
      if (prestart) prestartVcpuWorkers(1);
      const out = text();
      const r = await vmm.run({ serial: out.sink });
      vmm.close();
      return { r, vmm, out: out.value };
    };
    const saved = process.env["TS_VMM_EARLY_VCPU"];
    delete process.env["TS_VMM_EARLY_VCPU"];
    try {
      const off = await runOnce({ earlyVcpu: false }, true);
      expect(off.r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x2a });
      expect(off.out).toBe(expected(500));
      expect(off.vmm.earlyWindow).toBeUndefined();
      // The default: a window with a prestarted worker, none with one run() spawns.
      const fresh = await runOnce({}, false);
      expect(fresh.r.reason).toBe("DebugExit");
      expect(fresh.vmm.earlyWindow).toBeUndefined();
      const pre = await runOnce({}, true);
      expect(pre.r.reason).toBe("DebugExit");
      expect(pre.out).toBe(expected(500));
      expect(pre.vmm.earlyWindow).toBeDefined();
      process.env["TS_VMM_EARLY_VCPU"] = "0";
      const env = await runOnce({}, true);
      expect(env.r.reason).toBe("DebugExit");
      expect(env.vmm.earlyWindow).toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env["TS_VMM_EARLY_VCPU"];
      else process.env["TS_VMM_EARLY_VCPU"] = saved;
      await closePrestartedVcpuWorkers();
    }
  }, 60_000);

  it("refuses an out-of-range earlyVcpuMaxMs", () => {
    expect(() => Vmm.create({ kernel: rawElf(HALT), memMiB: 16, earlyVcpuMaxMs: 0 })).toThrow(/earlyVcpuMaxMs/);
  });
});

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "vCPU 0's early window with the micro-guest", () => {
  let elf = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
  }, 120_000);

  it("hello mode: the whole output, with or without the window", async () => {
    const outputs: string[] = [];
    for (const earlyVcpu of [true, false]) {
      const vmm = Vmm.create({ kernel: elf, cmdline: "mode=hello", memMiB: 64, earlyVcpu });
      prestartVcpuWorkers(1); // as the ts-vmm binary does: the window lasts the rest of its start
      const out = text();
      const r = await vmm.run({ serial: out.sink });
      vmm.close();
      expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0 });
      expect(vmm.earlyWindow === undefined).toBe(!earlyVcpu);
      outputs.push(out.value);
    }
    expect(outputs[0]).toContain("hello from the ts-vmm micro-guest");
    expect(outputs[0]).toBe(outputs[1]);
  }, 60_000);
});
