// Taking a snapshot of a paused VM and reading one back: the steps between
// the Vmm's parts and the files. Vmm.snapshot and Vmm.restore call these.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, statSync, writeFileSync } from "node:fs";
import { Cap, type Kvm, type VcpuFd, type VmFd } from "@ts-vmm/kvm-ioctls";
import type { LinuxBoot } from "@ts-vmm/linux-loader";
import type { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import type { CmosRtc, I8042, Ioapic, Serial16550 } from "@ts-vmm/virtio-devices/legacy";
import { VmmError } from "../error.js";
import type { VirtioManager } from "../devices/virtio-manager.js";
import { decodeSnapshotFile, encodeSnapshotFile, MAX_STATE_BYTES } from "./file-format.js";
import { memoryLayout, mergeDiffMemory, writeMemoryFile } from "./memory-file.js";
import { checkSnapshotState, type SnapshotState } from "./state.js";
import { MSR_IA32_TSC, MSR_KVM_SYSTEM_TIME_NEW, msrsToSave, pvclockNs, readClockAndTscs, saveVcpu, withTsc, type TscOffsetIo, type VcpuSnapshot } from "./vcpu-state.js";

/** The parts of a Vmm a snapshot reads. */
export interface SnapshotSource {
  readonly kvm: Kvm;
  readonly vm: VmFd;
  readonly vcpus: readonly VcpuFd[];
  readonly mem: GuestMemoryMmap;
  readonly ioapic: Ioapic | undefined;
  readonly virtio: VirtioManager;
  readonly serial: Serial16550;
  readonly i8042: I8042;
  /** The CMOS RTC, if the VM has one. */
  readonly cmos: CmosRtc | undefined;
  readonly boot: LinuxBoot;
  readonly machine: SnapshotState["config"];
  readonly diffLogging: boolean;
  /** Whether the vCPUs run at a TSC rate other than the host's (a restore set it): their TSCs are then not read through the offsets. */
  readonly tscScaled: boolean;
}

const failed = (what: string, e: unknown): VmmError =>
  e instanceof VmmError ? e : new VmmError("SnapshotFailed", `${what}: ${(e as Error).message}`, { cause: e });

/** KVM's dirty log of every slot (slot i = region i) merged into the regions' own bitmaps. */
function collectDirty(src: SnapshotSource): void {
  src.mem.regions.forEach((r, slot) => {
    const log = src.vm.getDirtyLog(slot);
    r.dirty?.mergeKvmLog(log);
  });
}

/** vCPU 0's kvm-clock as the guest reads it (see pvclockNs), or null without an enabled page in guest RAM. */
function guestClock(mem: GuestMemoryMmap, v: VcpuSnapshot, tsc: bigint): bigint | null {
  const msr = v.msrs.find((m) => m.index === MSR_KVM_SYSTEM_TIME_NEW)?.data ?? 0n;
  if ((msr & 1n) === 0n) return null;
  const gpa = Number(msr & ~0x1fn);
  const page = new Uint8Array(32);
  try {
    mem.read(gpa, page);
  } catch {
    return null;
  }
  return pvclockNs(page, tsc);
}

/**
 * The boot record as a snapshot keeps it: without the bytes of every block
 * the loader wrote (`writes`: the kernel and initrd, ~13 MB for the Debian
 * kernel and its initramfs, base64 in the state file), which are in guest
 * memory anyway. A restored VM's `Vmm.boot.writes` is empty.
 */
export function snapshotBootRecord(boot: LinuxBoot): LinuxBoot {
  return { ...boot, writes: [] };
}

/**
 * Writes the memory file, then the state file (through a temporary name and a
 * rename, so a state file never names a memory file that was not written).
 * @throws {@link VmmError} `SnapshotFailed`
 */
export async function takeSnapshot(
  src: SnapshotSource,
  opts: { readonly snapshotPath: string; readonly memFilePath: string; readonly type: "Full" | "Diff" },
): Promise<{ snapshotPath: string; memFilePath: string; type: "Full" | "Diff"; stateBytes: number; memoryBytesWritten: number; durationMs: number }> {
  const t0 = performance.now();
  try {
    await src.virtio.quiesce();
  } catch (e) {
    throw failed("quiescing the devices", e);
  }
  let state: SnapshotState;
  try {
    const indexList = src.kvm.getMsrIndexList();
    const xsave2 = src.vm.checkExtension(Cap.XSAVE2) > 0;
    const saved = src.vcpus.map((v, id) => {
      const { indices, refusedRequired } = msrsToSave(v, indexList, v.getCpuid2());
      if (refusedRequired.length > 0) {
        throw new VmmError("SnapshotFailed", `vCPU ${id}: KVM_GET_MSRS refused ${refusedRequired.map((m) => `0x${m.toString(16)}`).join(", ")}, which this guest's CPUID says it has (IA32_XSS or CET state would be lost)`);
      }
      return saveVcpu(v, id, indices, xsave2);
    });
    // The clock and the TSCs at one instant (restore sets them as they were paired: ClockRestore).
    const read = readClockAndTscs(src.vm, src.vcpus, !src.tscScaled, saved[0]?.tscKhz ?? 0);
    const vcpus = saved.map((s, id) => withTsc(s, read.tscs[id]!));
    // The clock as the guest saw it on vCPU 0 (its pvclock page), else KVM's.
    const clock = guestClock(src.mem, vcpus[0]!, read.tscs[0]!) ?? read.clock;
    const vm: SnapshotState["vm"] = src.machine.irqchip === "full"
      ? { clock, irqchips: [0, 1, 2].map((c) => src.vm.getIrqchip(c)), pit: src.vm.getPit2() }
      : { clock, ioapic: src.ioapic!.state() };
    const layout = memoryLayout(src.mem);
    state = {
      stateVersion: 1,
      writer: "@ts-vmm/vmm-reference",
      takenAt: Date.now(),
      config: { ...src.machine, virtio: src.virtio.savedConfigs() },
      memory: { type: opts.type, regions: layout.regions, fileBytes: layout.fileBytes },
      vcpus,
      vm,
      devices: { serial: src.serial.state(), i8042: src.i8042.state(), ...(src.cmos ? { cmos: src.cmos.state() } : {}), virtio: src.virtio.states() },
      boot: snapshotBootRecord(src.boot),
    };
  } catch (e) {
    throw failed("reading the VM's state", e);
  }
  let written: { runs: [number, number][]; bytes: number };
  try {
    if (src.diffLogging) collectDirty(src);
    written = await writeMemoryFile(src.mem, opts.memFilePath, opts.type === "Diff" ? (i) => src.mem.regions[i]!.dirty!.pages() : undefined);
    // The next Diff is relative to this snapshot.
    if (src.diffLogging) for (const r of src.mem.regions) r.dirty?.clear();
  } catch (e) {
    throw failed(`writing guest memory to ${opts.memFilePath}`, e);
  }
  if (opts.type === "Diff") state = { ...state, memory: { ...state.memory, pages: written.runs } };
  const bytes = encodeSnapshotFile(state);
  try {
    const tmp = `${opts.snapshotPath}.tmp-${process.pid}`;
    writeFileSync(tmp, bytes, { mode: 0o600 });
    const fd = openSync(tmp, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, opts.snapshotPath);
  } catch (e) {
    throw failed(`writing the snapshot file ${opts.snapshotPath}`, e);
  }
  return { snapshotPath: opts.snapshotPath, memFilePath: opts.memFilePath, type: opts.type, stateBytes: bytes.byteLength, memoryBytesWritten: written.bytes, durationMs: performance.now() - t0 };
}

/**
 * Reads and checks a snapshot file and its memory file's size.
 * @throws {@link VmmError} `SnapshotInvalid` (or `FileNotReadable` for a file that cannot be opened).
 */
export function readSnapshot(snapshotPath: string, memFilePath: string): SnapshotState {
  const state = checkSnapshotState(decodeSnapshotFile(readSnapshotBytes(snapshotPath)));
  checkMemoryFile(memFilePath, state);
  return state;
}

/**
 * The bytes of a snapshot file (a regular file of at most a state's size plus its header and CRC).
 * @throws {@link VmmError} `SnapshotInvalid`, or `FileNotReadable` for a file that cannot be opened.
 */
export function readSnapshotBytes(snapshotPath: string): Uint8Array {
  let bytes: Uint8Array;
  let fd: number;
  try {
    fd = openSync(snapshotPath, "r");
  } catch (e) {
    throw new VmmError("FileNotReadable", `cannot open the snapshot file ${snapshotPath}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new VmmError("SnapshotInvalid", `the snapshot file ${snapshotPath} is not a regular file`);
    if (st.size > MAX_STATE_BYTES + 32) throw new VmmError("SnapshotInvalid", `the snapshot file ${snapshotPath} has ${st.size} bytes, more than a state can (${MAX_STATE_BYTES})`);
    bytes = new Uint8Array(st.size);
    for (let n = 0; n < st.size;) {
      const got = readSync(fd, bytes, n, st.size - n, n);
      if (got === 0) throw new VmmError("SnapshotInvalid", `the snapshot file ${snapshotPath} shrank while it was read`);
      n += got;
    }
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/**
 * Checks that `memFilePath` is a regular file of the size `state`'s memory needs.
 * @throws {@link VmmError} `SnapshotInvalid` (or `FileNotReadable` for a file that cannot be stat'ed).
 */
export function checkMemoryFile(memFilePath: string, state: SnapshotState): void {
  let size: number;
  try {
    const st = statSync(memFilePath);
    if (!st.isFile()) throw new VmmError("SnapshotInvalid", `the memory file ${memFilePath} is not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof VmmError) throw e;
    throw new VmmError("FileNotReadable", `cannot open the memory file ${memFilePath}: ${(e as Error).message}`, { cause: e });
  }
  if (size !== state.memory.fileBytes) throw new VmmError("SnapshotInvalid", `the memory file ${memFilePath} has ${size} bytes, the snapshot's memory ${state.memory.fileBytes} (another snapshot's memory, or truncated)`);
}

/** KVM_CLOCK_HOST_TSC (KVM_GET_CLOCK's host_tsc is valid). */
const CLOCK_HOST_TSC = 8;
const U64 = (1n << 64n) - 1n;

/**
 * Sets a restored VM's kvm-clock and its vCPUs' TSCs so that they keep the
 * pairing the snapshot read (readClockAndTscs): a Linux guest's clocksource
 * watchdog compares its TSC with kvm-clock, and marks the TSC unstable past
 * a few hundred µs of skew. {@link ClockRestore.beforeMsrs} is restoreVcpu's
 * hook, called for every vCPU in order right before its MSRs. On the first
 * it sets the clock (KVM_SET_CLOCK, flags 0: the guest does not see the time
 * spent in the files) and reads it back with the host TSC of that instant
 * (KVM_GET_CLOCK, KVM_CLOCK_HOST_TSC, which KVM gives when its master clock
 * is in use). Each vCPU's TSC is then set as an offset (KVM_VCPU_TSC_OFFSET):
 * `saved TSC + (clock read back - saved clock) * rate - host TSC`, so that at
 * that host TSC the guest's TSC and kvm-clock stand exactly where they stood
 * at the snapshot, the same for every vCPU (the algorithm of the kernel's
 * Documentation/virt/kvm/devices/vcpu.rst, without the elapsed-time part).
 * Without the host TSC, without the attribute, with a TSC rate that differs
 * from the host's (scaling: the offset is in scaled units), or when KVM does
 * not keep the offset written, the vCPU's IA32_TSC is written in its MSRs
 * instead, right after the clock for vCPU 0: those part by the time the
 * ioctls in between take (measured in the nested tier: ~3 ms, which made the
 * restored guest mark its TSC unstable).
 */
export class ClockRestore {
  readonly #vm: Pick<VmFd, "setClock" | "getClock">;
  readonly #clock: bigint;
  /** undefined: the clock is not set yet; null: set, and KVM gave no host TSC with it. */
  #pair: { clock: bigint; hostTsc: bigint } | null | undefined;
  #offsets = 0;

  /** @param clock - the snapshot's clock (`state.vm.clock`). */
  constructor(vm: Pick<VmFd, "setClock" | "getClock">, clock: bigint) {
    this.#vm = vm;
    this.#clock = clock;
  }

  /** How many vCPUs got their TSC as an offset (the others through IA32_TSC). */
  get offsetsSet(): number {
    return this.#offsets;
  }

  /**
   * restoreVcpu's `beforeMsrs` for one vCPU: sets the clock on the first call, then this
   * vCPU's TSC as an offset where it can.
   * @param hostKhz - the new vCPU's TSC rate before the restore touched it.
   * @returns true if the TSC is set (IA32_TSC is then left out of the MSRs).
   * @throws KvmError from KVM_SET_CLOCK / KVM_GET_CLOCK (the caller makes it `SnapshotInvalid`).
   */
  beforeMsrs(vcpu: Partial<TscOffsetIo>, saved: VcpuSnapshot, hostKhz: number): boolean {
    if (this.#pair === undefined) {
      this.#vm.setClock({ clock: this.#clock, flags: 0, realtime: 0n, hostTsc: 0n });
      const c = this.#vm.getClock();
      this.#pair = (c.flags & CLOCK_HOST_TSC) !== 0 ? { clock: c.clock, hostTsc: c.hostTsc } : null;
    }
    const tsc = saved.msrs.find((m) => m.index === MSR_IA32_TSC)?.data;
    const khz = saved.tscKhz;
    if (this.#pair === null || tsc === undefined || khz <= 0 || khz !== hostKhz || vcpu.setTscOffset === undefined || vcpu.getTscOffset === undefined) return false;
    // Cycles the guest's TSC goes on by while its clock went from the saved value to the one read back.
    const cycles = ((this.#pair.clock - this.#clock) * BigInt(khz)) / 1_000_000n;
    const offset = (tsc + cycles - this.#pair.hostTsc) & U64;
    try {
      vcpu.setTscOffset(offset);
      // A KVM that takes the attribute but keeps its own TSC (seen: kvm-pvm) falls back to IA32_TSC.
      if (vcpu.getTscOffset() !== offset) return false;
    } catch {
      return false; // no KVM_VCPU_TSC_OFFSET (Linux before 5.16)
    }
    this.#offsets++;
    return true;
  }
}

/**
 * Interrupt controllers of a restored VM, after its vCPUs (the clock and the TSCs are set with them: {@link ClockRestore}).
 * @throws KvmError or RangeError (the caller makes it `SnapshotInvalid`).
 */
export function restoreVmState(vm: VmFd, ioapic: Ioapic | undefined, state: SnapshotState): void {
  if (state.config.irqchip === "full") {
    state.vm.irqchips!.forEach((chip, i) => vm.setIrqchip(i, chip));
    vm.setPit2(state.vm.pit!);
  } else {
    ioapic!.restoreState(state.vm.ioapic!);
  }
}

/**
 * Applies a Diff snapshot's memory file onto `baseMemFilePath`, the memory
 * file of the snapshot before it (Full, or an earlier Diff already merged):
 * afterwards `baseMemFilePath` restores with the Diff's state file. Change a
 * copy if the base is still in use: a VM restored from a file maps it
 * privately, but sees later changes to pages it has not touched yet.
 * @throws {@link VmmError} `SnapshotInvalid` if `diffSnapshotPath` is not a Diff snapshot
 *   or the files do not fit it; `FileNotReadable` for a file that cannot be opened;
 *   `SnapshotFailed` for I/O errors.
 */
export function mergeDiffSnapshot(diffSnapshotPath: string, diffMemFilePath: string, baseMemFilePath: string): void {
  const state = readSnapshot(diffSnapshotPath, diffMemFilePath);
  if (state.memory.type !== "Diff" || state.memory.pages === undefined) throw new VmmError("SnapshotInvalid", `${diffSnapshotPath} is a ${state.memory.type} snapshot, not a Diff`);
  // The run list comes from the file: check its shape before iterating it.
  const pages: unknown = state.memory.pages;
  if (!Array.isArray(pages)) throw new VmmError("SnapshotInvalid", "the Diff's memory.pages is not a list of runs");
  for (const run of pages as unknown[]) {
    if (!Array.isArray(run) || run.length !== 2) throw new VmmError("SnapshotInvalid", "a Diff run is not an [offset, bytes] pair");
    const [off, len] = run as unknown[];
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || (off as number) < 0 || (len as number) <= 0 || (off as number) + (len as number) > state.memory.fileBytes) throw new VmmError("SnapshotInvalid", "a Diff run lies outside the memory file");
  }
  let base;
  try {
    base = statSync(baseMemFilePath);
  } catch (e) {
    throw new VmmError("FileNotReadable", `cannot open the base memory file ${baseMemFilePath}: ${(e as Error).message}`, { cause: e });
  }
  if (base.size !== state.memory.fileBytes) throw new VmmError("SnapshotInvalid", `the base memory file ${baseMemFilePath} has ${base.size} bytes, the snapshot's memory ${state.memory.fileBytes}`);
  try {
    mergeDiffMemory(diffMemFilePath, baseMemFilePath, state.memory.pages);
  } catch (e) {
    throw failed(`merging ${diffMemFilePath} into ${baseMemFilePath}`, e);
  }
}
