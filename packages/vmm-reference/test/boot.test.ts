import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest, runGuest } from "@ts-vmm/test-guests";
import { beforeAll, describe, expect, it } from "vitest";
import { Vmm, VmmError } from "../src/index.js";
import { oursLauncher } from "./ours-launcher.js";

const needs = { kvm: true, tools: ["gcc", "ld"] } as const;

describeWith(needs, "reference VMM boots the PVH micro-guest", () => {
  let elf = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
  }, 120_000);

  it("runs hello mode in-process: serial output and the debug-exit value", async () => {
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=hello", memMiB: 64 });
    let serial = "";
    const r = await vmm.run({ serial: (b) => { serial += Buffer.from(b).toString("latin1"); } });
    vmm.close();
    expect(r.detail).toBeUndefined();
    expect(r.reason).toBe("DebugExit");
    expect(r.guestExitValue).toBe(0);
    expect(serial).toContain("hello from the ts-vmm micro-guest");
    expect(serial).toContain("cpl=3");
    expect(r.exits["IoOut"]).toBeGreaterThan(10);
    expect(vmm.boot.protocol).toBe("pvh");
  });

  it("stop() ends a running guest with reason Stopped", async () => {
    // bench-exits spins on port writes long enough to be stopped in the middle.
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=bench-exits n=100000000", memMiB: 64 });
    const p = vmm.run({ serial: () => {} });
    setTimeout(() => vmm.stop(), 500);
    const r = await p;
    vmm.close();
    expect(r).toMatchObject({ reason: "Stopped" });
    expect(r.guestExitValue).toBeNull();
  });

  describeWith({ tools: ["qemu-system-x86_64"] }, "side by side with QEMU", () => {
    it("prints the same RESULT lines and exit value as QEMU microvm", async () => {
      const ours = await runGuest({ vmm: oursLauncher, kernel: elf, cmdline: "mode=hello", memMiB: 64, timeoutMs: 60_000 });
      const qemu = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=hello", memMiB: 64, timeoutMs: 60_000 });
      expect(ours.exitCode).toBe(0);
      expect(qemu.exitCode).toBe(0);
      // start_info and the command line sit at different addresses on purpose
      // (linux-loader's layout vs QEMU's); every other line must match.
      const results = (s: string): string[] =>
        s.split(/\r?\n/).filter((l) => (l.startsWith("RESULT") || l.startsWith("hello")) && !l.startsWith("RESULT start_info="));
      expect(results(ours.serial)).toEqual(results(qemu.serial));
      expect(results(ours.serial).length).toBeGreaterThan(1);
    }, 120_000);
  });
});

describe("bad configuration is a typed error", () => {
  it("names a kernel file that cannot be read", () => {
    expect(() => Vmm.create({ kernel: "/nonexistent/kernel" })).toThrow(expect.objectContaining({ code: "FileNotReadable" }) as Error);
  });

  it("rejects memory sizes out of range before touching KVM", () => {
    for (const memMiB of [0, 1, 1.5, -4, Number.NaN]) {
      expect(() => Vmm.create({ kernel: new Uint8Array(16), memMiB })).toThrow(VmmError);
    }
  });

  describeWith({ kvm: true }, "with KVM", () => {
    it("wraps a loader error for a kernel that is neither ELF nor bzImage", () => {
      const f = join(tmpdir(), `ts-vmm-garbage-${process.pid}`);
      writeFileSync(f, Buffer.alloc(8192, 0x5a));
      let err: unknown;
      try {
        Vmm.create({ kernel: f, memMiB: 16 });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VmmError);
      expect((err as VmmError).code).toBe("SetupFailed");
      expect((err as VmmError).cause).toMatchObject({ name: "LoaderError" });
    });
  });
});
