// A user-space I/O APIC (the register model of the 82093AA, version 0x20 as
// KVM's in-kernel one reports) for a VMM that runs KVM with a split irqchip:
// the local APICs stay in the kernel, this model owns the redirection table,
// and every unmasked pin becomes an MSI route the VMM installs with
// KVM_SET_GSI_ROUTING. Interrupts then reach the guest without entering user
// space (an irqfd on the pin's GSI fires its route), and a masked pin has no
// route, so nothing reaches the guest from it.
//
// The model never touches KVM itself (this package does not import
// kvm-ioctls): it reports its routes through `onRoutesChanged`.

/** Guest physical base of the I/O APIC window (the MADT and MP table say so). */
export const IOAPIC_BASE = 0xfec0_0000;
/** Bytes of the window the VMM forwards to {@link Ioapic}. */
export const IOAPIC_WINDOW = 0x1000;
/** Pins of the model by default, as KVM's in-kernel I/O APIC (and `KVM_CAP_SPLIT_IRQCHIP`'s usual argument). */
export const IOAPIC_DEFAULT_PINS = 24;

/** Register select (byte offset in the window). */
const IOREGSEL = 0x00;
/** Register data window. */
const IOWIN = 0x10;
/** The EOI register of version 0x20 I/O APICs. */
const IOEOI = 0x40;
const REG_ID = 0x00, REG_VER = 0x01, REG_ARB = 0x02, REG_REDTBL = 0x10;
const VERSION = 0x20;

/** Bit 16 of a redirection entry: masked. */
const MASK = 1n << 16n;
/** Bits of the low dword the guest may write: vector, delivery mode, destination mode, polarity, trigger, mask (not delivery status 12, not remote IRR 14). */
const LOW_WRITABLE = 0x0001_afffn;
/** Bits of the high dword the guest may write: destination (24–31) and the extended destination id (16–23, KVM_FEATURE_MSI_EXT_DEST_ID). */
const HIGH_WRITABLE = 0xffff_0000n;

/** Delivery mode ExtINT: asks the 8259, which a split irqchip does not have. */
const DELIVERY_EXTINT = 7;

/** One decoded redirection entry. */
export interface RedirectionEntry {
  /** Interrupt vector (0–255). */
  readonly vector: number;
  /** Delivery mode (0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT). */
  readonly deliveryMode: number;
  /** Destination mode: false physical, true logical. */
  readonly logical: boolean;
  /** Polarity: true active-low. */
  readonly activeLow: boolean;
  /** Trigger mode: true level, false edge. */
  readonly level: boolean;
  /** Masked. */
  readonly masked: boolean;
  /** Destination APIC id (bits 56–63) with the extended id bits 48–55 above it (a 15-bit id when the guest uses them). */
  readonly destination: number;
}

/** The MSI a pin sends, in the x86 format KVM's routing table takes. */
export interface IoapicRoute {
  /** The pin (also the GSI the VMM routes: GSI n is pin n). */
  readonly pin: number;
  /** MSI address: 0xFEE00000 | destination bits 0–7 << 12 | extended destination bits 8–14 << 5 | destination mode << 2. */
  readonly address: bigint;
  /** MSI data: vector | delivery mode << 8 | trigger mode << 15 (level also sets the assert bit 14). */
  readonly data: number;
}

/** What an {@link Ioapic} tells its owner. */
export interface IoapicHooks {
  /**
   * The set of routes changed (a redirection entry was written, or reset):
   * `routes` holds one entry per unmasked pin whose delivery mode an MSI can
   * carry. The VMM replaces its GSI routes for pins with these. Called on the
   * thread that calls `write`; must not throw.
   */
  onRoutesChanged(routes: readonly IoapicRoute[]): void;
}

/** Saved state of an {@link Ioapic}: plain JSON. */
export interface IoapicState {
  /** The I/O APIC id (bits 24–27 of register 0). */
  readonly id: number;
  /** The register the guest selected last. */
  readonly select: number;
  /** Each redirection entry as a 16-hex-digit string. */
  readonly entries: readonly string[];
}

