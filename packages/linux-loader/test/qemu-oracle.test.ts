/**
 * Oracle: QEMU 7.2 loads the same Debian kernel, initrd and command line into
 * the same amount of memory; we stop it at the kernel's entry and compare
 * what it built with what we build, field by field.
 *
 * How QEMU is observed: started paused (-S) under TCG, a gdbstub breakpoint
 * (QMP has none) stops it at the entry; memory and registers are then read
 * through QMP (`pmemsave`, `xp`, `info registers`).
 *
 * - bzImage: QEMU's `-kernel` on `-M pc` goes SeaBIOS → linuxboot_dma option
 *   ROM → the kernel's real-mode setup → startup_32 → startup_64. We stop at
 *   startup_64 (load address + 0x200), the 64-bit boot protocol entry where
 *   our vCPU starts, and compare the setup header QEMU wrote at 0x10000+0x1f1,
 *   the protected-mode kernel at 1 MiB, initrd and command line, the memory
 *   map the kernel was given, and the registers.
 * - PVH: `-kernel vmlinux` (ELF with XEN_ELFNOTE_PHYS32_ENTRY) goes through
 *   the pvh option ROM to the PVH entry; we compare hvm_start_info, its
 *   module list and memory map, the ELF segments and the registers.
 *
 * Every field where our layout differs on purpose is listed in DIFFERS_*
 * with the reason, and a test checks the difference is exactly the one named.
 */
import { createHash } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { debianKernel, describeWith, startQemu, type DebianKernel, type QemuInstance } from "@ts-vmm/test-utils";
import type { GuestMemory } from "@ts-vmm/vm-memory";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootParams, BzImage, Elf, HDR, loadLinux, type LinuxBoot, type Segment } from "../src/index.js";
import { GdbRemote } from "./gdb-remote.js";
import { memory } from "./fixtures.js";

const MEM = 256 << 20;
const CMDLINE = 'console=ttyS0 panic=-1 ts_vmm.oracle=1 msg="two words"';
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

