import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { afterAll, expect, it } from "vitest";
import { buildMicroGuest } from "../src/index.js";

/** Reads the PVH entry from the ELF's PT_NOTE segments, independently of any loader. */
function pvhEntry(elf: Buffer): { entry: bigint; pvh: bigint | undefined } {
  expect(elf.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
  expect(elf[4]).toBe(2); // ELFCLASS64
  const entry = elf.readBigUInt64LE(24);
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  let pvh: bigint | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const off = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 32));
    for (let p = off; p + 12 <= off + size; ) {
      const namesz = elf.readUInt32LE(p), descsz = elf.readUInt32LE(p + 4), type = elf.readUInt32LE(p + 8);
      const name = elf.subarray(p + 12, p + 12 + namesz).toString("latin1");
      const desc = p + 12 + ((namesz + 3) & ~3);
      if (name === "Xen\0" && type === 18) pvh = descsz === 8 ? elf.readBigUInt64LE(desc) : BigInt(elf.readUInt32LE(desc));
      p = desc + ((descsz + 3) & ~3);
    }
  }
  return { entry, pvh };
}

describeWith({ tools: ["gcc", "ld"] }, "buildMicroGuest", () => {
  const out = mkdtempSync(join(tmpdir(), "ts-vmm-guest-build-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("builds a PVH ELF whose XEN_ELFNOTE_PHYS32_ENTRY note is the 32-bit entry, and caches it by content", async () => {
    const first = await buildMicroGuest({ outDir: out });
    expect(first.built).toBe(true);
    const { entry, pvh } = pvhEntry(readFileSync(first.elf));
    expect(pvh).toBe(entry);
    expect(entry).toBeGreaterThanOrEqual(0x100000n);
    expect(entry).toBeLessThan(1n << 32n);
    const second = await buildMicroGuest({ outDir: out });
    expect(second).toEqual({ ...first, built: false });
  }, 60_000);

  it("reports a compile or link failure as BuildFailed", async () => {
    // `true` "compiles" nothing, so ld finds no objects and fails.
    await expect(buildMicroGuest({ outDir: out, cc: "true" })).rejects.toMatchObject({ code: "BuildFailed" });
  });

  it("reports a missing compiler as MissingTool", async () => {
    await expect(buildMicroGuest({ outDir: out, cc: "/nonexistent/gcc" })).rejects.toMatchObject({ code: "MissingTool" });
  });
});
