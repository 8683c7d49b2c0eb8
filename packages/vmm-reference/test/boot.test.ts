import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
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
    expect(serial).toContain("RESULT exit=0\n");
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
    // Same binary, same command line (a fixed seed, in case a mode draws random numbers),
    // same memory: the whole serial output must match line for line, except these lines.
    const cmdline = (mode: string): string => `mode=${mode} seed=0x5eed`;
    for (const mode of ["hello", "selftest"]) {
      it(`${mode}: the whole serial output and the exit match QEMU microvm's, modulo the named differences`, async () => {
        const ours = await runGuest({ vmm: oursLauncher, kernel: elf, cmdline: cmdline(mode), memMiB: 64, timeoutMs: 60_000 });
        const qemu = await runGuest({ vmm: "qemu", kernel: elf, cmdline: cmdline(mode), memMiB: 64, timeoutMs: 60_000 });
        expect(ours.guestExit, `${ours.exitProblem}\n${ours.serial}\n${ours.vmmLog}`).toBe(0);
        expect(qemu.guestExit, `${qemu.exitProblem}\n${qemu.serial}\n${qemu.vmmLog}`).toBe(0);
        const a = comparable(ours.serial);
        const b = comparable(qemu.serial);
        expect(a).toEqual(b);
        expect(a).toContain(`RESULT cmdline="${cmdline(mode)}"`);
        expect(a.at(-1)).toBe("RESULT exit=0");
        if (mode === "selftest") expect(a).toContain("PASS mem.rw");
      }, 120_000);
    }
  });
});

/**
 * Lines that may differ between our VMM and QEMU, each with the reason. A
 * line matching one is compared by its key only (it must be there, at the
 * same place, on both).
 */
const NAMED_DIFFERENCES: ReadonlyArray<{ readonly line: RegExp; readonly why: string }> = [
  {
    line: /^RESULT start_info=/,
    why: "start_info and the command line sit where each VMM's loader puts them (linux-loader's layout vs QEMU's 0xf31e0/0xeff60)",
  },
];

function comparable(serial: string): string[] {
  const lines = serial.split(/\r?\n/);
  if (lines.at(-1) === "") lines.pop();
  return lines.map((l) => {
    const d = NAMED_DIFFERENCES.find((n) => n.line.test(l));
    return d ? `<${d.line.source}: may differ: ${d.why}>` : l;
  });
}

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
      const dir = mkdtempSync(join(tmpdir(), "ts-vmm-garbage-"));
      const f = join(dir, "kernel");
      writeFileSync(f, Buffer.alloc(8192, 0x5a));
      let err: unknown;
      try {
        Vmm.create({ kernel: f, memMiB: 16 });
      } catch (e) {
        err = e;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      expect(err).toBeInstanceOf(VmmError);
      expect((err as VmmError).code).toBe("SetupFailed");
      expect((err as VmmError).cause).toMatchObject({ name: "LoaderError" });
    });
  });
});