/** Counters for diagnostics. */
export interface IoapicMetrics {
  /** Redirection entry writes that changed the routes. */
  routeUpdates: number;
  /** Accesses the model ignored: not 4 bytes, or outside the three registers. */
  badAccesses: number;
  /** Unmasked entries with delivery mode ExtINT (no 8259 here): treated as masked. */
  extIntEntries: number;
  /** Writes to the EOI register. */
  eois: number;
}

const read32 = (data: Uint8Array): number => (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
const fill32 = (data: Uint8Array, v: number): void => {
  for (let i = 0; i < data.length; i++) data[i] = i < 4 ? (v >>> (8 * i)) & 0xff : 0;
};

/**
 * The I/O APIC's registers and redirection table. Guest-driven calls
 * (`read`, `write`) never throw: accesses that are not 32-bit, offsets other
 * than IOREGSEL/IOWIN/EOI and unknown registers read as 0 and ignore writes
 * (counted in `metrics.badAccesses`). Remote IRR and delivery status always
 * read 0: delivery happens in the kernel through the MSI routes, with one MSI
 * per interrupt the device raises, so there is no pending level to track.
 */
export class Ioapic {
  readonly #pins: number;
  readonly #entries: BigUint64Array;
  readonly #hooks: IoapicHooks;
  #id: number;
  #select = 0;
  /** Diagnostics. */
  readonly metrics: IoapicMetrics = { routeUpdates: 0, badAccesses: 0, extIntEntries: 0, eois: 0 };

  /**
   * @param options.pins - redirection entries (1–240; default {@link IOAPIC_DEFAULT_PINS}).
   * @param options.id - the I/O APIC id the MADT and MP table give (0–15).
   * @throws RangeError for a pin count or id out of range (a VMM configuration error).
   */
  constructor(hooks: IoapicHooks, options: { readonly pins?: number; readonly id?: number } = {}) {
    const pins = options.pins ?? IOAPIC_DEFAULT_PINS;
    const id = options.id ?? 0;
    if (!Number.isInteger(pins) || pins < 1 || pins > 240) throw new RangeError(`an I/O APIC has 1..240 pins, not ${String(pins)}`);
    if (!Number.isInteger(id) || id < 0 || id > 15) throw new RangeError(`the I/O APIC id is 4 bits (0..15), not ${String(id)}`);
    this.#pins = pins;
    this.#id = id;
    this.#hooks = hooks;
    this.#entries = new BigUint64Array(pins).fill(MASK);
  }

  /** Number of pins. */
  get pins(): number {
    return this.#pins;
  }

  /** Redirection entry `pin`, decoded. @throws RangeError for a pin out of range. */
  entry(pin: number): RedirectionEntry {
    const e = this.#raw(pin);
    const lo = Number(e & 0xffff_ffffn);
    return {
      vector: lo & 0xff,
      deliveryMode: (lo >> 8) & 7,
      logical: (lo & (1 << 11)) !== 0,
      activeLow: (lo & (1 << 13)) !== 0,
      level: (lo & (1 << 15)) !== 0,
      masked: (lo & (1 << 16)) !== 0,
      destination: Number((e >> 56n) & 0xffn) | (Number((e >> 48n) & 0x7fn) << 8),
    };
  }

  /** The MSI routes of the unmasked pins (what `onRoutesChanged` last reported). */
  routes(): IoapicRoute[] {
    const out: IoapicRoute[] = [];
    let extInt = 0;
    for (let pin = 0; pin < this.#pins; pin++) {
      const e = this.entry(pin);
      if (e.masked) continue;
      if (e.deliveryMode === DELIVERY_EXTINT) {
        extInt++;
        continue;
      }
      const dest = e.destination;
      const address = 0xfee0_0000n | (BigInt(dest & 0xff) << 12n) | (BigInt((dest >> 8) & 0x7f) << 5n) | (e.logical ? 1n << 2n : 0n);
      const data = e.vector | (e.deliveryMode << 8) | (e.level ? (1 << 15) | (1 << 14) : 0);
      out.push({ pin, address, data });
    }
    this.metrics.extIntEntries = extInt;
    return out;
  }

  /** A guest read of `data.length` bytes at `offset` in the window. Never throws. */
  read(offset: number, data: Uint8Array): void {
    if (data.length !== 4) {
      this.metrics.badAccesses++;
      data.fill(0);
      return;
    }
    if (offset === IOREGSEL) fill32(data, this.#select);
    else if (offset === IOWIN) fill32(data, this.#readRegister(this.#select));
    else {
      this.metrics.badAccesses++;
      data.fill(0);
    }
  }

  /** A guest write at `offset` in the window. Never throws (the hook's errors are the hook's). */
  write(offset: number, data: Uint8Array): void {
    if (data.length !== 4) {
      this.metrics.badAccesses++;
      return;
    }
    const v = read32(data);
    if (offset === IOREGSEL) this.#select = v & 0xff;
    else if (offset === IOWIN) this.#writeRegister(this.#select, v);
    else if (offset === IOEOI) this.metrics.eois++; // nothing pending to clear: remote IRR is never set
    else this.metrics.badAccesses++;
  }

  /** Back to the power-on state: every pin masked, id kept; reports the (empty) routes. */
  reset(): void {
    this.#entries.fill(MASK);
    this.#select = 0;
    this.#changed();
  }

  /** The state as plain JSON. */
  state(): IoapicState {
    return { id: this.#id, select: this.#select, entries: Array.from(this.#entries, (e) => e.toString(16).padStart(16, "0")) };
  }

  /**
   * Loads {@link Ioapic.state} output (same pin count) and reports the routes.
   * @throws RangeError if it does not fit this model.
   */
  restoreState(s: IoapicState): void {
    if (s.entries.length !== this.#pins) throw new RangeError(`the saved I/O APIC has ${s.entries.length} pins, this one ${this.#pins}`);
    if (!Number.isInteger(s.id) || s.id < 0 || s.id > 15 || !Number.isInteger(s.select) || s.select < 0 || s.select > 0xff) {
      throw new RangeError("the saved I/O APIC id or register select is out of range");
    }
    const entries = s.entries.map((h) => {
      if (!/^[0-9a-f]{16}$/.test(h)) throw new RangeError(`bad saved redirection entry ${JSON.stringify(h)}`);
      return BigInt(`0x${h}`) & ((HIGH_WRITABLE << 32n) | LOW_WRITABLE);
    });
    this.#id = s.id;
    this.#select = s.select;
    entries.forEach((e, i) => (this.#entries[i] = e));
    this.#changed();
  }

  #raw(pin: number): bigint {
    if (!Number.isInteger(pin) || pin < 0 || pin >= this.#pins) throw new RangeError(`no I/O APIC pin ${String(pin)}`);
    return this.#entries[pin]!;
  }

  #readRegister(reg: number): number {
    if (reg === REG_ID || reg === REG_ARB) return (this.#id << 24) >>> 0;
    if (reg === REG_VER) return ((this.#pins - 1) << 16) | VERSION;
    const i = reg - REG_REDTBL;
    if (i >= 0 && i < 2 * this.#pins) {
      const e = this.#entries[i >> 1]!;
      return Number((i & 1) === 0 ? e & 0xffff_ffffn : e >> 32n) >>> 0;
    }
    this.metrics.badAccesses++;
    return 0;
  }

  #writeRegister(reg: number, v: number): void {
    if (reg === REG_ID) {
      this.#id = (v >>> 24) & 0xf;
      return;
    }
    if (reg === REG_VER || reg === REG_ARB) return; // read-only
    const i = reg - REG_REDTBL;
    if (i < 0 || i >= 2 * this.#pins) {
      this.metrics.badAccesses++;
      return;
    }
    const pin = i >> 1;
    const old = this.#entries[pin]!;
    const next = (i & 1) === 0
      ? (old & ~0xffff_ffffn) | (BigInt(v) & LOW_WRITABLE)
      : (old & 0xffff_ffffn) | ((BigInt(v) & HIGH_WRITABLE) << 32n);
    if (next === old) return;
    this.#entries[pin] = next;
    // A masked entry's other fields do not reach KVM: only report what changes a route.
    if ((old & MASK) !== 0n && (next & MASK) !== 0n) return;
    this.#changed();
  }

  #changed(): void {
    this.metrics.routeUpdates++;
    this.#hooks.onRoutesChanged(this.routes());
  }
}
