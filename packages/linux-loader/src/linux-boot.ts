import { BootParams } from "./boot-params.js";
import { hex } from "./bytes.js";
import { BzImage, type BzImageLoad } from "./bzimage.js";
import { Cmdline } from "./cmdline.js";
import { longModeState, pvhState, type VcpuBootState } from "./cpu-state.js";
import { buildE820, type E820Entry } from "./e820.js";
import { Elf, type ElfLoad } from "./elf.js";
import { LoaderError } from "./error.js";
import { commitWrites, validateWrites, type GuestWrite } from "./guest-writes.js";
import { IOAPIC_ID, layout, ramRegions, MMIO_HOLE_START } from "./layout.js";
import type { GuestMemory } from "./memory.js";
import { buildMpTable } from "./mptable.js";
import { buildStartInfo } from "./pvh.js";
import { buildAcpiTables, checkVirtioMmio, type VirtioMmioDevice } from "./acpi/tables.js";

/** How the kernel is entered. */
export type BootProtocol = "linux64" | "pvh";

/** Everything needed to boot Linux (or a PVH guest) in one call. */
export interface LinuxBootOptions {
  /** A bzImage or an ELF (vmlinux, PVH micro-guest); told apart by magic. */
  readonly kernel: Uint8Array;
  readonly initrd?: Uint8Array;
  /** The command line, as text or built with {@link Cmdline}. */
  readonly cmdline?: string | Cmdline;
  /** vCPUs for the MP table and MADT (default 1). */
  readonly cpus?: number;
  /**
   * `linux64`: the 64-bit boot protocol (zero page in RSI). `pvh`: the PVH
   * entry (start_info in EBX); needs an ELF with a PHYS32_ENTRY note. Default:
   * `linux64` for a bzImage, `pvh` for an ELF that has the note.
   */
  readonly protocol?: BootProtocol;
  /** virtio-mmio devices (in the DSDT and, if asked, on the command line). */
  readonly virtioMmio?: readonly VirtioMmioDevice[];
  /** Also announce the devices with `virtio_mmio.device=` (default: only when `acpi` is false). */
  readonly virtioMmioOnCmdline?: boolean;
  /** Write ACPI tables (default true). */
  readonly acpi?: boolean;
  /** Write an MP table (default true when cpus ≤ 32). */
  readonly mptable?: boolean;
  /** Describe COM1 in the DSDT (default true). */
  readonly com1?: boolean;
  /** Describe an i8042 (FADT IAPC_8042, PNP0303 in the DSDT; default true). */
  readonly i8042?: boolean;
  /** A CMOS RTC at 0x70/0x71 (FADT CENTURY 0x32; false sets CMOS RTC Not Present: see AcpiOptions.cmosRtc; default true). */
  readonly cmosRtc?: boolean;
  /** ACPI sleep control/status and reset registers and `\\_S5` (see AcpiOptions.powerManagement; default true). */
  readonly acpiPowerManagement?: boolean;
  /**
   * Guest memory still reads as zeroes (fresh anonymous, memfd or guest_memfd
   * memory): {@link loadLinux} then skips zeroing an ELF's BSS
   * (`memoryIsZero` of {@link commitWrites}). Default false.
   */
  readonly memoryIsZero?: boolean;
}

/** The plan (and, after {@link loadLinux}, the record) of a boot. */
export interface LinuxBoot {
  readonly protocol: BootProtocol;
  /** Where the kernel went. */
  readonly kernel: BzImageLoad | ElfLoad;
  /** RIP of the boot vCPU. */
  readonly entry: number;
  readonly initrd: { readonly addr: number; readonly size: number } | undefined;
  readonly cmdline: string;
  readonly cmdlineAddr: number;
  readonly e820: readonly E820Entry[];
  /** The zero page (linux64 only). */
  readonly bootParams: BootParams | undefined;
  /** Address of hvm_start_info (pvh only). */
  readonly startInfoAddr: number | undefined;
  readonly rsdpAddr: number | undefined;
  /** State for the boot vCPU (the others wait for INIT/SIPI). */
  readonly cpu: VcpuBootState;
  /** Every block written to guest memory. */
  readonly writes: readonly GuestWrite[];
}

