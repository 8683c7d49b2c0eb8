import { closeSync } from "node:fs";
import { constants } from "node:os";
import { FdWatcher, TUN_F, VmmSysError, nativeReadv, nativeWritev, openTap, tapSetOffload, tapSetVnetHdrSize, type IovTable, type NativeIov } from "@ts-vmm/vmm-sys-util";
import { VirtioDeviceError } from "../errors.js";
import { NET_HDR_SIZE } from "./constants.js";

/** What a {@link NetBackend} watch waits for. */
export interface NetBackendEvents {
  /** A frame can be read. */
  readonly readable: boolean;
  /** A frame can be written. */
  readonly writable: boolean;
}

/**
 * The host side of a virtio-net device: frames with a 12-byte virtio_net_hdr
 * in front, both ways. {@link TapBackend} implements it on a Linux tap; a test
 * or another VMM can bring its own (a socket pair, a vhost-user peer).
 */
export interface NetBackend {
  /** A name for logs (the tap interface name). */
  readonly name: string;
  /** The offloads (TUN_F bits) the backend can hand to a reader that negotiated them. */
  readonly offloads: number;
  /**
   * Tells the backend which offloads the guest takes (TUN_F bits, a subset of `offloads`).
   * @throws {@link VirtioDeviceError} `"Io"` if the backend refuses.
   */
  setOffload(flags: number): void;
  /**
   * Reads one frame, header first, into `buf`.
   * @returns its length (more than `buf.length` or exactly it: possibly truncated), or `"again"` if none is waiting.
   * @throws {@link VirtioDeviceError} `"Io"` for a read error.
   */
  read(buf: Uint8Array): number | "again";
  /**
   * Reads one frame, header first, scattered over `pieces` in order (the device
   * passes views of a receive buffer in guest memory, then a spare buffer of its
   * own, so a frame lands in the guest without a copy). Each call reads exactly
   * one frame. The array and the views (of guest memory) are the caller's and
   * valid only during the call: never keep them (the buffers go back to the guest).
   * Optional: without it every frame goes through {@link NetBackend.read} and a copy.
   * @returns the frame's length (more than the pieces hold: the rest was cut off), or `"again"` if none is waiting.
   * @throws {@link VirtioDeviceError} `"Io"` for a read error.
   */
  readv?(pieces: readonly Uint8Array[]): number | "again";
  /**
   * Reads one frame as {@link NetBackend.readv}, its pieces the first `count` triples of
   * `table` (whose views the device made: its spare buffer, then guest memory's regions), so
   * the device builds no view per frame. Optional: without it frames go through
   * {@link NetBackend.readv}.
   * @returns as {@link NetBackend.readv}
   * @throws as {@link NetBackend.readv}
   */
  readTable?(table: IovTable, count: number): number | "again";
  /**
   * Writes one frame given in pieces, header first. The array and the views
   * (of guest memory) are the caller's and valid only during the call: copy
   * what must outlive it (the device reuses the array for the next frame).
   * @returns the bytes written, or `"again"` if the backend cannot take it now (watch for `writable`).
   * @throws {@link VirtioDeviceError} `"Io"` if the frame is refused (a bad header) or the write fails.
   */
  write(pieces: readonly Uint8Array[]): number | "again";
  /**
   * Writes one frame as {@link NetBackend.write}, its pieces the first `count` triples of
   * `table` (whose views the device made: its header copy, then guest memory's regions), so
   * the device builds no view per piece. Optional: without it every frame goes through
   * {@link NetBackend.write}.
   * @returns as {@link NetBackend.write}
   * @throws as {@link NetBackend.write}
   */
  writeTable?(table: IovTable, count: number): number | "again";
  /**
   * Writes `n` frames as {@link NetBackend.writeTable} in one call (io_uring, or a loop):
   * frame `i` is the next `io[i]` triples of `table`, from triple 0; on return `io[i]` is its
   * result, the bytes written or a negative errno (`-EAGAIN` no room: watch for `writable`).
   * The batch stops at the first frame that fails: the later ones are `-ECANCELED`, not sent.
   * Optional: without it frames go one by one.
   * @throws {@link VirtioDeviceError} `"Io"` if the batch is refused as a whole (a closed backend, bad arguments): no frame was sent.
   */
  writeTableBatch?(table: IovTable, n: number, io: Int32Array): void;
  /**
   * Calls `cb` on the event loop while what `events` asks for is ready
   * (level-triggered), replacing any earlier watch; both false stops watching.
   * The watch does not keep the event loop alive.
   * @throws {@link VirtioDeviceError} `"Io"` if the watch cannot be set up.
   */
  watch(events: NetBackendEvents, cb: (ready: NetBackendEvents) => void): void;
  /** Stops watching and releases the backend. Idempotent. */
  close(): void;
}

