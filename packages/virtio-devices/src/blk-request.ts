import type { GuestMemory } from "@ts-vmm/vm-memory";
import type { DescriptorChain } from "@ts-vmm/virtio-queue";

// virtio-blk request layout (virtio 1.2 §5.2.6): a 16-byte device-readable
// header {u32 type, u32 reserved, u64 sector}, data, and a final
// device-writable status byte.

/** Request types (§5.2.6). */
export const VIRTIO_BLK_T_IN = 0;
/** Write. */
export const VIRTIO_BLK_T_OUT = 1;
/** Flush the volatile write cache. */
export const VIRTIO_BLK_T_FLUSH = 4;
/** Device id string (20 bytes). */
export const VIRTIO_BLK_T_GET_ID = 8;
/** Discard sectors. */
export const VIRTIO_BLK_T_DISCARD = 11;
/** Write zeroes. */
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

/** Status values (§5.2.6). */
export const VIRTIO_BLK_S_OK = 0;
/** Request failed (bad sector, bad buffer, host I/O error, read-only device). */
export const VIRTIO_BLK_S_IOERR = 1;
/** Request type (or flag) not supported. */
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Bytes per sector: sector numbers are always in 512-byte units (§5.2.6). */
export const SECTOR_SIZE = 512;

/** One piece of the data part: a guest range. */
export interface Segment {
  /** Guest address. */
  readonly addr: number;
  /** Length in bytes. */
  readonly len: number;
}

/** A chain split into header, data and status, before any semantic check. */
export type ParsedRequest =
  | {
      readonly ok: true;
      /** Request type. */
      readonly type: number;
      /** Sector from the header (u64, as a bigint: the guest may write anything). */
      readonly sector: bigint;
      /** The data segments: readable ones after the header, or writable ones before the status byte. */
      readonly data: readonly Segment[];
      /** Total bytes of `data`. */
      readonly dataLen: number;
      /** Whether the data part is device-writable (else readable). Empty data is readable. */
      readonly dataWritable: boolean;
      /** Whether the chain has data in both directions (readable after the header and writable before the status). */
      readonly mixed: boolean;
      /** Guest address of the status byte. */
      readonly statusAddr: number;
    }
  | {
      readonly ok: false;
      /** Guest address of the status byte if the chain has a usable one (then the request gets IOERR). */
      readonly statusAddr: number | undefined;
      /** Why. */
      readonly reason: string;
    };

// The header is copied here and read at once (one thread per module instance, no
// re-entry between the copy and the reads): no buffer allocated per request.
const HEADER = new Uint8Array(16);
const HEADER_VIEW = new DataView(HEADER.buffer);

/**
 * Splits a chain into header, data and status. The status byte is the last
 * byte of the last (device-writable) descriptor; its address is checked to be
 * inside guest memory. The header is read with a copy (16 bytes); the data is
 * left in guest memory.
 */
export function parseRequest(mem: GuestMemory, chain: DescriptorChain): ParsedRequest {
  const descs = chain.descriptors;
  const last = descs[descs.length - 1];
  let statusAddr: number | undefined;
  if (last !== undefined && last.writable && last.len >= 1 && mem.checkRange(last.addr + last.len - 1, 1)) {
    statusAddr = last.addr + last.len - 1;
  }
  if (statusAddr === undefined) return { ok: false, statusAddr, reason: "no device-writable status byte inside guest memory" };
  if (chain.readableLength < 16) return { ok: false, statusAddr, reason: `header is ${chain.readableLength} bytes, not 16` };
  try {
    chain.readInto(mem, HEADER);
  } catch {
    return { ok: false, statusAddr, reason: "header is outside guest memory" };
  }
  const type = HEADER_VIEW.getUint32(0, true);
  const sector = HEADER_VIEW.getBigUint64(8, true);

  // Readable data: everything after the first 16 readable bytes.
  const readData: Segment[] = [];
  let skip = 16;
  for (let i = 0; i < chain.readableCount; i++) {
    const d = descs[i]!;
    if (skip >= d.len) {
      skip -= d.len;
      continue;
    }
    readData.push({ addr: d.addr + skip, len: d.len - skip });
    skip = 0;
  }
  // Writable data: everything before the status byte.
  const writeData: Segment[] = [];
  for (let i = chain.readableCount; i < descs.length; i++) {
    const d = descs[i]!;
    const len = i === descs.length - 1 ? d.len - 1 : d.len;
    if (len > 0) writeData.push({ addr: d.addr, len });
  }
  const rlen = chain.readableLength - 16;
  const wlen = chain.writableLength - 1;
  const dataWritable = wlen > 0;
  return {
    ok: true,
    type,
    sector,
    data: dataWritable ? writeData : readData,
    dataLen: dataWritable ? wlen : rlen,
    dataWritable,
    mixed: rlen > 0 && wlen > 0,
    statusAddr,
  };
}
