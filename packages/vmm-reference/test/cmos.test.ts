// The CMOS RTC on real KVM: hand-assembled guests read the clock through ports
// 0x70/0x71 and print the bytes on COM1; --cmos off leaves the ports floating
// and tells the guest in the FADT.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { runCli } from "../src/cli.js";
import { Vmm, decodeSnapshotFile, encodeSnapshotFile, type SnapshotState } from "../src/index.js";
import { exitByte, rawElf } from "./raw-elf.js";

/** mov al, reg; out 0x70, al; in al, 0x71; mov dx, 0x3f8; out dx, al (the byte goes to COM1). */
const readReg = (reg: number): number[] => [0xb0, reg, 0xe6, 0x70, 0xe4, 0x71, 0x66, 0xba, 0xf8, 0x03, 0xee];
/** mov al, reg; out 0x70, al; mov al, v; out 0x71, al. */
const writeReg = (reg: number, v: number): number[] => [0xb0, reg, 0xe6, 0x70, 0xb0, v, 0xe6, 0x71];
/** Century, year, month, day, hours, minutes, seconds, then registers A, B, D. */
const TIME_REGS = [0x32, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00, 0x0a, 0x0b, 0x0d];
const READ_TIME = [...TIME_REGS.flatMap(readReg), ...exitByte(0)];
const unbcd = (v: number): number => (v >> 4) * 10 + (v & 0xf);
/** The UTC instant the BCD, 24-hour registers name. */
const instant = (b: readonly number[]): number => {
  const [c, y, mo, d, h, mi, s] = b.map(unbcd) as [number, number, number, number, number, number, number];
  const t = new Date(0);
  t.setUTCFullYear(c * 100 + y, mo - 1, d);
  t.setUTCHours(h, mi, s, 0);
  return t.getTime();
};

const runGuest = async (code: number[], cmos?: boolean): Promise<{ bytes: number[]; vmm: Vmm }> => {
  const vmm = Vmm.create({ kernel: rawElf(code), memMiB: 16, ...(cmos !== undefined ? { cmos } : {}) });
  const bytes: number[] = [];
  const r = await vmm.run({ serial: (b) => bytes.push(...b) });
  expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0 });
  return { bytes, vmm };
};