/** Options of {@link TapBackend.open}. */
export interface TapBackendOptions {
  /**
   * Interface name, at most 15 bytes (created if missing, which needs CAP_NET_ADMIN; an
   * existing tap is attached to). One `%d` lets the kernel pick the first free number.
   */
  readonly name: string;
}

const { EAGAIN } = constants.errno;

function ioError(what: string, e: unknown): VirtioDeviceError {
  return new VirtioDeviceError("Io", `${what}: ${(e as Error).message}`, { cause: e });
}

/**
 * One readv/writev over `pieces`: the views as arguments when there are one to three (what the
 * device passes for nearly every frame; the addon walks an array element by element, ~0.1 µs each).
 */
function iov(call: NativeIov, fd: number, pieces: readonly Uint8Array[]): number {
  switch (pieces.length) {
    case 1:
      return call(fd, pieces[0] as Uint8Array);
    case 2:
      return call(fd, pieces[0] as Uint8Array, pieces[1] as Uint8Array);
    case 3:
      return call(fd, pieces[0] as Uint8Array, pieces[1] as Uint8Array, pieces[2] as Uint8Array);
    default:
      return call(fd, pieces);
  }
}

/** The offload sets tried at open, largest first (TSO needs CSUM in the kernel). */
const OFFLOAD_PROBES = [TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN, TUN_F.CSUM, 0];

/**
 * A Linux tap as a {@link NetBackend}: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with a
 * 12-byte vnet header (TUNSETVNETHDRSZ), non-blocking, read with readv(2) straight
 * into views of guest memory and written with writev(2) straight from them (the
 * addon's calls, which answer EAGAIN with a status, not an exception). At open it
 * finds the offloads the kernel accepts (TUNSETOFFLOAD with checksum and TSO,
 * then checksum only, then none) and leaves them off until a driver
 * negotiates them.
 */
export class TapBackend implements NetBackend {
  /** {@inheritDoc NetBackend.name} */
  readonly name: string;
  /** {@inheritDoc NetBackend.offloads} */
  readonly offloads: number;
  /** The tap's file descriptor (owned by this backend). */
  readonly fd: number;
  #watcher: FdWatcher | undefined;
  /** The callback of the latest {@link TapBackend.watch} (the watcher outlives a change of events). */
  #watchCb: ((ready: NetBackendEvents) => void) | undefined;
  #closed = false;
  readonly #readv: NativeIov = nativeReadv();
  readonly #writev: NativeIov = nativeWritev();

  private constructor(fd: number, name: string, offloads: number) {
    this.fd = fd;
    this.name = name;
    this.offloads = offloads;
  }

  /**
   * Opens (or creates) the tap.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a bad name; `"Io"` if the tap cannot be
   *   opened or set up (no /dev/net/tun, no CAP_NET_ADMIN, a name taken by another kind of device).
   */
  static open(opts: TapBackendOptions): TapBackend {
    const name = opts?.name;
    if (typeof name !== "string" || name.length === 0) {
      throw new VirtioDeviceError("InvalidArgument", `tap name must be a non-empty interface name, got ${JSON.stringify(name)}`);
    }
    let tap;
    try {
      tap = openTap({ name, vnetHdr: true, nonBlocking: true });
    } catch (e) {
      if ((e as { code?: string }).code === "InvalidArgument") throw new VirtioDeviceError("InvalidArgument", `tap ${name}: ${(e as Error).message}`, { cause: e });
      throw ioError(`cannot open tap ${name}`, e);
    }
    try {
      tapSetVnetHdrSize(tap.fd, NET_HDR_SIZE);
      let offloads = 0;
      for (const flags of OFFLOAD_PROBES) {
        try {
          tapSetOffload(tap.fd, flags);
          offloads = flags;
          break;
        } catch {
          // refused: try fewer
        }
      }
      tapSetOffload(tap.fd, 0);
      return new TapBackend(tap.fd, tap.name, offloads);
    } catch (e) {
      closeSync(tap.fd);
      throw ioError(`cannot set up tap ${name}`, e);
    }
  }

