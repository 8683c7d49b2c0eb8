// vCPU 0's early window when the window itself throws (not the guest's doing: here its
// ThreadTimer cannot be created): vCPU 0 ends `Error` through the same path as any vCPU's
// end, its worker is told the run ended (it never runs the vCPU), the other vCPUs stop, and
// close() works (DESIGN.md, start-up).
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it, vi } from "vitest";
import { Vmm } from "../src/index.js";
import { rawElf } from "./raw-elf.js";

vi.mock("@ts-vmm/vmm-sys-util", async (importOriginal) => {
  const orig = await importOriginal<typeof import("@ts-vmm/vmm-sys-util")>();
  class ThreadTimer {
    static create(): never {
      throw new Error("timer_create failed (test)");
    }
  }
  return { ...orig, ThreadTimer };
});

/** `cli; hlt`: no exit to the VMM ever. */
const HALT = [0xfa, 0xf4, 0xeb, 0xfc];

describeWith({ kvm: true }, "vCPU 0's early window: a throw in the window", () => {
  it("ends the run Error (vCPU 0 (early window): …), stops the other vCPUs, and close() works", async () => {
    const vmm = Vmm.create({ kernel: rawElf(HALT), memMiB: 16, vcpus: 2, earlyVcpu: true, earlyVcpuMaxMs: 20 });
    const r = await vmm.run({ serial: () => {} });
    expect(r.reason).toBe("Error");
    expect(r.detail).toBe("vCPU 0 (early window): timer_create failed (test)");
    expect(vmm.earlyWindow?.outcome).toBe("ended");
    expect(vmm.state).toBe("Stopped");
    // vCPU 1's worker was stopped (its end state is in the result).
    expect(r.vcpus?.map((v) => v.id)).toContain(1);
    vmm.close();
  }, 30_000);
});
