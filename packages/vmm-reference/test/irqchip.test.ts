import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Vmm, kvmMsiAddress, runCli, splitIrqchipRoutes, vmInterruptConfig, type IrqchipMode } from "../src/index.js";

vi.setConfig({ testTimeout: 90_000 });

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "interrupt controllers: split irqchip (user-space I/O APIC) and KVM's full irqchip", () => {
  let elf = "";
  let dir = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-irqchip-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const disk = (): string => {
    const p = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
    const fd = openSync(p, "w");
    ftruncateSync(fd, 16 << 20);
    closeSync(fd);
    return p;
  };

  async function selftest(irqchip: IrqchipMode | undefined, vcpus = 1): Promise<{ vmm: Vmm; serial: string; exitValue: number | null; exits: Record<string, number> }> {
    const vmm = Vmm.create({
      kernel: elf, cmdline: "mode=selftest irq=1", memMiB: 64, vcpus,
      virtio: [{ kind: "blk", path: disk() }, { kind: "rng" }],
      ...(irqchip ? { irqchip } : {}),
    });
    let serial = "";
    const r = await vmm.run({ serial: (b) => void (serial += Buffer.from(b).toString("latin1")) });
    vmm.close();
    return { vmm, serial, exitValue: r.guestExitValue, exits: r.exits };
  }

  it("split is the default: the guest programs the user-space I/O APIC, its pins become MSI routes, and every device interrupt arrives", async () => {
    const { vmm, serial, exitValue, exits } = await selftest(undefined);
    expect(exitValue, serial).toBe(0);
    for (const check of ["irq.setup", "blk.irq", "rng.irq"]) expect(serial, serial).toContain(`PASS ${check}`);
    const io = vmm.ioapic!;
    expect(io).toBeDefined();
    // The micro-guest routes one pin per device, 5 (blk) and 6 (rng), edge, to APIC id 0, and
    // masks each again (writing 0x10000) when its test is done: two route changes per pin. With a
    // split irqchip KVM has no I/O APIC, so `PASS blk.irq` above could only come through those routes.
    expect(io.metrics.routeUpdates).toBeGreaterThanOrEqual(4);
    for (const pin of [5, 6]) expect(io.entry(pin)).toMatchObject({ masked: true, level: false, destination: 0 });
    expect(io.metrics.badAccesses).toBe(0);
    expect(vmm.interruptErrors).toEqual([]);
    // Its registers are MMIO exits now (the kernel has no I/O APIC), a handful per pin.
    expect(exits["MmioWrite"] ?? 0).toBeGreaterThan(4);
    // The guest's interrupt handler reads InterruptStatus and writes InterruptAck: the vCPU
    // workers serve those on the transports' shared cells, without the main thread.
    expect(exits["MmioInterruptRegister"] ?? 0).toBeGreaterThan(0);
  });

  it("full: KVM's I/O APIC serves the same guest; the VMM has no I/O APIC of its own", async () => {
    const { vmm, serial, exitValue } = await selftest("full");
    expect(exitValue, serial).toBe(0);
    for (const check of ["irq.setup", "blk.irq", "rng.irq"]) expect(serial, serial).toContain(`PASS ${check}`);
    expect(vmm.ioapic).toBeUndefined();
  });

  it("split with 2 vCPUs: interrupts still reach vCPU 0 while the AP runs", async () => {
    const { serial, exitValue } = await selftest("split", 2);
    expect(exitValue, serial).toBe(0);
    expect(serial).toContain("PASS blk.irq");
  });

  it("the inhibit report follows the irqchip: split raises neither PIT_REINJ nor ExtINT, full has a PIT without reinjection", () => {
    expect(vmInterruptConfig(2, true, false)).toMatchObject({ irqchip: "split", pit: undefined, extInt: false });
    expect(vmInterruptConfig(2, true, false, "full")).toMatchObject({ irqchip: "full", pit: { reinject: false }, extInt: true });
  });

  it("a bad --irqchip is refused with status 2 and a sentence naming it, before anything runs", async () => {
    let err = "";
    const code = await runCli(["run", "--kernel", elf, "--irqchip", "kernel"], { write: () => true }, { write: (s: string) => void (err += s) });
    expect(code).toBe(2);
    expect(err).toContain('--irqchip must be split or full, got "kernel"');
    expect(() => Vmm.create({ kernel: elf, irqchip: "none" as IrqchipMode })).toThrow(/irqchip must be "split" or "full"/);
  });
});

describe("MSI addresses for KVM's routing table", () => {
  it("moves the extended destination id (address bits 5-11) to the upper half with 32-bit ids, drops it without", () => {
    // destination 0x2a5: low byte 0xa5 in bits 12-19, bits 8-14 (0x2) in bits 5-11, physical.
    const guest = 0xfee0_0000n | (0xa5n << 12n) | (0x2n << 5n);
    expect(kvmMsiAddress(guest, true)).toBe((0x200n << 32n) | 0xfee0_0000n | (0xa5n << 12n));
    expect(kvmMsiAddress(guest, false)).toBe(0xfee0_0000n | (0xa5n << 12n));
    // Nothing extended: unchanged either way (destination mode bit 2 kept).
    expect(kvmMsiAddress(0xfee0_3004n, true)).toBe(0xfee0_3004n);
    expect(splitIrqchipRoutes([{ pin: 5, address: guest, data: 0x31 }], true)).toEqual([{ gsi: 5, type: "msi", address: (0x200n << 32n) | 0xfee0_0000n | (0xa5n << 12n), data: 0x31 }]);
  });
});
