/**
 * ACPI against QEMU: `-M microvm,acpi=on` describes the virtio-mmio
 * transports that have a device in the DSDT as LNRO0005 devices, and its
 * serial port as COM1.
 * We let QEMU's firmware (qboot) install its tables, stop at the kernel's
 * entry, find the RSDP in 0xe0000-0xfffff, follow XSDT → FADT → DSDT, and
 * compare iasl's disassembly of QEMU's device blocks with ours for the same
 * addresses and IRQs.
 *
 * Named differences: our default trigger for virtio interrupts is Edge (KVM
 * irqfd into the IOAPIC, as Firecracker); QEMU uses Level, so the comparison
 * builds ours with `edgeInterrupts: false`. QEMU's COM1 has `_STA 0x0F`; ours
 * has no `_STA`, which ACPI defines as present and enabled. Device names
 * differ (QEMU VRnn, ours Vnnn).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { debianKernel, describeWith, startQemu } from "@ts-vmm/test-utils";
import { afterAll, beforeAll, expect, it } from "vitest";
import { acpi } from "../src/index.js";
import { GdbRemote } from "./gdb-remote.js";

/** microvm assigns transports from the top: these land in slots 23, 22, 21. */
const DEVICES = ["virtio-rng-device", "virtio-rng-device", "virtio-balloon-device"];
const dir = mkdtempSync(join(tmpdir(), "ts-vmm-qemu-acpi-"));

function disassemble(name: string, table: Uint8Array): string {
  const file = join(dir, `${name}.dat`);
  writeFileSync(file, table);
  const r = spawnSync("iasl", ["-d", file], { encoding: "utf8" });
  expect(`${r.stdout}${r.stderr}`).not.toMatch(/error|warning|incorrect/i);
  return readFileSync(join(dir, `${name}.dsl`), "utf8");
}

/** Device blocks of a disassembled DSDT: name → body lines, without the name and with blank lines dropped. */
function devices(dsl: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = dsl.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*Device \((\w+)\)/.exec(lines[i]!);
    if (!m) continue;
    let depth = 0;
    const body: string[] = [];
    for (let j = i + 1; j < lines.length; j++) {
      const l = lines[j]!;
      depth += (l.match(/\{/g) ?? []).length - (l.match(/\}/g) ?? []).length;
      if (l.trim() !== "") body.push(l.trim());
      if (depth === 0) break;
    }
    out.set(m[1]!, body.join("\n"));
  }
  return out;
}

describeWith({ tools: ["qemu-system-x86_64", "iasl", "apt-get", "dpkg-deb", "zstd"] }, "ACPI DSDT against QEMU microvm", () => {
  let qemuDsl: string;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  beforeAll(async () => {
    const k = await debianKernel();
    const sock = join(dir, "gdb.sock");
    const q = await startQemu(["-S", "-M", "microvm,acpi=on", "-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config", "-kernel", k.bzImage, "-append", "console=ttyS0", "-serial", "null", ...DEVICES.flatMap((d) => ["-device", d]), "-gdb", `unix:${sock},server=on,wait=off`]);
    try {
      const gdb = await GdbRemote.connect(sock);
      await gdb.runTo(0x100000, false, 60_000); // startup_32: the firmware is done
      gdb.close();
      const bios = await q.qmp.readPhys(0xe0000, 0x20000);
      let at = -1;
      for (let o = 0; o < bios.length; o += 16) if (Buffer.from(bios.subarray(o, o + 8)).toString("latin1") === "RSD PTR ") at = o;
      expect(at).toBeGreaterThanOrEqual(0);
      const rsdp = new DataView(bios.buffer, at);
      expect(rsdp.getUint8(15)).toBe(2);
      const xsdtAddr = Number(rsdp.getBigUint64(24, true));
      const len = (a: number): Promise<number> => q.qmp.readPhys(a + 4, 4).then((b) => new DataView(b.buffer).getUint32(0, true));
      const xsdt = new DataView((await q.qmp.readPhys(xsdtAddr, await len(xsdtAddr))).buffer);
      let dsdt: Uint8Array | undefined;
      for (let o = 36; o < xsdt.byteLength; o += 8) {
        const a = Number(xsdt.getBigUint64(o, true));
        const t = await q.qmp.readPhys(a, await len(a));
        if (Buffer.from(t.subarray(0, 4)).toString("latin1") === "FACP") {
          const f = new DataView(t.buffer);
          const d = Number(f.getBigUint64(140, true)) || f.getUint32(40, true);
          dsdt = await q.qmp.readPhys(d, await len(d));
        }
      }
      qemuDsl = disassemble("qemu-dsdt", dsdt!);
    } finally {
      await q.stop();
    }
  }, 600_000);

  it("describes each virtio-mmio transport exactly as QEMU does (same _HID, _UID, _CCA, Memory32Fixed, Interrupt)", () => {
    const theirs = [...devices(qemuDsl)].filter(([, body]) => body.includes('"LNRO0005"'));
    expect(theirs).toHaveLength(DEVICES.length);
    const parsed = theirs.map(([, body]) => ({
      uid: Number(/_UID, (\w+)\)/.exec(body)![1]!.replace("Zero", "0").replace("One", "1")),
      addr: parseInt(/Memory32Fixed \(ReadWrite,\s*0x([0-9A-F]+)/.exec(body)![1]!, 16),
      size: parseInt(/Address Base\s*0x([0-9A-F]+)/.exec(body)![1]!, 16),
      irq: parseInt(/\{\s*0x([0-9A-F]+),\s*\}/.exec(body)![1]!, 16),
      body,
    }));
    parsed.sort((a, b) => a.uid - b.uid);
    expect(parsed.map((p) => p.uid)).toEqual([21, 22, 23]);
    const ours = acpi.buildAcpiTables({ cpus: 1, com1: false, i8042: false, cmosRtc: false, edgeInterrupts: false, virtioMmio: parsed.map((p) => ({ addr: p.addr, size: p.size, irq: p.irq, uid: p.uid })) });
    const mine = [...devices(disassemble("our-dsdt", ours.tables.DSDT))];
    expect(mine).toHaveLength(DEVICES.length);
    mine.forEach(([, body], i) => expect.soft(body, `transport ${i}`).toBe(parsed[i]!.body));
    // Our default (edge-triggered, for irqfd) differs from QEMU's in exactly that word.
    const edge = acpi.buildAcpiTables({ cpus: 1, com1: false, i8042: false, cmosRtc: false, virtioMmio: parsed.map((p) => ({ addr: p.addr, size: p.size, irq: p.irq, uid: p.uid })) });
    const edgeBodies = [...devices(disassemble("our-dsdt-edge", edge.tables.DSDT))].map(([, b]) => b);
    edgeBodies.forEach((b, i) => expect(b).toBe(parsed[i]!.body.replace("Interrupt (ResourceConsumer, Level,", "Interrupt (ResourceConsumer, Edge,")));
  });

  it("describes COM1 with the same _HID, _UID and resources; QEMU's _STA is the one named difference", () => {
    const theirs = devices(qemuDsl).get("COM1")!;
    const mine = devices(disassemble("our-com1", acpi.buildAcpiTables({ cpus: 1 }).tables.DSDT)).get("COM1")!;
    expect(theirs).toContain("Name (_STA, 0x0F)");
    expect(mine).toBe(theirs.split("\n").filter((l) => !l.startsWith("Name (_STA")).join("\n"));
  });
});