const isElf = (b: Uint8Array): boolean => b.byteLength >= 4 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46;

/**
 * Lays out a boot without touching memory: kernel, initrd, command line,
 * zero page or start_info, page tables and GDT, MP and ACPI tables; then
 * checks every write against `mem`, the MMIO hole and each other.
 *
 * @throws LoaderError any code of the image parsers; `InvalidArgument` (guest
 * memory not laid out as {@link ramRegions}; a bad virtio-mmio device list:
 * overlapping windows, a window outside the MMIO hole, an IRQ that is not an
 * IOAPIC pin); `Unsupported` (PVH asked of an image without a note or of a
 * bzImage, the 64-bit protocol asked of an ELF32); `InitrdTooLarge`;
 * `CmdlineTooLong`/`CmdlineInvalid`;
 * `OutOfGuestMemory` (kernel or its decompression area past the end of RAM);
 * `InMmioHole`; `Overlap`.
 */
export function planLinuxBoot(mem: GuestMemory, options: LinuxBootOptions): LinuxBoot {
  const regions = ramRegions(mem.size);
  for (const r of regions) {
    if (!mem.checkRange(r.start, r.size)) {
      throw new LoaderError("InvalidArgument", `guest memory has no RAM at ${hex(r.start)}..${hex(r.start + r.size)}; create it from ramRegions(${mem.size})`);
    }
  }
  const lowEnd = Math.min(mem.size, MMIO_HOLE_START);
  const cpus = options.cpus ?? 1;
  const writes: GuestWrite[] = [];

  let protocol: BootProtocol;
  let kernel: BzImageLoad | ElfLoad;
  let entry: number;
  let cmdlineCapacity = 2047;
  let initrdMax = 0x7fff_ffff;
  let kernelEnd: number;
  let bz: BzImage | undefined;
  if (isElf(options.kernel)) {
    const elf = Elf.parse(options.kernel);
    protocol = options.protocol ?? (elf.pvhEntry !== undefined ? "pvh" : "linux64");
    const p = elf.plan();
    kernel = p.load;
    writes.push(...p.writes);
    if (protocol === "pvh") {
      if (elf.pvhEntry === undefined) throw new LoaderError("Unsupported", "PVH boot needs an ELF note XEN_ELFNOTE_PHYS32_ENTRY; this image has none");
      entry = elf.pvhEntry;
    } else {
      // The 64-bit protocol enters e_entry in long mode: an ELF32 holds 32-bit code.
      if (elf.bits !== 64) throw new LoaderError("Unsupported", "the 64-bit boot protocol needs an ELF64 kernel; this ELF32 image can only be entered through a PVH note");
      entry = elf.entry;
    }
    kernelEnd = p.load.end;
  } else {
    bz = BzImage.parse(options.kernel);
    if (options.protocol === "pvh") throw new LoaderError("Unsupported", "PVH boot needs an ELF image; a bzImage is entered with the 64-bit protocol");
    protocol = "linux64";
    const p = bz.plan();
    kernel = p.load;
    writes.push(...p.writes);
    entry = p.load.entry64;
    // The kernel's limit, but never more than the layout's command line slot (64 KiB with the NUL).
    cmdlineCapacity = Math.min(bz.header.cmdline_size, layout.cmdlineMax - 1);
    initrdMax = bz.header.initrd_addr_max;
    kernelEnd = Math.max(p.load.end, p.load.runtimeStart + p.load.initSize);
    if (p.load.runtimeStart + p.load.initSize > lowEnd) {
      throw new LoaderError(
        "OutOfGuestMemory",
        `the kernel needs RAM up to ${hex(p.load.runtimeStart + p.load.initSize)} (runtime start ${hex(p.load.runtimeStart)} + init_size ${hex(p.load.initSize)}) but low RAM ends at ${hex(lowEnd)}`,
      );
    }
  }

  // Command line.
  const cmdline =
    options.cmdline instanceof Cmdline
      ? Cmdline.parse(options.cmdline.toString(), cmdlineCapacity)
      : Cmdline.parse(options.cmdline ?? "", cmdlineCapacity);
  const acpiOn = options.acpi ?? true;
  checkVirtioMmio(options.virtioMmio ?? []);
  if (options.virtioMmioOnCmdline ?? !acpiOn) {
    for (const d of options.virtioMmio ?? []) cmdline.addVirtioMmioDevice({ size: d.size ?? 0x1000, addr: d.addr, irq: d.irq });
  }
  const cmdBytes = cmdline.toBytes();
  writes.push({ addr: layout.cmdline, data: cmdBytes, what: "kernel command line" });

  // Initrd: as high as possible below min(initrd_addr_max + 1, end of low RAM), page aligned.
  let initrd: LinuxBoot["initrd"];
  if (options.initrd && options.initrd.byteLength > 0) {
    const size = options.initrd.byteLength;
    const top = Math.min(initrdMax + 1, lowEnd);
    const addr = Math.floor((top - size) / 4096) * 4096;
    if (addr < kernelEnd) {
      throw new LoaderError(
        "InitrdTooLarge",
        `the initrd (${size} bytes) does not fit between the kernel (up to ${hex(kernelEnd)}) and ${hex(top)} (min of initrd_addr_max + 1 and the end of low RAM)`,
      );
    }
    initrd = { addr, size };
    writes.push({ addr, data: options.initrd, what: "initrd" });
  }

  // Tables.
  const e820 = buildE820(regions);
  let rsdpAddr: number | undefined;
  if (acpiOn) {
    const t = buildAcpiTables({
      cpus,
      virtioMmio: options.virtioMmio ?? [],
      com1: options.com1 ?? true,
      i8042: options.i8042 ?? true,
      cmosRtc: options.cmosRtc ?? true,
      powerManagement: options.acpiPowerManagement ?? true,
      ioapicId: IOAPIC_ID,
    });
    writes.push(...t.writes);
    rsdpAddr = t.rsdpAddr;
  }
  if (options.mptable ?? cpus <= 32) writes.push(buildMpTable({ cpus, ioapicId: IOAPIC_ID }));

  let cpu: VcpuBootState;
  let bootParams: BootParams | undefined;
  let startInfoAddr: number | undefined;
  if (protocol === "pvh") {
    const blobs = buildStartInfo({
      cmdlineAddr: layout.cmdline,
      rsdpAddr: rsdpAddr ?? 0,
      modlistAddr: layout.pvhModlist,
      modules: initrd ? [initrd] : [],
      memmapAddr: layout.pvhMemmap,
      memmap: e820,
    });
    startInfoAddr = layout.pvhStartInfo;
    writes.push(
      { addr: layout.pvhStartInfo, data: blobs.startInfo, what: "PVH start_info" },
      { addr: layout.pvhModlist, data: blobs.modlist, what: "PVH module list" },
      { addr: layout.pvhMemmap, data: blobs.memmap, what: "PVH memory map" },
    );
    cpu = pvhState(entry, layout.pvhStartInfo);
  } else {
    bootParams = bz ? BootParams.fromBzImage(bz) : BootParams.minimal();
    bootParams.setCmdline(layout.cmdline).setE820(e820);
    if (initrd) bootParams.setRamdisk(initrd.addr, initrd.size);
    if (rsdpAddr !== undefined) bootParams.setAcpiRsdp(rsdpAddr);
    writes.push({ addr: layout.zeroPage, data: bootParams.bytes, what: "zero page" });
    cpu = longModeState(entry, layout.zeroPage);
  }
  writes.push(...cpu.writes);
  validateWrites(mem, writes);
  return {
    protocol,
    kernel,
    entry,
    initrd,
    cmdline: cmdline.toString(),
    cmdlineAddr: layout.cmdline,
    e820,
    bootParams,
    startInfoAddr,
    rsdpAddr,
    cpu,
    writes,
  };
}

/**
 * Plans a boot ({@link planLinuxBoot}) and writes it into guest memory.
 * Nothing is written unless the whole plan is valid.
 *
 * @throws LoaderError as {@link planLinuxBoot}.
 */
export function loadLinux(mem: GuestMemory, options: LinuxBootOptions): LinuxBoot {
  const plan = planLinuxBoot(mem, options);
  commitWrites(mem, plan.writes, { memoryIsZero: options.memoryIsZero === true });
  return plan;
}