  /** {@inheritDoc NetBackend.setOffload} */
  setOffload(flags: number): void {
    try {
      tapSetOffload(this.fd, flags & this.offloads);
    } catch (e) {
      throw ioError(`tap ${this.name}: TUNSETOFFLOAD`, e);
    }
  }

  /** {@inheritDoc NetBackend.read} */
  read(buf: Uint8Array): number | "again" {
    if (this.#closed) return this.#failed("read", 0);
    const n = this.#readv(this.fd, buf);
    return n >= 0 ? n : this.#failed("read", n);
  }

  /** {@inheritDoc NetBackend.readv} */
  readv(pieces: readonly Uint8Array[]): number | "again" {
    // Closed: the fd number may belong to another file by now.
    if (this.#closed) return this.#failed("read", 0);
    const n = iov(this.#readv, this.fd, pieces);
    return n >= 0 ? n : this.#failed("read", n);
  }

  /** {@inheritDoc NetBackend.readTable} */
  readTable(table: IovTable, count: number): number | "again" {
    if (this.#closed) return this.#failed("read", 0);
    const n = table.readv(this.fd, count);
    return n >= 0 ? n : this.#failed("read", n);
  }

  /** {@inheritDoc NetBackend.write} */
  write(pieces: readonly Uint8Array[]): number | "again" {
    if (this.#closed) return this.#failed("write", 0);
    const n = iov(this.#writev, this.fd, pieces);
    return n >= 0 ? n : this.#failed("write", n);
  }

  /** {@inheritDoc NetBackend.writeTable} */
  writeTable(table: IovTable, count: number): number | "again" {
    if (this.#closed) return this.#failed("write", 0);
    const n = table.writev(this.fd, count);
    return n >= 0 ? n : this.#failed("write", n);
  }

  /** {@inheritDoc NetBackend.writeTableBatch} */
  writeTableBatch(table: IovTable, n: number, io: Int32Array): void {
    if (this.#closed) this.#failed("write", 0);
    const r = table.writevBatch(this.fd, n, io);
    if (r < 0) throw ioError(`tap ${this.name}: write`, VmmSysError.fromErrno("writev", -r));
  }

  /** A negative status of the addon's readv/writev (0: the backend is closed): `"again"` for EAGAIN, else the error. */
  #failed(what: string, status: number): "again" {
    if (status === -EAGAIN) return "again";
    const e = status === 0 ? new VmmSysError("Closed", "the backend is closed") : VmmSysError.fromErrno(what === "read" ? "readv" : "writev", -status);
    throw ioError(`tap ${this.name}: ${what}`, e);
  }

  /** {@inheritDoc NetBackend.watch} */
  watch(events: NetBackendEvents, cb: (ready: NetBackendEvents) => void): void {
    if (this.#closed) return;
    const readable = events.readable === true;
    const writable = events.writable === true;
    this.#watchCb = cb;
    try {
      // One watcher for the tap's life, its events changed in place: a device stops watching
      // whenever the guest's receive ring runs dry and starts again on its notification, and a
      // new watcher each time (a duplicated fd, a libuv handle, an async context) cost ~10 us
      // a change in bench:net rx.
      const old = this.#watcher;
      if (old !== undefined && !old.closed) {
        old.update({ readable, writable });
        return;
      }
      this.#watcher = undefined;
      if (!readable && !writable) return;
      const w = FdWatcher.watch(this.fd, { readable, writable }, (ev) => {
        if (ev.error !== undefined) return; // the watcher closed itself; the device re-arms on its next event
        this.#watchCb?.({ readable: ev.readable, writable: ev.writable });
      });
      w.unref();
      this.#watcher = w;
    } catch (e) {
      throw ioError(`tap ${this.name}: watch`, e);
    }
  }

  /** Closes the watcher and the tap fd (a tap the kernel created for this fd disappears). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    this.#watchCb = undefined;
    closeSync(this.fd);
  }
}
