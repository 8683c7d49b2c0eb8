import { KvmError, check, checkU64, checkUint } from "./errors.js";
import { FdHandle, fdOf } from "./fd.js";
import { DeviceFd } from "./device.js";
import {
  Cap,
  KVM_CREATE_DEVICE_TEST,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MSR_FILTER_DEFAULT_DENY,
  KVM_MSR_FILTER_MAX_BITMAP_SIZE,
  KVM_MSR_FILTER_MAX_RANGES,
  KVM_PIT_SPEAKER_DUMMY,
} from "./generated/kvm-constants.js";
import { view } from "./layouts/bytes.js";
import {
  type ClockData,
  type IrqRoutingEntry,
  type MsiMessage,
  CREATE_DEVICE,
  DIRTY_LOG,
  IRQCHIP,
  PIT_CONFIG,
  PIT_STATE2,
  REINJECT_CONTROL,
  decodeClock,
  encodeClock,
  encodeCoalescedZone,
  encodeCreateGuestMemfd,
  encodeEnableCap,
  encodeIoeventfd,
  encodeIrqLevel,
  encodeIrqRouting,
  encodeIrqfd,
  encodeMemRegion,
  encodeMsi,
} from "./layouts/vm-structs.js";
import { encodeMsrFilter, msrFilterBitmapBytes } from "./layouts/msr-filter.js";
import { native } from "./native.js";
import { KvmStats } from "./stats.js";
import { VcpuFd } from "./vcpu.js";

const PAGE = 4096;
const MAX_GPA = 2 ** 52;
/** Most GSI routes KVM accepts (KVM_MAX_IRQ_ROUTES). */
export const MAX_IRQ_ROUTES = 4096;

/** Memory a slot maps: an mmap'ed region (vmm-sys-util MmapRegion satisfies this). */
export interface HostMemory {
  /** Host virtual address of the mapping. */
  readonly address: bigint;
  /** Bytes mapped. */
  readonly size: number;
  /**
   * The buffer that owns the mapping (`MmapRegion.buffer`), if any: a slot holds it until the
   * slot is removed or replaced, so GC cannot unmap memory the guest still maps.
   */
  readonly buffer?: SharedArrayBuffer | ArrayBuffer;
}

/** A memory slot for {@link VmFd.setUserMemoryRegion}. */
export interface UserMemoryRegion {
  /** Slot number (address space id in bits 16-31). */
  readonly slot: number;
  /** Guest-physical start, page aligned, below 2^52. */
  readonly guestPhysAddr: number;
  /** Host memory backing the slot. */
  readonly memory: HostMemory;
  /** Byte offset into `memory`, page aligned (default 0). */
  readonly memoryOffset?: number;
  /** Bytes, page aligned, at most memory.size - memoryOffset (default: the rest of `memory`). */
  readonly size?: number;
  /** Track writes for {@link VmFd.getDirtyLog} (KVM_MEM_LOG_DIRTY_PAGES). */
  readonly logDirtyPages?: boolean;
  /** Guest writes exit as MMIO (KVM_MEM_READONLY). */
  readonly readOnly?: boolean;
}

/** A slot for {@link VmFd.setUserMemoryRegion2}: optionally backed by a guest_memfd for private memory. */
export interface UserMemoryRegion2 extends UserMemoryRegion {
  readonly guestMemfd?: { readonly fd: number; readonly offset?: number };
}

/** Where an ioeventfd listens. */
export type IoEventAddress = { readonly kind: "pio"; readonly address: number } | { readonly kind: "mmio"; readonly address: number };

/** Options of {@link VmFd.registerIoevent}. */
export interface IoeventOptions {
  /** Signal only when the guest writes this value (KVM_IOEVENTFD_FLAG_DATAMATCH); needs `len`. */
  readonly datamatch?: bigint | number;
  /** Access width to match: 1, 2, 4 or 8 bytes, or 0 for any (default: 0, or required with datamatch). */
  readonly len?: 0 | 1 | 2 | 4 | 8;
}

/** Options of {@link VmFd.createDevice}. */
export interface CreateDeviceOptions {
  /** KVM_DEV_TYPE_* */
  readonly type: number;
  /** Only test whether the device type could be created (KVM_CREATE_DEVICE_TEST). */
  readonly test?: boolean;
}

