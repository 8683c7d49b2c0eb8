import { describe, expect, it } from "vitest";
import { terminalExit } from "./exit-reason.js";

const rip = (): string => "0xffffffff81000123";

describe("terminalExit", () => {
  it("decodes an emulation failure with the vCPU, the RIP and the data", () => {
    const r = terminalExit(2, { kind: "InternalError", suberror: 1, data: [0x10n, 0xc5f877n] }, rip);
    expect(r).toEqual({ reason: "Error", guestExitValue: null, detail: "vCPU 2: KVM emulation failure at RIP 0xffffffff81000123 (suberror 1, data [0x10, 0xc5f877])" });
    expect(terminalExit(0, { kind: "InternalError", suberror: 3, data: [] }, rip)?.detail).toMatch(/event delivery failed at RIP/);
    expect(terminalExit(0, { kind: "InternalError", suberror: 99, data: [] }, rip)?.detail).toMatch(/internal error suberror 99/);
  });

  it("maps a triple fault to Shutdown, system events to PowerOff / Reset / SystemEvent", () => {
    expect(terminalExit(0, { kind: "Shutdown" }, rip)).toMatchObject({ reason: "Shutdown", detail: "vCPU 0: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0xffffffff81000123" });
    expect(terminalExit(1, { kind: "Shutdown" }, () => "0xfff0")).toMatchObject({ reason: "Shutdown", detail: "vCPU 1: triple fault (KVM_EXIT_SHUTDOWN) (RIP reads 0xfff0: KVM reset the vCPU before reporting it, as it does on AMD)" });
    expect(terminalExit(1, { kind: "SystemEvent", type: 1, data: [] }, rip)?.reason).toBe("PowerOff");
    expect(terminalExit(1, { kind: "SystemEvent", type: 2, data: [] }, rip)?.reason).toBe("Reset");
    expect(terminalExit(1, { kind: "SystemEvent", type: 3, data: [] }, rip)).toMatchObject({ reason: "SystemEvent", detail: "vCPU 1: KVM system event crash" });
  });

  it("ends the run on a failed entry and on exits the loop does not know; continues after I/O, MMIO and Intr", () => {
    expect(terminalExit(0, { kind: "FailEntry", hardwareEntryFailureReason: 0x21n, cpu: 0 }, rip)?.detail).toBe("vCPU 0: VM entry failed at RIP 0xffffffff81000123, hardware reason 0x21");
    expect(terminalExit(0, { kind: "Hlt" }, rip)).toMatchObject({ reason: "Error", detail: expect.stringMatching(/unhandled exit \{"kind":"Hlt"\}/) as string });
    let asked = 0;
    const counting = (): string => { asked++; return "0x0"; };
    expect(terminalExit(0, { kind: "Intr" }, counting)).toBeUndefined();
    expect(terminalExit(0, { kind: "MmioWrite", addr: 0, data: new Uint8Array(4) } as never, counting)).toBeUndefined();
    expect(asked).toBe(0);
  });
});