describeWith({ kvm: true }, "CMOS RTC on KVM", () => {
  it("a guest reads the host's UTC date and time through ports 0x70/0x71 (BCD, 24 h), registers A, B and D as at power-on", async () => {
    const before = Date.now();
    const { bytes, vmm } = await runGuest(READ_TIME);
    const after = Date.now();
    try {
      expect(bytes).toHaveLength(TIME_REGS.length);
      const t = instant(bytes);
      // The registers hold whole seconds: the guest's time is within [before - 1 s, after].
      expect(t).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
      expect(t).toBeLessThanOrEqual(after);
      const [a, b, d] = bytes.slice(7);
      expect(a! & 0x7f).toBe(0x26); // divider 010, rate 1024 Hz
      expect(b).toBe(0x02); // BCD, 24 h
      expect(d).toBe(0x80);
      const m = vmm.metrics();
      expect(m.exits.byDevice["cmos"]).toBe(TIME_REGS.length * 2); // one index write, one data read each
      expect(m.exits.byDevice["pio-unknown"]).toBe(0);
    } finally {
      vmm.close();
    }
  }, 30_000);

  it("a guest sets the time with SET (binary mode) and reads its own time back", async () => {
    const code = [
      ...writeReg(0x0b, 0x86), // SET, binary, 24 h
      ...writeReg(0x32, 19), ...writeReg(0x09, 99), ...writeReg(0x08, 12), ...writeReg(0x07, 31),
      ...writeReg(0x04, 23), ...writeReg(0x02, 59), ...writeReg(0x00, 30),
      ...writeReg(0x0b, 0x06), // clear SET: runs from 1999-12-31 23:59:30
      ...[0x32, 0x09, 0x08, 0x07, 0x04, 0x02].flatMap(readReg),
      ...exitByte(0),
    ];
    const { bytes, vmm } = await runGuest(code);
    vmm.close();
    expect(bytes).toEqual([19, 99, 12, 31, 23, 59]);
  }, 30_000);

  it("cmos: false: the ports float (0xff) and the FADT in guest memory says CMOS RTC Not Present", async () => {
    const { bytes, vmm } = await runGuest(READ_TIME, false);
    try {
      expect(bytes).toEqual(TIME_REGS.map(() => 0xff));
      expect(vmm.metrics().exits.byDevice["cmos"]).toBe(TIME_REGS.length * 2); // counted by range, no device behind it
      const fadtAt = vmm.boot.writes.find((w) => w.what === "ACPI FADT")!.addr;
      const fadt = new Uint8Array(276);
      vmm.memory.read(fadtAt, fadt);
      expect(String.fromCharCode(...fadt.subarray(0, 4))).toBe("FACP");
      const v = new DataView(fadt.buffer);
      expect([v.getUint8(108), v.getUint16(109, true) & (1 << 5)]).toEqual([0, 1 << 5]);
    } finally {
      vmm.close();
    }
    // and with the CMOS (the default): CENTURY 0x32, the flag clear
    const on = Vmm.create({ kernel: rawElf(READ_TIME), memMiB: 16 });
    try {
      const fadt = new Uint8Array(276);
      on.memory.read(on.boot.writes.find((w) => w.what === "ACPI FADT")!.addr, fadt);
      const v = new DataView(fadt.buffer);
      expect([v.getUint8(108), v.getUint16(109, true) & (1 << 5)]).toEqual([0x32, 0]);
    } finally {
      on.close();
    }
  }, 30_000);

  it("the CLI's --cmos off removes the device; --cmos on (the default) has it; a bad value is a usage error", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-cmos-"));
    try {
      const kernel = join(dir, "cmos.elf");
      writeFileSync(kernel, rawElf(READ_TIME));
      const run = async (...flags: string[]): Promise<{ code: number; out: number[]; err: string }> => {
        const out: number[] = [];
        let err = "";
        const o = new Writable({ write(c: Buffer, _e, cb) { out.push(...c); cb(); } });
        const e = new Writable({ write(c: Buffer, _e, cb) { err += c.toString(); cb(); } });
        const code = await runCli(["run", "--kernel", kernel, "--mem", "16", ...flags], o, e);
        return { code, out, err };
      };
      const off = await run("--cmos", "off");
      expect(off.code).toBe(1); // debug-exit 0 -> (0 << 1) | 1
      expect(off.out).toEqual(TIME_REGS.map(() => 0xff));
      const on = await run("--cmos", "on");
      expect(on.code).toBe(1);
      expect(on.out.slice(7)).toEqual([expect.any(Number), 0x02, 0x80]);
      expect(Math.abs(instant(on.out) - Date.now())).toBeLessThan(60_000);
      const bad = await run("--cmos", "maybe");
      expect(bad.code).toBe(2);
      expect(bad.err).toMatch(/--cmos must be on or off, got "maybe"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("a snapshot carries the guest's clock offset: the restored guest reads the time it set; a hostile CMOS state is refused", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-cmos-snap-"));
    try {
      // Set 2077-06-15 12:00:00 (BCD), print 'R', wait for a COM1 byte, then print century and year.
      const code = [
        ...writeReg(0x0b, 0x82),
        ...writeReg(0x32, 0x20), ...writeReg(0x09, 0x77), ...writeReg(0x08, 0x06), ...writeReg(0x07, 0x15),
        ...writeReg(0x04, 0x12), ...writeReg(0x02, 0x00), ...writeReg(0x00, 0x00),
        ...writeReg(0x0b, 0x02),
        0xb0, 0x52, 0x66, 0xba, 0xf8, 0x03, 0xee, //      mov al, 'R'; mov dx, 0x3f8; out dx, al
        0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf7, // poll LSR.DR
        ...readReg(0x32), ...readReg(0x09),
        ...exitByte(0),
      ];
      const vm = Vmm.create({ kernel: rawElf(code), memMiB: 16 });
      let out: number[] = [];
      const run = vm.run({ serial: (b) => out.push(...b) });
      const end = Date.now() + 20_000;
      while (!out.includes(0x52) && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      expect(out).toEqual([0x52]);
      await vm.pause();
      const snap = join(dir, "vm.snap"), mem = join(dir, "vm.mem");
      await vm.snapshot({ snapshotPath: snap, memFilePath: mem });
      vm.stop();
      await run;
      vm.close();
      const state = decodeSnapshotFile(readFileSync(snap)) as SnapshotState;
      const expected = Date.UTC(2077, 5, 15, 12) - Date.now();
      expect(Math.abs(state.devices.cmos!.offsetMs - expected)).toBeLessThan(30_000);
      expect(state.devices.cmos!.bytes[0x0b]).toBe(0x02);

      const restored = Vmm.restore({ snapshotPath: snap, memFilePath: mem });
      out = [];
      const run2 = restored.run({ serial: (b) => out.push(...b) });
      restored.sendSerialInput(Buffer.from("x"));
      expect(await run2).toMatchObject({ reason: "DebugExit", guestExitValue: 0 });
      restored.close();
      expect(out).toEqual([0x20, 0x77]); // a fresh CMOS would say 20 26

      // A snapshot with a hostile CMOS state is refused before the guest runs.
      const bad = join(dir, "bad.snap");
      writeFileSync(bad, encodeSnapshotFile({ ...state, devices: { ...state.devices, cmos: { ...state.devices.cmos!, bytes: [1, 2, 3] } } }));
      expect(() => Vmm.restore({ snapshotPath: bad, memFilePath: mem })).toThrow(expect.objectContaining({ code: "SnapshotInvalid" }));
      writeFileSync(bad, encodeSnapshotFile({ ...state, devices: { ...state.devices, cmos: 7 } }));
      expect(() => Vmm.restore({ snapshotPath: bad, memFilePath: mem })).toThrow(expect.objectContaining({ code: "SnapshotInvalid" }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