function initrdBytes(): Uint8Array {
  // 300 KiB of deterministic noise, not page aligned in size.
  const b = new Uint8Array(300 * 1024 + 123);
  let x = 0x12345678;
  for (let i = 0; i < b.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function readMem(mem: GuestMemory, addr: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  mem.read(addr, b);
  return b;
}

/** The high dword of a descriptor as QEMU prints it in `info registers` (flags incl. limit 19:16). */
function segFlags(s: Segment): bigint {
  const limit = s.g ? s.limit >>> 12 : s.limit;
  return BigInt(
    (((s.type & 0xf) << 8) | (s.s << 12) | (s.dpl << 13) | (s.present << 15) | (((limit >>> 16) & 0xf) << 16) | (s.avl << 20) | (s.l << 21) | (s.db << 22) | (s.g << 23)) >>> 0,
  );
}
const ACCESSED = 0x100n; // descriptor type bit 0: the CPU sets it on load, KVM wants it set

/**
 * Starts QEMU paused and runs it to each address in `stops` in turn (gdbstub
 * software breakpoints under TCG), calling `at` there with QMP in hand.
 */
async function runQemu(kernelPath: string, initrdPath: string, stops: readonly number[], at: (q: QemuInstance, addr: number, regs: Record<string, bigint>) => Promise<void>): Promise<void> {
  const sock = join(tmpdir(), `ts-vmm-gdb-${process.pid}-${stops[0]!.toString(16)}.sock`);
  const q = await startQemu(["-S", "-M", "pc", "-accel", "tcg", "-m", String(MEM >> 20), "-nodefaults", "-no-user-config", "-kernel", kernelPath, "-initrd", initrdPath, "-append", CMDLINE, "-gdb", `unix:${sock},server=on,wait=off`]);
  try {
    const gdb = await GdbRemote.connect(sock);
    try {
      for (const addr of stops) {
        const stop = await gdb.runTo(addr, false, 60_000);
        if (!stop.startsWith("T05") && !stop.startsWith("S05")) throw new Error(`QEMU stopped with ${stop} instead of at 0x${addr.toString(16)}`);
        await at(q, addr, await q.qmp.registers());
      }
    } finally {
      gdb.close();
    }
  } finally {
    await q.stop();
    rmSync(sock, { force: true });
  }
}

type MapEntry = { readonly addr: number; readonly size: number; readonly type: number };
const isRam = (map: readonly MapEntry[], a: number): boolean => map.some((e) => e.type === 1 && a >= e.addr && a < e.addr + e.size);

/**
 * Compares QEMU's memory map (SeaBIOS's e820, which pvh.bin also passes on)
 * with ours. Differences on purpose:
 * - [top - 128 KiB, top): SeaBIOS keeps its ACPI tables there (reserved);
 *   ours are at 0xe0000, so that range is RAM for us;
 * - [0xf0000, 0x100000) reserved by QEMU for the BIOS; we reserve
 *   [0xe0000, 0x100000) for our ACPI tables (the kernel never uses RAM
 *   between 640 KiB and 1 MiB either way);
 * - 0xfffc0000 (+256 KiB, the BIOS flash) and 0xfd_0000_0000 (+12 GiB, the
 *   AMD HyperTransport hole QEMU reserves on AMD hosts): no firmware and no
 *   RAM near 1 TiB in our layout, so nothing to report.
 */
function expectMapsAgree(theirs: readonly MapEntry[], mine: readonly MapEntry[]): void {
  for (const e of theirs.filter((x) => x.type === 1)) {
    for (let a = e.addr; a < e.addr + e.size; a += 0x1000) if (!isRam(mine, a)) expect.fail(`QEMU RAM at 0x${a.toString(16)} is not RAM in ours`);
  }
  const extra: number[] = [];
  for (let a = 0; a < MEM; a += 0x1000) if (isRam(mine, a) && !isRam(theirs, a)) extra.push(a);
  expect(extra[0]).toBe(MEM - 0x20000);
  expect(extra).toHaveLength(0x20000 / 0x1000);
  expect(theirs.slice(0, 2)).toEqual([{ addr: 0, size: 0x9fc00, type: 1 }, { addr: 0x9fc00, size: 0x400, type: 2 }]);
  expect(mine.slice(0, 2)).toEqual([{ addr: 0, size: 0x9fc00, type: 1 }, { addr: 0x9fc00, size: 0x400, type: 2 }]);
  const reservedByQemu = theirs.filter((e) => e.type !== 1).map((e) => [e.addr, e.size]);
  expect(reservedByQemu).toEqual([[0x9fc00, 0x400], [0xf0000, 0x10000], [MEM - 0x20000, 0x20000], [0xfffc0000, 0x40000], [0xfd_0000_0000, 0x3_0000_0000]]);
}

describeWith({ tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb", "zstd"] }, "oracle: QEMU 7.2 and the Debian 6.12 kernel", () => {
  let k: DebianKernel;
  const initrd = initrdBytes();
  let initrdPath: string;

  beforeAll(async () => {
    k = await debianKernel();
    initrdPath = join(tmpdir(), `ts-vmm-oracle-initrd-${process.pid}.bin`);
    writeFileSync(initrdPath, initrd);
  }, 600_000);
  afterAll(() => rmSync(initrdPath, { force: true }));

  describe("bzImage, 64-bit boot protocol", () => {
    let ours: LinuxBoot;
    let mem: GuestMemory;
    let image: Uint8Array;
    let qHeader: BootParams; // the zero page QEMU wrote at 0x10000 (setup header part)
    let qKernelPage: BootParams; // the zero page the kernel got in RSI
    let qRegs: Record<string, bigint>;
    let qKernel: Uint8Array;
    let qInitrd: Uint8Array;
    let qCmdline: Uint8Array;
    let qPageTables: { pml4: Uint8Array; pdpt: Uint8Array; pds: Uint8Array[] };

    beforeAll(async () => {
      image = new Uint8Array(readFileSync(k.bzImage));
      const bz = BzImage.parse(image);
      // First stop: startup_32, before any kernel code ran — the loader's output as is.
      // Second stop: startup_64, the 64-bit protocol entry, for the registers.
      await runQemu(k.bzImage, initrdPath, [0x100000, 0x100200], async (q, addr, regs) => {
        if (addr === 0x100000) {
          qHeader = BootParams.from(await q.qmp.readPhys(0x10000, 4096));
          qKernelPage = BootParams.from(await q.qmp.readPhys(Number(regs["ESI"]), 4096));
          qKernel = await q.qmp.readPhys(0x100000, bz.protectedModeKernel.byteLength);
          qInitrd = await q.qmp.readPhys(qHeader.header.ramdisk_image, initrd.byteLength);
          qCmdline = await q.qmp.readPhys(0x20000, CMDLINE.length + 1);
          return;
        }
        qRegs = regs;
        const cr3 = Number(regs["CR3"]! & ~0xfffn);
        const pml4 = await q.qmp.readPhys(cr3, 4096);
        const pdptAddr = Number(new DataView(pml4.buffer).getBigUint64(0, true) & 0xffffffffff000n);
        const pdpt = await q.qmp.readPhys(pdptAddr, 4096);
        const pds: Uint8Array[] = [];
        for (let g = 0; g < 4; g++) pds.push(await q.qmp.readPhys(Number(new DataView(pdpt.buffer).getBigUint64(g * 8, true) & 0xffffffffff000n), 4096));
        qPageTables = { pml4, pdpt, pds };
      });
      mem = memory(MEM);
      ours = loadLinux(mem, { kernel: image, initrd, cmdline: CMDLINE });
    }, 120_000);

    /** Setup header fields where we differ from QEMU on purpose. */
    const DIFFERS_HDR: Record<string, string> = {
      type_of_loader: "QEMU identifies itself as loader 0xb0; we are 0xff, 'undefined' (boot.rst)",
      loadflags: "QEMU sets CAN_USE_HEAP for the real-mode setup code; the 64-bit protocol skips that code",
      heap_end_ptr: "only read by the real-mode setup code, which the 64-bit protocol skips",
      ramdisk_image: "QEMU keeps acpi_data_size below the top of low RAM for the firmware's ACPI tables (128 KiB here); ours sit at 0xe0000, so our initrd is higher",
    };

    it("setup header: every field equals the one QEMU wrote, except the named ones", () => {
      const a = ours.bootParams!.header;
      const b = qHeader.header;
      const compared: string[] = [];
      for (const f of Object.keys(HDR) as (keyof typeof HDR)[]) {
        if (f in DIFFERS_HDR || f === "setup_sects" || f === "root_flags") continue;
        expect.soft(a[f], `setup header field ${f}`).toEqual(b[f]);
        compared.push(f);
      }
      // setup_sects/root_flags: QEMU patches byte 0x1f1 only for protocol < 2.00; compare too.
      expect(a.setup_sects).toBe(b.setup_sects);
      expect(a.root_flags).toBe(b.root_flags);
      expect(compared.length).toBeGreaterThan(30);
      expect(a.cmd_line_ptr).toBe(0x20000);
      expect(a.ramdisk_size).toBe(initrd.byteLength);
    });

    it("setup header: the named differences are exactly as explained", () => {
      const a = ours.bootParams!.header;
      const b = qHeader.header;
      expect([a.type_of_loader, b.type_of_loader]).toEqual([0xff, 0xb0]);
      expect(a.loadflags).toBe(b.loadflags & ~0x80);
      expect(b.loadflags & 0x80).toBe(0x80);
      expect(a.heap_end_ptr).toBe(new DataView(image.buffer, image.byteOffset).getUint16(0x224, true)); // the file's value, untouched
      expect(b.heap_end_ptr).toBe(0xfe00);
      expect(b.ramdisk_image).toBe(a.ramdisk_image - 0x20000);
    });

    it("the kernel saw the same header in RSI as QEMU wrote (our comparison point is the loader's output)", () => {
      const a = qKernelPage.header;
      const b = qHeader.header;
      for (const f of ["cmd_line_ptr", "ramdisk_image", "ramdisk_size", "type_of_loader", "code32_start", "kernel_alignment"] as const) expect(a[f]).toBe(b[f]);
    });

    it("protected-mode kernel bytes at 1 MiB are identical", () => {
      expect(ours.kernel).toMatchObject({ loadAddress: 0x100000, entry64: 0x100200 });
      expect(sha(readMem(mem, 0x100000, qKernel.byteLength))).toBe(sha(qKernel));
      expect(qKernel.byteLength).toBe(image.byteLength - 40 * 512);
    });

    it("initrd and command line bytes are identical", () => {
      expect(sha(readMem(mem, ours.initrd!.addr, initrd.byteLength))).toBe(sha(qInitrd));
      expect(sha(qInitrd)).toBe(sha(initrd));
      expect(readMem(mem, 0x20000, CMDLINE.length + 1)).toEqual(qCmdline);
    });

    it("entry registers: RIP, CS/DS/ES/SS, CR0, CR4, EFER and IF match QEMU at startup_64", () => {
      const r = ours.cpu.regs;
      const s = ours.cpu.sregs;
      expect(r.rip).toBe(qRegs["RIP"]);
      expect(r.rflags & 0x200n).toBe(qRegs["RFL"]! & 0x200n); // IF clear
      expect(s.cr0).toBe(qRegs["CR0"]);
      expect(s.cr4).toBe(qRegs["CR4"]);
      expect(s.efer).toBe(qRegs["EFER"]);
      for (const [name, seg] of [["CS", s.cs], ["DS", s.ds], ["ES", s.es], ["SS", s.ss]] as const) {
        expect.soft(BigInt(seg.selector), `${name}.sel`).toBe(qRegs[`${name}.sel`]);
        expect.soft(seg.base, `${name}.base`).toBe(qRegs[`${name}.base`]);
        expect.soft(BigInt(seg.limit), `${name}.limit`).toBe(qRegs[`${name}.limit`]);
        expect.soft(segFlags(seg) | ACCESSED, `${name}.flags`).toBe(qRegs[`${name}.flags`]! | ACCESSED);
      }
    });

    it("entry registers: RSI points to a zero page in both; differences are named", () => {
      // RSI: ours is 0x7000 (our layout), QEMU's is the setup code's copy of boot_params.
      expect(ours.cpu.regs.rsi).toBe(0x7000n);
      expect(qRegs["RSI"]).toBeGreaterThan(0x10000n);
      // CS accessed bit: set in ours (KVM's segment checks want it), clear in the kernel's descriptor.
      expect(segFlags(ours.cpu.sregs.cs) & ACCESSED).toBe(ACCESSED);
      // GDT/IDT/TR/CR3/RSP: the kernel's startup_32 loaded its own; the 64-bit protocol leaves them to the loader.
      expect(qRegs["GDT.base"]).not.toBe(ours.cpu.sregs.gdt.base);
      expect(ours.cpu.sregs.cr3).toBe(0x9000n);
    });

    it("page tables: both identity-map the first 4 GiB with present, writable 2 MiB pages", () => {
      const ourPds = readMem(mem, 0xb000, 4 * 4096);
      for (let g = 0; g < 4; g++) {
        const qv = new DataView(qPageTables.pds[g]!.buffer);
        const ov = new DataView(ourPds.buffer, g * 4096);
        for (let i = 0; i < 512; i++) {
          const q = qv.getBigUint64(i * 8, true);
          const o = ov.getBigUint64(i * 8, true);
          const want = BigInt(g * 512 + i) << 21n;
          expect(q & 0xfffffffe00000n).toBe(want);
          expect(o & 0xfffffffe00000n).toBe(want);
          expect(q & 0x83n).toBe(0x83n);
          expect(o & 0x83n).toBe(0x83n);
        }
      }
    });

    it("memory map: the kernel's e820 from QEMU/SeaBIOS and ours agree except the named ranges", () => {
      const mine = BootParams.from(readMem(mem, 0x7000, 4096)).e820;
      expect(mine).toEqual(ours.e820);
      expectMapsAgree(qKernelPage.e820, mine);
    });
  });

  describe("ELF vmlinux, PVH entry", () => {
    let ours: LinuxBoot;
    let mem: GuestMemory;
    let elf: Elf;
    let qRegs: Record<string, bigint>;
    let qStart: DataView;
    let qModlist: DataView;
    let qMemmap: { addr: number; size: number; type: number }[];
    let qCmdline: Uint8Array;
    let qInitrd: Uint8Array;
    let qSegments: string[];

    beforeAll(async () => {
      const image = new Uint8Array(readFileSync(k.vmlinux));
      elf = Elf.parse(image);
      await runQemu(k.vmlinux, initrdPath, [elf.pvhEntry!], async (q, _addr, regs) => {
        qRegs = regs;
        const si = Number(regs["EBX"]);
        qStart = new DataView((await q.qmp.readPhys(si, 56)).buffer);
        qModlist = new DataView((await q.qmp.readPhys(Number(qStart.getBigUint64(16, true)), 32)).buffer);
        const n = qStart.getUint32(48, true);
        const mm = new DataView((await q.qmp.readPhys(Number(qStart.getBigUint64(40, true)), 24 * n)).buffer);
        qMemmap = Array.from({ length: n }, (_, i) => ({ addr: Number(mm.getBigUint64(i * 24, true)), size: Number(mm.getBigUint64(i * 24 + 8, true)), type: mm.getUint32(i * 24 + 16, true) }));
        qCmdline = await q.qmp.readPhys(Number(qStart.getBigUint64(24, true)), CMDLINE.length + 1);
        qInitrd = await q.qmp.readPhys(Number(qModlist.getBigUint64(0, true)), initrd.byteLength);
        qSegments = [];
        for (const s of elf.segments) qSegments.push(sha(await q.qmp.readPhys(s.paddr, s.memSize)));
      });
      mem = memory(MEM);
      ours = loadLinux(mem, { kernel: image, initrd, cmdline: CMDLINE });
    }, 120_000);

    it("enters at the same PVH entry with EBX pointing to hvm_start_info", () => {
      expect(ours.protocol).toBe("pvh");
      expect(ours.cpu.regs.rip).toBe(qRegs["EIP"]);
      expect(ours.cpu.regs.rip).toBe(BigInt(elf.pvhEntry!));
      expect(ours.cpu.regs.rbx).toBe(BigInt(ours.startInfoAddr!));
      expect(readMem(mem, ours.startInfoAddr!, 4)).toEqual(Uint8Array.of(0x78, 0xc5, 0x6e, 0x33));
    });

    it("entry registers: CR0, CR4, EFER, IF and the flat CS/DS/ES/SS match; selectors are named", () => {
      const s = ours.cpu.sregs;
      expect(s.cr0).toBe(qRegs["CR0"]);
      expect(s.cr4).toBe(qRegs["CR4"]);
      expect(s.efer).toBe(qRegs["EFER"]);
      expect(ours.cpu.regs.rflags & 0x200n).toBe(qRegs["EFL"]! & 0x200n);
      for (const [name, seg] of [["CS", s.cs], ["DS", s.ds], ["ES", s.es], ["SS", s.ss]] as const) {
        expect.soft(seg.base, `${name}.base`).toBe(qRegs[`${name}.base`]);
        expect.soft(BigInt(seg.limit), `${name}.limit`).toBe(qRegs[`${name}.limit`]);
        expect.soft(segFlags(seg) | ACCESSED, `${name}.flags`).toBe(qRegs[`${name}.flags`]! | ACCESSED);
      }
      // Selectors: the PVH ABI leaves them unspecified. QEMU's pvh.bin uses 0x08/0x10;
      // we keep the Linux boot GDT layout (__BOOT_CS 0x10, __BOOT_DS 0x18) for both protocols.
      expect([qRegs["CS.sel"], qRegs["DS.sel"]]).toEqual([0x08n, 0x10n]);
      expect([s.cs.selector, s.ds.selector]).toEqual([0x10, 0x18]);
      // TR: the ABI asks for a 32-bit busy TSS with limit 0x67; QEMU leaves the reset value (limit 0xffff).
      expect(s.tr).toMatchObject({ base: 0n, limit: 0x67, type: 0xb });
      expect(qRegs["TR.limit"]).toBe(0xffffn);
    });

    it("hvm_start_info: magic, version, flags, module count and command line match; addresses are ours", () => {
      const o = new DataView(readMem(mem, ours.startInfoAddr!, 56).buffer);
      for (const off of [0, 4, 8, 12]) expect.soft(o.getUint32(off, true), `start_info +${off}`).toBe(qStart.getUint32(off, true));
      expect(o.getUint32(12, true)).toBe(1);
      expect(readMem(mem, Number(o.getBigUint64(24, true)), CMDLINE.length + 1)).toEqual(qCmdline);
      // rsdp_paddr: QEMU points at SeaBIOS's RSDP in the F segment; ours is at 0xe0000.
      expect(Number(o.getBigUint64(32, true))).toBe(0xe0000);
      expect(qStart.getBigUint64(32, true)).toBeGreaterThanOrEqual(0xe0000n);
    });

    it("module list: the initrd has the same size and bytes; its address is named", () => {
      const o = new DataView(readMem(mem, 0x6040, 32).buffer);
      expect(o.getBigUint64(8, true)).toBe(qModlist.getBigUint64(8, true));
      expect(o.getBigUint64(8, true)).toBe(BigInt(initrd.byteLength));
      expect(sha(readMem(mem, Number(o.getBigUint64(0, true)), initrd.byteLength))).toBe(sha(qInitrd));
      // Address: QEMU keeps room for firmware ACPI tables at the top of low RAM (on
      // this path 160 KiB: 0x28000); our tables are at 0xe0000, so our initrd is higher.
      expect(Number(o.getBigUint64(0, true) - qModlist.getBigUint64(0, true))).toBe(0x28000);
    });

    it("memory map: QEMU's PVH memmap and ours agree except the named ranges", () => {
      const o = new DataView(readMem(mem, ours.startInfoAddr!, 56).buffer);
      const n = o.getUint32(48, true);
      const mm = new DataView(readMem(mem, Number(o.getBigUint64(40, true)), 24 * n).buffer);
      const mine = Array.from({ length: n }, (_, i) => ({ addr: Number(mm.getBigUint64(i * 24, true)), size: Number(mm.getBigUint64(i * 24 + 8, true)), type: mm.getUint32(i * 24 + 16, true) }));
      expect(mine).toEqual(ours.e820);
      expectMapsAgree(qMemmap, mine);
    });

    it("every PT_LOAD segment's bytes (file bytes and zeroed tail) are identical", () => {
      elf.segments.forEach((s, i) => {
        expect.soft(sha(readMem(mem, s.paddr, s.memSize)), `segment ${i} at 0x${s.paddr.toString(16)}`).toBe(qSegments[i]);
      });
      expect(elf.segments.length).toBeGreaterThanOrEqual(4);
    });

    it("the same vmlinux through the 64-bit protocol: same segment bytes, RIP = e_entry, RSI = zero page", () => {
      const m = memory(MEM);
      const b = loadLinux(m, { kernel: new Uint8Array(readFileSync(k.vmlinux)), initrd, cmdline: CMDLINE, protocol: "linux64" });
      expect(b.protocol).toBe("linux64");
      expect(b.cpu.regs.rip).toBe(BigInt(elf.entry));
      expect(b.cpu.regs.rsi).toBe(0x7000n);
      expect(b.bootParams!.header).toMatchObject({ boot_flag: 0xaa55, header: 0x53726448, type_of_loader: 0xff, cmd_line_ptr: 0x20000, ramdisk_size: initrd.byteLength });
      elf.segments.forEach((s, i) => expect.soft(sha(readMem(m, s.paddr, s.memSize)), `segment ${i}`).toBe(qSegments[i]));
    });
  });
});
