/** A device on the port I/O bus. `offset` is relative to the base it was inserted at. */
export interface PioDevice {
  /** Fills `data` (1, 2 or 4 bytes) with the value read at `offset`. */
  read(offset: number, data: Uint8Array): void;
  /** Handles the `data` the guest wrote at `offset`. */
  write(offset: number, data: Uint8Array): void;
}

interface Range {
  readonly base: number;
  readonly len: number;
  readonly device: PioDevice;
}

/**
 * Port I/O dispatch: a set of non-overlapping port ranges. Reads of a
 * port nothing claims return all ones (as on a PC's floating bus); writes to
 * such ports are dropped and counted.
 *
 * Dispatch is one lookup in a 64 KiB table built by {@link PioBus.insert}
 * (port → range index + 1, 0 for none), so an exit costs the same whatever
 * the number of devices and allocates nothing. At most 255 ranges.
 */
export class PioBus {
  readonly #ranges: Range[] = [];
  /** Port → 1 + index in #ranges, 0 where no device is. */
  readonly #slot = new Uint8Array(0x10000);
  /** Accesses to ports that no device claims. */
  unclaimed = 0;

  /**
   * Adds a device for ports [base, base + len).
   * @throws RangeError when the range is outside 0..0xffff or overlaps another.
   */
  insert(base: number, len: number, device: PioDevice): void {
    if (!Number.isInteger(base) || !Number.isInteger(len) || len < 1 || base < 0 || base + len > 0x10000) {
      throw new RangeError(`port range ${base}+${len} is outside 0..0xffff`);
    }
    for (const r of this.#ranges) {
      if (base < r.base + r.len && r.base < base + len) throw new RangeError(`port range 0x${base.toString(16)}+${len} overlaps 0x${r.base.toString(16)}+${r.len}`);
    }
    if (this.#ranges.length >= 255) throw new RangeError("a PioBus holds at most 255 port ranges");
    this.#ranges.push({ base, len, device });
    this.#slot.fill(this.#ranges.length, base, base + len);
  }

  #find(port: number): Range | undefined {
    const i = this.#slot[port & 0xffff]!;
    return i === 0 ? undefined : this.#ranges[i - 1];
  }

  /** Dispatches a guest read of `data.length` bytes at `port`. */
  read(port: number, data: Uint8Array): void {
    const r = this.#find(port);
    if (r) r.device.read(port - r.base, data);
    else {
      this.unclaimed++;
      data.fill(0xff);
    }
  }

  /** Dispatches a guest write at `port`. */
  write(port: number, data: Uint8Array): void {
    const r = this.#find(port);
    if (r) r.device.write(port - r.base, data);
    else this.unclaimed++;
  }
}
