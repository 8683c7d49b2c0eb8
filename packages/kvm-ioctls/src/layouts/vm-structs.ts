// Argument structs of VM and device ioctls (include/uapi/linux/kvm.h,
// arch/x86/include/uapi/asm/kvm.h). Each encoder returns a new zeroed buffer
// of exactly sizeof(struct); offsets are named constants.
import { setU64, u64, view } from "./bytes.js";

/** struct kvm_userspace_memory_region (32 bytes). */
export const MEM_REGION = { size: 32, slot: 0, flags: 4, guestPhysAddr: 8, memorySize: 16, userspaceAddr: 24 } as const;
/** struct kvm_userspace_memory_region2 (160 bytes). */
export const MEM_REGION2 = { ...MEM_REGION, size: 160, guestMemfdOffset: 32, guestMemfd: 40 } as const;

export interface MemRegionFields {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
  guestMemfdOffset?: bigint;
  guestMemfd?: number;
}

export function encodeMemRegion(r: MemRegionFields, v2: boolean): Uint8Array {
  const buf = new Uint8Array(v2 ? MEM_REGION2.size : MEM_REGION.size);
  const dv = view(buf);
  dv.setUint32(MEM_REGION.slot, r.slot, true);
  dv.setUint32(MEM_REGION.flags, r.flags, true);
  setU64(dv, MEM_REGION.guestPhysAddr, r.guestPhysAddr);
  setU64(dv, MEM_REGION.memorySize, r.memorySize);
  setU64(dv, MEM_REGION.userspaceAddr, r.userspaceAddr);
  if (v2) {
    setU64(dv, MEM_REGION2.guestMemfdOffset, r.guestMemfdOffset ?? 0n);
    dv.setUint32(MEM_REGION2.guestMemfd, r.guestMemfd ?? 0, true);
  }
  return buf;
}

/** struct kvm_create_guest_memfd (64 bytes). */
export const CREATE_GUEST_MEMFD = { size: 64, sizeField: 0, flags: 8 } as const;

export function encodeCreateGuestMemfd(size: bigint, flags: bigint): Uint8Array {
  const buf = new Uint8Array(CREATE_GUEST_MEMFD.size);
  const dv = view(buf);
  setU64(dv, 0, size);
  setU64(dv, 8, flags);
  return buf;
}

/** struct kvm_irqfd (32 bytes). */
export const IRQFD = { size: 32, fd: 0, gsi: 4, flags: 8, resamplefd: 12 } as const;

export function encodeIrqfd(fd: number, gsi: number, flags: number, resamplefd: number): Uint8Array {
  const buf = new Uint8Array(IRQFD.size);
  const dv = view(buf);
  dv.setUint32(0, fd, true);
  dv.setUint32(4, gsi, true);
  dv.setUint32(8, flags, true);
  dv.setUint32(12, resamplefd, true);
  return buf;
}

/** struct kvm_ioeventfd (64 bytes). */
export const IOEVENTFD = { size: 64, datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24 } as const;

export function encodeIoeventfd(datamatch: bigint, addr: bigint, len: number, fd: number, flags: number): Uint8Array {
  const buf = new Uint8Array(IOEVENTFD.size);
  const dv = view(buf);
  setU64(dv, 0, datamatch);
  setU64(dv, 8, addr);
  dv.setUint32(16, len, true);
  dv.setInt32(20, fd, true);
  dv.setUint32(24, flags, true);
  return buf;
}

/** struct kvm_msi (32 bytes). */
export const MSI = { size: 32, addressLo: 0, addressHi: 4, data: 8, flags: 12, devid: 16 } as const;

/** An MSI message: 64-bit address, 32-bit data. */
export interface MsiMessage {
  address: bigint;
  data: number;
  /** KVM_MSI_VALID_DEVID and a devid, where the platform needs one. */
  devid?: number;
}

export function encodeMsi(m: MsiMessage): Uint8Array {
  const buf = new Uint8Array(MSI.size);
  const dv = view(buf);
  dv.setUint32(0, Number(m.address & 0xffffffffn), true);
  dv.setUint32(4, Number((m.address >> 32n) & 0xffffffffn), true);
  dv.setUint32(8, m.data, true);
  if (m.devid !== undefined) {
    dv.setUint32(12, 1, true);
    dv.setUint32(16, m.devid, true);
  }
  return buf;
}

/** A GSI routing entry (struct kvm_irq_routing_entry, 48 bytes). */
export type IrqRoutingEntry =
  | { gsi: number; type: "irqchip"; irqchip: number; pin: number }
  | { gsi: number; type: "msi"; address: bigint; data: number; devid?: number };
export const IRQ_ROUTING = { header: 8, entrySize: 48, gsi: 0, type: 4, flags: 8, u: 16 } as const;

