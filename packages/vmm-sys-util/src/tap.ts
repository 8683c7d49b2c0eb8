import { closeSync, constants, openSync } from "node:fs";
import { VmmSysError, check, invalid } from "./errors.js";
import { native } from "./native.js";
import { boolOpt, describe, fdArg, intArg, optionsArg } from "./validate.js";

/**
 * Offload flags for {@link tapSetOffload} (TUN_F_* in linux/if_tun.h). They tell the kernel what
 * the reader of the tap (the guest's virtio-net driver) can take: partially checksummed packets
 * and TCP/UDP segmentation offloads.
 */
export const TUN_F = {
  /** TUN_F_CSUM: packets may carry a partial checksum. */
  CSUM: 0x01,
  /** TUN_F_TSO4: TCP segmentation offload for IPv4. */
  TSO4: 0x02,
  /** TUN_F_TSO6: TCP segmentation offload for IPv6. */
  TSO6: 0x04,
  /** TUN_F_TSO_ECN: TSO with the ECN bit. */
  TSO_ECN: 0x08,
  /** TUN_F_UFO: UDP fragmentation offload. */
  UFO: 0x10,
} as const;

/** Options of {@link openTap}. */
export interface TapOptions {
  /**
   * Interface name, at most 15 bytes; may contain one `%d`, which the kernel replaces by the
   * first free number. An existing tap of that name is attached to (with matching flags).
   * Default `"tap%d"`.
   */
  readonly name?: string;
  /** IFF_VNET_HDR: each frame read or written is preceded by a virtio_net_hdr. Default false. */
  readonly vnetHdr?: boolean;
  /** IFF_MULTI_QUEUE: open one fd per queue under the same name. Default false. */
  readonly multiQueue?: boolean;
  /** O_NONBLOCK on the fd (for use with FdWatcher). Default true. */
  readonly nonBlocking?: boolean;
}

/** An open tap queue: the fd (owned by the caller, close it with closeFd) and the interface name. */
export interface Tap {
  /** The queue's file descriptor: read(2) returns one frame, write(2) sends one. */
  readonly fd: number;
  /** The interface name the kernel assigned (with `%d` replaced). */
  readonly name: string;
}

/**
 * Opens /dev/net/tun and attaches the fd to a tap interface (IFF_TAP | IFF_NO_PI), creating it if
 * it does not exist. Needs CAP_NET_ADMIN to create an interface. The fd is close-on-exec; frames
 * can be read and written with `fs.readSync`/`fs.writeSync` on views over guest memory (no copy).
 *
 * @param opts - see {@link TapOptions}
 * @returns the fd and the interface name
 * @throws VmmSysError `InvalidArgument` for a bad name or option; `ENOENT` if /dev/net/tun is
 *   missing (syscall `open`); `EPERM` without CAP_NET_ADMIN, `EBUSY` or `EINVAL` if the name is
 *   taken by another kind of device or with other flags (syscall `TUNSETIFF`)
 */
export function openTap(opts?: TapOptions): Tap {
  const o = optionsArg("opts", opts);
  const name = o.name ?? "tap%d";
  if (typeof name !== "string") throw invalid(`name must be a string, got ${describe(name)}`);
  if (name.length === 0 || Buffer.byteLength(name) > 15) throw invalid("name must be 1 to 15 bytes (IFNAMSIZ - 1)");
  // dev_valid_name() in net/core/dev.c: no '/', ':' or whitespace, not "." or "..".
  if (/[/:\s\0]/.test(name) || name === "." || name === "..") throw invalid(`invalid interface name ${describe(name)}`);
  const c = native().tapConstants;
  let flags = c.IFF_TAP | c.IFF_NO_PI;
  if (boolOpt("vnetHdr", o.vnetHdr, false)) flags |= c.IFF_VNET_HDR;
  if (boolOpt("multiQueue", o.multiQueue, false)) flags |= c.IFF_MULTI_QUEUE;
  const nonBlocking = boolOpt("nonBlocking", o.nonBlocking, true);
  let fd: number;
  try {
    // libuv opens every file with O_CLOEXEC.
    fd = openSync("/dev/net/tun", constants.O_RDWR | (nonBlocking ? constants.O_NONBLOCK : 0));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const errno = typeof e.errno === "number" ? Math.abs(e.errno) : 5;
    throw VmmSysError.fromErrno("open", errno, "/dev/net/tun");
  }
  try {
    const actual = check<string>("TUNSETIFF", native().tunSetIff(fd, name, flags), name);
    return { fd, name: actual };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Tells the tap which offloads the reader supports (TUNSETOFFLOAD), so the kernel may hand it
 * large or partially checksummed frames. Needs a tap opened with `vnetHdr: true` for anything
 * but 0.
 * @param fd - a tap fd from {@link openTap}
 * @param flags - an OR of {@link TUN_F} values (0 turns all offloads off)
 * @throws VmmSysError `InvalidArgument` for a bad fd or flags; `EINVAL` for flags the kernel
 *   rejects; `EBADF`/`ENOTTY` if fd is not a tap
 */
export function tapSetOffload(fd: number, flags: number): void {
  fdArg(fd);
  intArg("flags", flags, 0, 0xffff_ffff);
  check("TUNSETOFFLOAD", native().tapSetOffload(fd, flags), `fd ${fd}`);
}

/**
 * Sets the size of the virtio_net_hdr that precedes each frame (TUNSETVNETHDRSZ): 10 for the
 * legacy header, 12 with VIRTIO_NET_F_MRG_RXBUF or for virtio 1.0.
 * @param fd - a tap fd opened with `vnetHdr: true`
 * @param size - header size in bytes; the kernel requires at least 10
 * @throws VmmSysError `InvalidArgument` for a bad fd or size; `EINVAL` if the kernel refuses it;
 *   `EBADF`/`ENOTTY` if fd is not a tap
 */
export function tapSetVnetHdrSize(fd: number, size: number): void {
  fdArg(fd);
  intArg("size", size, 0, 0x7fff_ffff);
  check("TUNSETVNETHDRSZ", native().tapSetVnetHdrSize(fd, size), `fd ${fd}`);
}