/** One range of an {@link MsrFilter}: which accesses of MSRs `base`..`base + nmsrs - 1` are allowed. */
export interface MsrFilterRange {
  /** The accesses this range rules: `KVM_MSR_FILTER_READ`, `KVM_MSR_FILTER_WRITE` or both. */
  readonly flags: number;
  /** First MSR index of the range (u32). */
  readonly base: number;
  /** MSRs in the range, 1 to 12288 (the kernel's 0x600-byte bitmap limit). */
  readonly nmsrs: number;
  /**
   * One bit per MSR, at least `ceil(nmsrs / 8)` bytes: bit `i % 8` of byte `i / 8` is MSR
   * `base + i`; 1 allows the access, 0 denies it. Copied (and zero-padded to the 8-byte
   * words the kernel reads) before the call.
   */
  readonly bitmap: Uint8Array;
}

/** Argument of {@link VmFd.setMsrFilter} (struct kvm_msr_filter). */
export interface MsrFilter {
  /** Deny MSR accesses no range matches (KVM_MSR_FILTER_DEFAULT_DENY); default false: allow. */
  readonly defaultDeny?: boolean;
  /** At most 16 ranges (KVM_MSR_FILTER_MAX_RANGES); an empty list with default allow removes the filter. */
  readonly ranges: readonly MsrFilterRange[];
}

interface SlotInfo {
  readonly size: number;
  readonly logDirty: boolean;
  /** The slot's `memory` and its buffer, held so GC cannot unmap what the guest still maps. */
  readonly keep: readonly unknown[];
}

/**
 * The buffer of a HostMemory that has one (MmapRegion.buffer, a SharedArrayBuffer). Holding it
 * holds the mapping itself: MmapRegion.close() drops only the region's own reference, and the
 * mapping is unmapped when the last buffer referencing it is collected.
 */
function bufferOf(mem: HostMemory): unknown {
  try {
    const b: unknown = mem.buffer;
    return b instanceof SharedArrayBuffer || b instanceof ArrayBuffer ? b : undefined;
  } catch {
    return undefined;
  }
}

/** vCPU → the slot table of its VM: a VM's memory stays mapped while a vCPU can still run it. */
const vcpuSlots = new WeakMap<VcpuFd, Map<number, SlotInfo>>();

/** KVM_CAP_X2APIC_API flag: 32-bit x2APIC IDs in routes and KVM_SIGNAL_MSI (api.rst 7.19). */
export const KVM_X2APIC_API_USE_32BIT_IDS = 1;
/** KVM_CAP_X2APIC_API flag: no broadcast quirk for x2APIC ID 0xff (api.rst 7.19). */
export const KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK = 2;
/** Hypercall number for KVM_CAP_EXIT_HYPERCALL's argument mask (`1 << KVM_HC_MAP_GPA_RANGE`). */
export const KVM_HC_MAP_GPA_RANGE = 12;

/**
 * A VM fd: memory slots, vCPUs, in-kernel irqchip and PIT, irqfd/ioeventfd,
 * GSI routing, clocks, dirty logging and devices. Mirrors rust-vmm `VmFd`.
 */
export class VmFd {
  readonly #h: FdHandle;
  readonly #mmapSize: number;
  readonly #slots = new Map<number, SlotInfo>();
  #xsave2Size: number | undefined;
  #nestedStateSize: number | undefined;
  #dirtyRingBytes = 0;

  /** @internal Use {@link Kvm.createVm}. */
  constructor(fd: number, vcpuMmapSize: number) {
    this.#h = new FdHandle(fd, true, "VmFd");
    this.#mmapSize = vcpuMmapSize;
  }

  /** The raw fd. @throws {@link KvmError} `Closed` */
  get fd(): number {
    return this.#h.fd;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#h.closed;
  }