export function encodeIrqRouting(entries: readonly IrqRoutingEntry[]): Uint8Array {
  const buf = new Uint8Array(IRQ_ROUTING.header + entries.length * IRQ_ROUTING.entrySize);
  const dv = view(buf);
  dv.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const o = IRQ_ROUTING.header + i * IRQ_ROUTING.entrySize;
    dv.setUint32(o, e.gsi, true);
    if (e.type === "irqchip") {
      dv.setUint32(o + 4, 1, true); // KVM_IRQ_ROUTING_IRQCHIP
      dv.setUint32(o + 16, e.irqchip, true);
      dv.setUint32(o + 20, e.pin, true);
    } else {
      dv.setUint32(o + 4, 2, true); // KVM_IRQ_ROUTING_MSI
      dv.setUint32(o + 16, Number(e.address & 0xffffffffn), true);
      dv.setUint32(o + 20, Number((e.address >> 32n) & 0xffffffffn), true);
      dv.setUint32(o + 24, e.data, true);
      if (e.devid !== undefined) {
        dv.setUint32(o + 8, 1, true); // KVM_MSI_VALID_DEVID
        dv.setUint32(o + 28, e.devid, true);
      }
    }
  });
  return buf;
}

/** struct kvm_irq_level (8 bytes). */
export const IRQ_LEVEL = { size: 8, irq: 0, level: 4 } as const;

export function encodeIrqLevel(irq: number, level: number): Uint8Array {
  const buf = new Uint8Array(IRQ_LEVEL.size);
  const dv = view(buf);
  dv.setUint32(0, irq, true);
  dv.setUint32(4, level, true);
  return buf;
}

/** struct kvm_irqchip (520 bytes): chip_id, pad, 512 bytes of chip state. */
export const IRQCHIP = { size: 520, chipId: 0, chip: 8, chipSize: 512 } as const;

/** struct kvm_clock_data (48 bytes). */
export const CLOCK_DATA = { size: 48, clock: 0, flags: 8, realtime: 16, hostTsc: 24 } as const;

/** kvmclock state (struct kvm_clock_data). */
export interface ClockData {
  clock: bigint;
  /** KVM_CLOCK_* */
  flags: number;
  realtime: bigint;
  hostTsc: bigint;
}

export function decodeClock(buf: Uint8Array): ClockData {
  const dv = view(buf);
  return { clock: u64(dv, 0), flags: dv.getUint32(8, true), realtime: u64(dv, 16), hostTsc: u64(dv, 24) };
}

export function encodeClock(c: ClockData): Uint8Array {
  const buf = new Uint8Array(CLOCK_DATA.size);
  const dv = view(buf);
  setU64(dv, 0, c.clock);
  dv.setUint32(8, c.flags, true);
  setU64(dv, 16, c.realtime);
  setU64(dv, 24, c.hostTsc);
  return buf;
}

/** struct kvm_coalesced_mmio_zone (16 bytes). */
export const COALESCED_ZONE = { size: 16, addr: 0, sizeField: 8, pio: 12 } as const;

export function encodeCoalescedZone(addr: bigint, size: number, pio: boolean): Uint8Array {
  const buf = new Uint8Array(COALESCED_ZONE.size);
  const dv = view(buf);
  setU64(dv, 0, addr);
  dv.setUint32(8, size, true);
  dv.setUint32(12, pio ? 1 : 0, true);
  return buf;
}

/** struct kvm_enable_cap (104 bytes). */
export const ENABLE_CAP = { size: 104, cap: 0, flags: 4, args: 8 } as const;

export function encodeEnableCap(cap: number, flags: number, args: readonly bigint[]): Uint8Array {
  const buf = new Uint8Array(ENABLE_CAP.size);
  const dv = view(buf);
  dv.setUint32(0, cap, true);
  dv.setUint32(4, flags, true);
  args.slice(0, 4).forEach((a, i) => setU64(dv, 8 + 8 * i, a));
  return buf;
}

/** struct kvm_pit_config (64 bytes). */
export const PIT_CONFIG = { size: 64, flags: 0 } as const;
/** struct kvm_pit_state2 (112 bytes). */
export const PIT_STATE2 = { size: 112, channels: 0, channelSize: 24, flags: 72 } as const;
/** struct kvm_reinject_control (32 bytes). */
export const REINJECT_CONTROL = { size: 32, pitReinject: 0 } as const;

/** struct kvm_create_device (12 bytes). */
export const CREATE_DEVICE = { size: 12, type: 0, fd: 4, flags: 8 } as const;
/** struct kvm_device_attr (24 bytes). */
export const DEVICE_ATTR = { size: 24, flags: 0, group: 4, attr: 8, addr: 16 } as const;

export function encodeDeviceAttr(group: number, attr: bigint, flags = 0): Uint8Array {
  const buf = new Uint8Array(DEVICE_ATTR.size);
  const dv = view(buf);
  dv.setUint32(0, flags, true);
  dv.setUint32(4, group, true);
  setU64(dv, 8, attr);
  return buf;
}

/** struct kvm_dirty_log (16 bytes). */
export const DIRTY_LOG = { size: 16, slot: 0, bitmap: 8 } as const;
/** struct kvm_one_reg (16 bytes). */
export const ONE_REG = { size: 16, id: 0, addr: 8 } as const;
/** struct kvm_mp_state (4 bytes). */
export const MP_STATE = { size: 4 } as const;
/** struct kvm_lapic_state (1024 bytes). */
export const LAPIC_STATE = { size: 1024 } as const;
/** struct kvm_dirty_gfn (16 bytes), the dirty ring's entry. */
export const DIRTY_GFN = { size: 16, flags: 0, slot: 4, offset: 8 } as const;
/** struct kvm_xsave (4096 bytes; KVM_GET_XSAVE2 may use more). */
export const XSAVE = { size: 4096 } as const;
