import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest, runGuest } from "@ts-vmm/test-guests";
import { beforeAll, expect, it } from "vitest";
import { runCli, Vmm } from "../src/index.js";
import { oursLauncher } from "./ours-launcher.js";

const needs = { kvm: true, tools: ["gcc", "ld"] } as const;

const key = (e: { function: number; index: number }): string => `${e.function.toString(16)}.${e.index}`;

describeWith(needs, "SMP on the reference VMM", () => {
  let elf = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
  }, 120_000);

  it.each([2, 4])("the micro-guest's smp mode starts every AP through INIT-SIPI and each counts (%i vCPUs)", async (n) => {
    const r = await runGuest({ vmm: oursLauncher, kernel: elf, cmdline: `mode=smp cpus=${n}`, vcpus: n, memMiB: 64, timeoutMs: 60_000 });
    expect(r.exitCode).toBe(0); // the debug-exit value
    expect(r.results.values["smp.lapic_id"]).toBe("0");
    expect(r.results.values["smp.started"]).toBe(String(n - 1));
    expect(r.results.passed).toEqual(expect.arrayContaining(["smp.started", "smp.counting"]));
    for (let i = 1; i < n; i++) expect(Number(r.results.values[`smp.ap${i}_count_delta`])).toBeGreaterThan(0);
  }, 90_000);

  it("reports missing APs: cpus=3 on 2 vCPUs fails in the guest", async () => {
    const r = await runGuest({ vmm: oursLauncher, kernel: elf, cmdline: "mode=smp cpus=3", vcpus: 2, memMiB: 64, timeoutMs: 60_000 });
    expect(r.results.values["smp.started"]).toBe("1");
    expect(r.results.failed.map((f) => f.check)).toContain("smp.started");
  }, 90_000);

  it("stop() kicks every vCPU, APs still waiting for INIT-SIPI included", async () => {
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=bench-exits n=100000000", memMiB: 64, vcpus: 4 });
    const p = vmm.run({ serial: () => {} });
    setTimeout(() => vmm.stop(), 500);
    const r = await p;
    vmm.close();
    expect(r.reason).toBe("Stopped");
  }, 30_000);

  it("each vCPU holds its own normalized CPUID (KVM_GET_CPUID2 read-back): APIC id = vCPU id, KVM leaves, topology", () => {
    const vmm = Vmm.create({ kernel: elf, memMiB: 16, vcpus: 3 });
    try {
      for (let id = 0; id < 3; id++) {
        const back = vmm.readCpuid(id);
        const set = vmm.vcpuSetup[id]!.cpuid;
        // The leaves normalizeCpuid writes come back as set. (This host's kvm_pvm is not a
        // faithful mirror elsewhere: it leaves out 0x1D, 0x1E and 0x24, and returns host
        // feature bits in 1:ECX, 7.0 and 0xD; so the whole table is not compared.)
        const setBy = new Map(set.map((e) => [key(e), e]));
        const backBy = new Map(back.map((e) => [key(e), e]));
        for (const k of ["b.0", "b.1", "b.2", "40000000.0", "40000001.0", "80000008.0"]) {
          if (!setBy.has(k)) continue;
          expect([k, backBy.get(k)]).toEqual([k, setBy.get(k)]);
        }
        expect(backBy.get("1.0")!.ebx).toBe(setBy.get("1.0")!.ebx);
        expect(vmm.vcpuSetup[id]!.msrsRefused).toEqual([]); // every boot MSR is one KVM emulates
        const l1 = back.find((e) => e.function === 1)!;
        expect(l1.ebx >>> 24).toBe(id);
        expect((l1.ebx >>> 16) & 0xff).toBe(3);
        expect(l1.ecx >>> 31).toBe(1);
        const sig = back.find((e) => e.function === 0x4000_0000)!;
        expect(Buffer.from(new Uint32Array([sig.ebx, sig.ecx, sig.edx]).buffer).toString("latin1")).toBe("KVMKVMKVM\0\0\0");
        const b1 = back.find((e) => e.function === 0xb && e.index === 1);
        if (b1) expect([b1.ebx, b1.edx]).toEqual([3, id]);
      }
      expect(() => vmm.readCpuid(3)).toThrow(expect.objectContaining({ code: "InvalidConfig" }) as Error);
    } finally {
      vmm.close();
    }
    expect(() => vmm.readCpuid(0)).toThrow(expect.objectContaining({ code: "InvalidState" }) as Error);
  });

  it("refuses vCPU counts out of range, in the API and on the command line", async () => {
    for (const vcpus of [0, 1025, 1.5]) {
      expect(() => Vmm.create({ kernel: elf, vcpus })).toThrow(expect.objectContaining({ code: "InvalidConfig" }) as Error);
    }
    // KVM's in-kernel I/O APIC has 8-bit destinations: more than 254 vCPUs need the split irqchip.
    expect(() => Vmm.create({ kernel: elf, vcpus: 255, irqchip: "full" })).toThrow(/need APIC ids above 254.*use the split irqchip/);
    for (const [arg, msg] of [["x", "--vcpus must be a whole number"], ["0", "--vcpus must be a whole number"], ["5000", '--vcpus must be a whole number from 1 to 1024, got "5000"']] as const) {
      let err = "";
      const code = await runCli(["run", "--kernel", elf, "--vcpus", arg], { write: () => true }, { write: (t: string) => { err += t; } });
      expect([arg, code]).toEqual([arg, 2]);
      expect(err).toContain(msg);
    }
  });

  it("256 vCPUs (APIC ids up to 255): split irqchip with 32-bit ids, x2APIC MADT entry and CPUID, every AP starts", async () => {
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=smp cpus=256 ap_park=1 ap_wait=300000000000", memMiB: 64, vcpus: 256 });
    let serial = "";
    try {
      // What we set (this host's kvm_pvm reads 0xB back with the physical CPU's APIC id).
      const last = vmm.vcpuSetup[255]!.cpuid;
      const b1 = last.find((e) => e.function === 0xb && e.index === 1);
      if (b1) expect([b1.ebx, b1.edx]).toEqual([256, 255]); // 256 cores, x2APIC id 255
      // KVM_FEATURE_MSI_EXT_DEST_ID: the guest may use 15-bit destinations, which our routes carry.
      expect((last.find((e) => e.function === 0x4000_0001)!.eax >>> 15) & 1).toBe(1);
      const madt = vmm.boot.writes.find((w) => w.what === "ACPI MADT")!.data;
      const x2apicIds: number[] = [];
      for (let o = 44; o < madt.byteLength; o += madt[o + 1]!) if (madt[o] === 9) x2apicIds.push(new DataView(madt.buffer, madt.byteOffset + o).getUint32(4, true));
      expect(x2apicIds).toEqual([255]);
      const r = await vmm.run({ serial: (b) => void (serial += Buffer.from(b).toString("latin1")) });
      expect(r.guestExitValue, serial).toBe(0);
    } finally {
      vmm.close();
    }
    expect(serial).toContain("RESULT smp.started=255");
    expect(serial).toContain("PASS smp.started");
  }, 120_000);
});
