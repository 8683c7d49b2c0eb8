import { describe, expect, it } from "vitest";
import { describeWith } from "./gate.js";
import { parseInfoRegisters, startQemu } from "./qmp.js";

describe("parseInfoRegisters", () => {
  it("reads general, control and segment registers", () => {
    const text = [
      "EAX=00000000 EBX=00006000 ECX=00000000 EDX=00000000",
      "ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000",
      "EIP=01000a30 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0",
      "ES =0018 00000000 ffffffff 00cf9300 DPL=0 DS   [-WA]",
      "CS =0010 00000000 ffffffff 00cf9b00 DPL=0 CS32 [-RA]",
      "TR =0000 00000000 0000ffff 00008b00 DPL=0 TSS32-busy",
      "GDT=     00000500 00000027",
      "CR0=00000011 CR2=00000000 CR3=00000000 CR4=00000000",
      "EFER=0000000000000000",
    ].join("\n");
    const r = parseInfoRegisters(text);
    expect(r["EBX"]).toBe(0x6000n);
    expect(r["EIP"]).toBe(0x1000a30n);
    expect(r["CS.sel"]).toBe(0x10n);
    expect(r["CS.flags"]).toBe(0xcf9b00n);
    expect(r["ES.limit"]).toBe(0xffffffffn);
    expect(r["GDT.base"]).toBe(0x500n);
    expect(r["GDT.limit"]).toBe(0x27n);
    expect(r["CR0"]).toBe(0x11n);
    expect(r["EFER"]).toBe(0n);
  });
});

describeWith({ tools: ["qemu-system-x86_64"] }, "Qmp against a paused QEMU", () => {
  it("negotiates, reads registers and memory, and sees events", async () => {
    const q = await startQemu(["-S", "-M", "microvm", "-accel", "tcg", "-m", "16", "-nodefaults", "-no-user-config"]);
    try {
      expect(q.qmp.version?.major).toBeGreaterThanOrEqual(7);
      const status = await q.qmp.execute<{ status: string; running: boolean }>("query-status");
      expect(status).toMatchObject({ status: "prelaunch", running: false });
      const regs = await q.qmp.registers();
      expect(regs["EIP"] ?? regs["RIP"]).toBe(0xfff0n); // reset vector, CS base 0xffff0000
      expect(regs["CS.sel"]).toBe(0xf000n);
      const small = await q.qmp.readPhys(0x1000, 16);
      const big = await q.qmp.readPhys(0x1000, 4096);
      expect(small).toEqual(big.subarray(0, 16));
      expect(big.byteLength).toBe(4096);
      await q.qmp.execute("stop");
      await q.qmp.execute("cont");
      await expect(q.qmp.waitEvent("RESUME", 5000)).resolves.toMatchObject({ event: "RESUME" });
      await expect(q.qmp.execute("no-such-command")).rejects.toMatchObject({ class: "CommandNotFound" });
    } finally {
      await q.stop();
    }
    expect(q.process.exitCode !== null || q.process.signalCode !== null).toBe(true);
  });
});