  /**
   * KVM_GET_STATS_FD (KVM_CAP_BINARY_STATS_FD, Linux 5.14+): KVM's binary statistics of this
   * VM (names such as `remote_tlb_flush`, `pages_4k`, `max_mmu_page_hash_collisions`), as a {@link KvmStats} the caller owns and closes.
   * @throws {@link KvmError} `ENOTTY`/`EINVAL` where the kernel lacks it; `InvalidStats` for a
   *   stats file whose layout does not add up.
   */
  statsFd(): KvmStats {
    return new KvmStats(this.#h.val("KVM_GET_STATS_FD"));
  }

  /** KVM_CHECK_EXTENSION on the VM fd (answers can differ per VM type). @throws {@link KvmError} */
  checkExtension(cap: number): number {
    return this.#h.val("KVM_CHECK_EXTENSION", checkUint(cap, "cap"));
  }

  #region(r: UserMemoryRegion2, v2: boolean): void {
    check(r !== null && typeof r === "object", "region must be an object");
    const slot = checkUint(r.slot, "slot");
    const gpa = checkUint(r.guestPhysAddr, "guestPhysAddr", MAX_GPA);
    check(gpa % PAGE === 0, `guestPhysAddr 0x${gpa.toString(16)} is not page aligned`, "Unaligned");
    const mem = r.memory;
    check(mem !== null && typeof mem === "object" && typeof mem.address === "bigint" && Number.isSafeInteger(mem.size),
      "memory must be a mapping with a bigint address and a size (MmapRegion)");
    const offset = checkUint(r.memoryOffset ?? 0, "memoryOffset", 2 ** 53);
    check(offset % PAGE === 0, "memoryOffset is not page aligned", "Unaligned");
    check(offset <= mem.size, "memoryOffset beyond the mapping", "OutOfRange");
    const size = checkUint(r.size ?? mem.size - offset, "size", 2 ** 53);
    check(size % PAGE === 0, `size 0x${size.toString(16)} is not page aligned`, "Unaligned");
    check(size > 0, "size must be positive (use removeUserMemoryRegion to delete a slot)");
    check(offset + size <= mem.size, `slot of ${size} bytes at offset ${offset} exceeds the ${mem.size}-byte mapping`, "OutOfRange");
    check(gpa + size <= MAX_GPA, "slot ends above 2^52", "OutOfRange");
    check(mem.address % BigInt(PAGE) === 0n && mem.address > 0n, "memory address is not page aligned", "Unaligned");
    let flags = (r.logDirtyPages ? KVM_MEM_LOG_DIRTY_PAGES : 0) | (r.readOnly ? KVM_MEM_READONLY : 0);
    let gmemFd = 0;
    let gmemOff = 0n;
    if (r.guestMemfd !== undefined) {
      check(v2, "guestMemfd needs setUserMemoryRegion2");
      gmemFd = fdOf(r.guestMemfd.fd, "guestMemfd.fd");
      const o = checkUint(r.guestMemfd.offset ?? 0, "guestMemfd.offset", 2 ** 53);
      check(o % PAGE === 0, "guestMemfd.offset is not page aligned", "Unaligned");
      gmemOff = BigInt(o);
      flags |= KVM_MEM_GUEST_MEMFD;
    }
    const buf = encodeMemRegion({
      slot, flags, guestPhysAddr: BigInt(gpa), memorySize: BigInt(size),
      userspaceAddr: mem.address + BigInt(offset), guestMemfd: gmemFd, guestMemfdOffset: gmemOff,
    }, v2);
    this.#h.buf(v2 ? "KVM_SET_USER_MEMORY_REGION2" : "KVM_SET_USER_MEMORY_REGION", buf);
    this.#slots.set(slot, { size, logDirty: !!r.logDirtyPages, keep: [mem, bufferOf(mem)] });
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: creates or changes slot `slot`. The slot is
   * checked against the mapping before the call: it cannot point outside
   * `memory`.
   *
   * Safety: the guest reads and writes `memory` for as long as the slot
   * exists. An `MmapRegion` (anything with a `buffer`) is kept mapped by this
   * VmFd and its vCPUs until the slot is removed or replaced, even if it is
   * closed or dropped; for other `HostMemory`, keep the mapping alive until
   * {@link VmFd.removeUserMemoryRegion} or close.
   * @throws {@link KvmError} `Unaligned`, `OutOfRange`, `InvalidArgument` before the call; `EEXIST` (overlap), `EINVAL` from KVM.
   */
  setUserMemoryRegion(region: UserMemoryRegion): void {
    this.#region(region, false);
  }

  /**
   * KVM_SET_USER_MEMORY_REGION2 (KVM_CAP_USER_MEMORY2): as setUserMemoryRegion,
   * with an optional guest_memfd for private memory (KVM_MEM_GUEST_MEMFD).
   * @throws {@link KvmError} as setUserMemoryRegion; `EINVAL` if the VM type does not allow guest_memfd.
   */
  setUserMemoryRegion2(region: UserMemoryRegion2): void {
    this.#region(region, true);
  }

  /** Deletes slot `slot` (memory_size 0). @throws {@link KvmError} */
  removeUserMemoryRegion(slot: number): void {
    checkUint(slot, "slot");
    const buf = encodeMemRegion({ slot, flags: 0, guestPhysAddr: 0n, memorySize: 0n, userspaceAddr: 0n }, false);
    this.#h.buf("KVM_SET_USER_MEMORY_REGION", buf);
    this.#slots.delete(slot);
  }

  /**
   * KVM_CREATE_GUEST_MEMFD: a file of guest-private memory for
   * setUserMemoryRegion2. The caller owns (and closes) the returned fd.
   * @param flags GUEST_MEMFD_FLAG_* (bigint).
   * @throws {@link KvmError} `Unaligned` size; `EINVAL`/`ENOTTY` from KVM.
   */
  createGuestMemfd(size: number, flags: bigint = 0n): number {
    const s = checkUint(size, "size", 2 ** 53);
    check(s > 0 && s % PAGE === 0, "guest_memfd size must be a positive multiple of 4096", "Unaligned");
    return this.#h.buf("KVM_CREATE_GUEST_MEMFD", encodeCreateGuestMemfd(BigInt(s), checkU64(flags, "flags")));
  }

  /**
   * KVM_CREATE_VCPU and the mapping of its kvm_run page.
   * @throws {@link KvmError} `EEXIST` for a used id, `EINVAL` above the max id.
   */
  createVcpu(id: number): VcpuFd {
    checkUint(id, "vcpu id");
    // Before KVM_CREATE_VCPU: a failure here must not leak the vCPU fd.
    this.#xsave2Size ??= this.checkExtension(Cap.XSAVE2);
    this.#nestedStateSize ??= this.checkExtension(Cap.NESTED_STATE);
    const fd = this.#h.val("KVM_CREATE_VCPU", id);
    const vcpu = VcpuFd.create(fd, id, this.#mmapSize, this.#xsave2Size, this.#dirtyRingBytes, this.#nestedStateSize);
    vcpuSlots.set(vcpu, this.#slots);
    return vcpu;
  }

  /**
   * KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and local APICs. Call before creating vCPUs.
   * Spelled like {@link VmFd.getIrqchip} / {@link VmFd.enableSplitIrqchip}.
   * @throws {@link KvmError}
   */
  createIrqchip(): void {
    this.#h.val("KVM_CREATE_IRQCHIP");
  }

  /**
   * KVM_SET_MEMORY_ATTRIBUTES: sets `attributes` (e.g. `KVM_MEMORY_ATTRIBUTE_PRIVATE`) on
   * the page-aligned guest-physical range `[address, address + size)`.
   * @throws {@link KvmError} `Unaligned`, `OutOfRange`; from KVM `EINVAL`/`ENOTTY` where the
   *   VM type has no memory attributes (KVM_CAP_MEMORY_ATTRIBUTES 0, as on this host).
   */
  setMemoryAttributes(address: number, size: number, attributes: bigint): void {
    checkUint(address, "address", 2 ** 52);
    checkUint(size, "size", 2 ** 52);
    check(address % PAGE === 0 && size % PAGE === 0 && size > 0, "address and size must be page-aligned, size > 0", "Unaligned");
    const buf = new Uint8Array(32);
    const dv = view(buf);
    dv.setBigUint64(0, BigInt(address), true);
    dv.setBigUint64(8, BigInt(size), true);
    dv.setBigUint64(16, checkU64(attributes, "attributes"), true);
    this.#h.buf("KVM_SET_MEMORY_ATTRIBUTES", buf);
  }

  /**
   * KVM_SET_BOOT_CPU_ID: which vCPU id is the boot processor (default 0). Call before
   * creating any vCPU.
   * @throws {@link KvmError} `OutOfRange`; `EBUSY` once vCPUs exist, `EINVAL` from KVM.
   */
  setBootCpuId(id: number): void {
    this.#h.val("KVM_SET_BOOT_CPU_ID", checkUint(id, "boot vCPU id", 2 ** 32));
  }

  /**
   * KVM_X86_SET_MSR_FILTER (KVM_CAP_X86_MSR_FILTER): replaces the VM's MSR filter. A denied
   * access makes the guest take #GP, or, with `enableCap(Cap.X86_USER_SPACE_MSR,
   * [KVM_MSR_EXIT_REASON_FILTER])`, exits to user space as `X86Rdmsr`/`X86Wrmsr` with
   * reason `KVM_MSR_EXIT_REASON_FILTER`. Each bitmap is copied into a buffer of the size
   * the kernel reads; the addon writes the bitmap pointers itself.
   * @throws {@link KvmError} `TooLarge` above 16 ranges, `InvalidArgument` (flags, a bitmap
   *   shorter than `ceil(nmsrs / 8)` bytes), `OutOfRange` (nmsrs, base); `Unsupported` when the
   *   binding has no `ioctlMsrFilter`; from KVM `EINVAL` (default deny with no ranges),
   *   `EBUSY` while vCPUs run.
   */
  setMsrFilter(filter: MsrFilter): void {
    check(filter !== null && typeof filter === "object" && Array.isArray(filter.ranges), "filter must be { defaultDeny?, ranges: [] }");
    const ranges = filter.ranges;
    check(ranges.length <= KVM_MSR_FILTER_MAX_RANGES, `at most ${KVM_MSR_FILTER_MAX_RANGES} MSR filter ranges`, "TooLarge");
    const maxMsrs = KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8;
    const bitmaps: Uint8Array[] = [];
    const fields = ranges.map((r, i) => {
      check(r !== null && typeof r === "object", `range ${i} must be an object`);
      const flags = checkUint(r.flags, `range ${i} flags`);
      check(flags >= 1 && flags <= 3, `range ${i} flags must be KVM_MSR_FILTER_READ and/or KVM_MSR_FILTER_WRITE`);
      const nmsrs = checkUint(r.nmsrs, `range ${i} nmsrs`, maxMsrs + 1);
      check(nmsrs > 0, `range ${i} nmsrs must be at least 1`, "OutOfRange");
      const base = checkUint(r.base, `range ${i} base`, 2 ** 32);
      const used = Math.ceil(nmsrs / 8);
      check(r.bitmap instanceof Uint8Array && r.bitmap.byteLength >= used, `range ${i} bitmap must hold ceil(nmsrs / 8) = ${used} bytes`);
      const copy = new Uint8Array(msrFilterBitmapBytes(nmsrs));
      copy.set(r.bitmap.subarray(0, used));
      bitmaps.push(copy);
      return { flags, nmsrs, base };
    });
    const buf = encodeMsrFilter(filter.defaultDeny ? KVM_MSR_FILTER_DEFAULT_DENY : 0, fields);
    const n = native();
    check(typeof n.ioctlMsrFilter === "function", "the native binding has no ioctlMsrFilter", "Unsupported");
    const r = n.ioctlMsrFilter(this.#h.fd, buf, bitmaps);
    if (r < 0) throw KvmError.fromErrno("KVM_X86_SET_MSR_FILTER", -r);
  }

  /** @deprecated Use {@link VmFd.createIrqchip} (one spelling with getIrqchip/setIrqchip). @throws {@link KvmError} */
  createIrqChip(): void {
    this.createIrqchip();
  }

  /**
   * KVM_ENABLE_CAP on the VM.
   * @throws {@link KvmError} `EINVAL` if the cap cannot be enabled (or enabled now).
   */
  enableCap(cap: number, args: readonly (bigint | number)[] = [], flags = 0): number {
    check(Array.isArray(args) && args.length <= 4, "args: at most 4 values");
    return this.#h.buf("KVM_ENABLE_CAP", encodeEnableCap(checkUint(cap, "cap"), checkUint(flags, "flags"), args.map((a) => checkU64(a, "arg"))));
  }

  /** Split irqchip: local APICs in the kernel, IOAPIC/PIC in user space (KVM_CAP_SPLIT_IRQCHIP). @throws {@link KvmError} */
  enableSplitIrqchip(ioapicPins = 24): void {
    this.enableCap(Cap.SPLIT_IRQCHIP, [checkUint(ioapicPins, "ioapicPins", 257)]);
  }

  /** KVM_CREATE_PIT2: in-kernel i8254. @throws {@link KvmError} `EEXIST` if present, `ENOENT` without irqchip. */
  createPit2(opts: { readonly speakerDummy?: boolean } = {}): void {
    const buf = new Uint8Array(PIT_CONFIG.size);
    view(buf).setUint32(PIT_CONFIG.flags, opts.speakerDummy ? KVM_PIT_SPEAKER_DUMMY : 0, true);
    this.#h.buf("KVM_CREATE_PIT2", buf);
  }

  /** KVM_GET_PIT2: raw struct kvm_pit_state2 (112 bytes). @throws {@link KvmError} `ENXIO` without a PIT. */
  getPit2(): Uint8Array {
    const buf = new Uint8Array(PIT_STATE2.size);
    this.#h.buf("KVM_GET_PIT2", buf);
    return buf;
  }

  /** KVM_SET_PIT2 from raw struct kvm_pit_state2 bytes. @throws {@link KvmError} */
  setPit2(state: Uint8Array): void {
    check(state instanceof Uint8Array && state.byteLength === PIT_STATE2.size, `state must be ${PIT_STATE2.size} bytes`);
    this.#h.buf("KVM_SET_PIT2", state.slice());
  }

  /** KVM_REINJECT_CONTROL: whether missed PIT ticks are reinjected. @throws {@link KvmError} `ENXIO` without a PIT. */
  setPitReinject(reinject: boolean): void {
    const buf = new Uint8Array(REINJECT_CONTROL.size);
    buf[REINJECT_CONTROL.pitReinject] = reinject ? 1 : 0;
    this.#h.buf("KVM_REINJECT_CONTROL", buf);
  }

  /**
   * KVM_IRQFD: writing to `eventfd` raises `gsi`. With `resampleFd`, the GSI
   * is level-triggered and `resampleFd` is signalled on EOI.
   * @throws {@link KvmError} `EINVAL`, `EBUSY` (already bound).
   */
  registerIrqfd(eventfd: number | { readonly fd: number }, gsi: number, opts: { readonly resampleFd?: number | { readonly fd: number } } = {}): void {
    const fd = fdOf(eventfd, "eventfd");
    const rfd = opts.resampleFd === undefined ? 0 : fdOf(opts.resampleFd, "resampleFd");
    const flags = opts.resampleFd === undefined ? 0 : KVM_IRQFD_FLAG_RESAMPLE;
    this.#h.buf("KVM_IRQFD", encodeIrqfd(fd, checkUint(gsi, "gsi"), flags, rfd));
  }

  /** KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN. @throws {@link KvmError} */
  unregisterIrqfd(eventfd: number | { readonly fd: number }, gsi: number): void {
    this.#h.buf("KVM_IRQFD", encodeIrqfd(fdOf(eventfd, "eventfd"), checkUint(gsi, "gsi"), KVM_IRQFD_FLAG_DEASSIGN, 0));
  }

  #ioevent(eventfd: number | { readonly fd: number }, addr: IoEventAddress, opts: IoeventOptions, deassign: boolean): void {
    const fd = fdOf(eventfd, "eventfd");
    check(addr !== null && typeof addr === "object" && (addr.kind === "pio" || addr.kind === "mmio"), "addr must be { kind: 'pio' | 'mmio', address }");
    const a = checkUint(addr.address, "address", addr.kind === "pio" ? 0x10000 : MAX_GPA);
    const len = opts.len ?? 0;
    check([0, 1, 2, 4, 8].includes(len), "len must be 0, 1, 2, 4 or 8");
    let flags = (addr.kind === "pio" ? KVM_IOEVENTFD_FLAG_PIO : 0) | (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0);
    let dm = 0n;
    if (opts.datamatch !== undefined) {
      check(len !== 0, "datamatch needs len 1, 2, 4 or 8");
      dm = checkU64(opts.datamatch, "datamatch");
      check(dm < 1n << BigInt(8 * len), "datamatch is wider than len", "OutOfRange");
      flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
    this.#h.buf("KVM_IOEVENTFD", encodeIoeventfd(dm, BigInt(a), len, fd, flags));
  }

  /**
   * KVM_IOEVENTFD: a guest write to `addr` signals `eventfd` in the kernel,
   * without an exit to user space.
   * @throws {@link KvmError} `InvalidArgument`; `EEXIST` for a duplicate, `ENOSPC` when full.
   */
  registerIoevent(eventfd: number | { readonly fd: number }, addr: IoEventAddress, opts: IoeventOptions = {}): void {
    this.#ioevent(eventfd, addr, opts, false);
  }

  /** Removes an ioeventfd registered with the same arguments. @throws {@link KvmError} `ENOENT` if none matches. */
  unregisterIoevent(eventfd: number | { readonly fd: number }, addr: IoEventAddress, opts: IoeventOptions = {}): void {
    this.#ioevent(eventfd, addr, opts, true);
  }

  /**
   * KVM_SET_GSI_ROUTING: replaces the whole GSI routing table.
   * @throws {@link KvmError} `TooLarge` above 4096 entries; `EINVAL` from KVM.
   */
  setGsiRouting(entries: readonly IrqRoutingEntry[]): void {
    check(Array.isArray(entries), "entries must be an array");
    check(entries.length <= MAX_IRQ_ROUTES, `at most ${MAX_IRQ_ROUTES} routes`, "TooLarge");
    for (const e of entries) {
      checkUint(e.gsi, "gsi");
      if (e.type === "irqchip") {
        checkUint(e.irqchip, "irqchip", 3);
        checkUint(e.pin, "pin", 24);
      } else {
        check(e.type === "msi", "route type must be 'irqchip' or 'msi'");
        checkU64(e.address, "msi address");
        checkUint(e.data, "msi data");
      }
    }
    this.#h.buf("KVM_SET_GSI_ROUTING", encodeIrqRouting(entries));
  }

  /**
   * KVM_SIGNAL_MSI: injects an MSI.
   * @returns > 0 delivered, 0 blocked by the guest.
   * @throws {@link KvmError} `EINVAL` / `EFAULT`.
   */
  signalMsi(msg: MsiMessage): number {
    checkU64(msg.address, "address");
    checkUint(msg.data, "data");
    return this.#h.buf("KVM_SIGNAL_MSI", encodeMsi(msg));
  }

  /** KVM_IRQ_LINE: sets GSI `irq` high or low. @throws {@link KvmError} `ENXIO` without irqchip. */
  setIrqLine(irq: number, active: boolean): void {
    this.#h.buf("KVM_IRQ_LINE", encodeIrqLevel(checkUint(irq, "irq"), active ? 1 : 0));
  }

  /**
   * KVM_GET_IRQCHIP: the 512-byte state of chip `chipId` (0 PIC master,
   * 1 PIC slave, 2 IOAPIC).
   * @throws {@link KvmError} `ENXIO` without in-kernel irqchip.
   */
  getIrqchip(chipId: number): Uint8Array {
    const buf = new Uint8Array(IRQCHIP.size);
    view(buf).setUint32(0, checkUint(chipId, "chipId", 3), true);
    this.#h.buf("KVM_GET_IRQCHIP", buf);
    return buf.slice(IRQCHIP.chip, IRQCHIP.chip + IRQCHIP.chipSize);
  }

  /** KVM_SET_IRQCHIP from 512 bytes of chip state. @throws {@link KvmError} */
  setIrqchip(chipId: number, chip: Uint8Array): void {
    check(chip instanceof Uint8Array && chip.byteLength === IRQCHIP.chipSize, "chip must be 512 bytes");
    const buf = new Uint8Array(IRQCHIP.size);
    view(buf).setUint32(0, checkUint(chipId, "chipId", 3), true);
    buf.set(chip, IRQCHIP.chip);
    this.#h.buf("KVM_SET_IRQCHIP", buf);
  }

  /** KVM_GET_CLOCK: kvmclock in ns. @throws {@link KvmError} */
  getClock(): ClockData {
    const buf = new Uint8Array(48);
    this.#h.buf("KVM_GET_CLOCK", buf);
    return decodeClock(buf);
  }

  /** KVM_SET_CLOCK. @throws {@link KvmError} `EINVAL` for unknown flags. */
  setClock(c: ClockData): void {
    checkU64(c.clock, "clock");
    this.#h.buf("KVM_SET_CLOCK", encodeClock({ ...c, realtime: c.realtime ?? 0n, hostTsc: c.hostTsc ?? 0n }));
  }

  /**
   * KVM_GET_DIRTY_LOG: pages of `slot` written since the last call, one bit
   * per page (bit i of byte j is page 8j + i). The slot must have been set
   * with logDirtyPages by this VmFd (its size sizes the bitmap).
   * @throws {@link KvmError} `NotRegistered` for an unknown or non-logging slot; `ENOENT` from KVM.
   */
  getDirtyLog(slot: number): Uint8Array {
    checkUint(slot, "slot");
    const s = this.#slots.get(slot);
    check(s !== undefined && s.logDirty, `slot ${slot} was not set with logDirtyPages by this VmFd`, "NotRegistered");
    const pages = s.size / PAGE;
    // The kernel writes ALIGN(pages, 64) / 8 bytes.
    const bytes = Math.ceil(pages / 64) * 8;
    const bitmap = new Uint8Array(bytes);
    const buf = new Uint8Array(DIRTY_LOG.size);
    view(buf).setUint32(DIRTY_LOG.slot, slot, true);
    this.#h.ptr("KVM_GET_DIRTY_LOG", buf, DIRTY_LOG.bitmap, bitmap, bytes);
    return bitmap;
  }

  /**
   * Enables the per-vCPU dirty ring (KVM_CAP_DIRTY_LOG_RING_ACQ_REL if
   * available, else KVM_CAP_DIRTY_LOG_RING) of `bytes` (a power of two,
   * multiple of 4096). Call before creating vCPUs; harvest with
   * {@link VcpuFd.harvestDirtyRing}, then {@link VmFd.resetDirtyRings}.
   * @throws {@link KvmError} `Unsupported`, `InvalidArgument`; `EINVAL` from KVM.
   */
  enableDirtyRing(bytes: number): void {
    checkUint(bytes, "bytes");
    check(bytes >= PAGE && (bytes & (bytes - 1)) === 0, "ring size must be a power of two >= 4096");
    const cap = this.checkExtension(Cap.DIRTY_LOG_RING_ACQ_REL) > 0 ? Cap.DIRTY_LOG_RING_ACQ_REL : Cap.DIRTY_LOG_RING;
    const max = this.checkExtension(cap);
    check(max > 0, "dirty ring unsupported", "Unsupported");
    check(bytes <= max, `ring size above the maximum ${max}`, "OutOfRange");
    this.enableCap(cap, [bytes]);
    this.#dirtyRingBytes = bytes;
  }

  /** KVM_RESET_DIRTY_RINGS: re-protects harvested entries. @returns entries reset. @throws {@link KvmError} */
  resetDirtyRings(): number {
    return this.#h.val("KVM_RESET_DIRTY_RINGS");
  }

  /**
   * KVM_REGISTER_COALESCED_MMIO: writes to the zone are buffered in the
   * coalesced ring instead of exiting.
   * @throws {@link KvmError} `InvalidArgument`; `ENOBUFS`/`ENXIO` from KVM.
   */
  registerCoalescedMmio(addr: number, size: number, opts: { readonly pio?: boolean } = {}): void {
    this.#h.buf("KVM_REGISTER_COALESCED_MMIO", encodeCoalescedZone(BigInt(checkUint(addr, "addr", MAX_GPA)), checkUint(size, "size"), !!opts.pio));
  }

  /** KVM_UNREGISTER_COALESCED_MMIO. @throws {@link KvmError} */
  unregisterCoalescedMmio(addr: number, size: number, opts: { readonly pio?: boolean } = {}): void {
    this.#h.buf("KVM_UNREGISTER_COALESCED_MMIO", encodeCoalescedZone(BigInt(checkUint(addr, "addr", MAX_GPA)), checkUint(size, "size"), !!opts.pio));
  }

  /** KVM_SET_TSS_ADDR: a 3-page guest-physical area KVM uses on Intel (below 4 GiB). @throws {@link KvmError} */
  setTssAddress(addr: number): void {
    this.#h.val("KVM_SET_TSS_ADDR", checkUint(addr, "addr"));
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one guest-physical page for the identity map (Intel). Call before vCPUs. @throws {@link KvmError} */
  setIdentityMapAddress(addr: number): void {
    const buf = new Uint8Array(8);
    view(buf).setBigUint64(0, BigInt(checkUint(addr, "addr", 2 ** 32)), true);
    this.#h.buf("KVM_SET_IDENTITY_MAP_ADDR", buf);
  }

  /** KVM_SET_TSC_KHZ on the VM: default TSC frequency of new vCPUs (KVM_CAP_VM_TSC_CONTROL). @throws {@link KvmError} */
  setTscKhz(khz: number): void {
    this.#h.val("KVM_SET_TSC_KHZ", checkUint(khz, "khz"));
  }

  /**
   * KVM_CREATE_DEVICE. With `test`, only checks the type and returns undefined.
   * @throws {@link KvmError} `ENODEV` for an unknown type, `EEXIST`.
   */
  createDevice(opts: CreateDeviceOptions): DeviceFd | undefined {
    const buf = new Uint8Array(CREATE_DEVICE.size);
    const dv = view(buf);
    dv.setUint32(CREATE_DEVICE.type, checkUint(opts.type, "type"), true);
    dv.setUint32(CREATE_DEVICE.flags, opts.test ? KVM_CREATE_DEVICE_TEST : 0, true);
    this.#h.buf("KVM_CREATE_DEVICE", buf);
    if (opts.test) return undefined;
    return new DeviceFd(dv.getUint32(CREATE_DEVICE.fd, true));
  }

  /** Closes the VM fd. Close vCPUs first. Idempotent. @throws {@link KvmError} */
  close(): void {
    this.#h.close();
  }
}

/** Page numbers set in a dirty bitmap from {@link VmFd.getDirtyLog}. */
export function dirtyPages(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bitmap.length; i++) {
    let b = bitmap[i]!;
    while (b !== 0) {
      const bit = 31 - Math.clz32(b & -b);
      out.push(i * 8 + bit);
      b &= b - 1;
    }
  }
  return out;
}

