/**
 * The part of `@ts-vmm/vm-memory`'s `GuestMemory` the loader uses. Any
 * `GuestMemory` satisfies it structurally.
 */
export interface GuestMemory {
  /** Total bytes of guest RAM. */
  readonly size: number;
  /** True when `[addr, addr + len)` lies entirely inside guest RAM. */
  checkRange(addr: number, len: number): boolean;
  /** Copies `src` into guest memory at `addr`; all or nothing. */
  write(addr: number, src: Uint8Array): void;
  /** Copies guest memory at `addr` into `dest`. */
  read(addr: number, dest: Uint8Array): void;
}
