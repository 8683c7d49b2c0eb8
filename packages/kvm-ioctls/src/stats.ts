import { readSync } from "node:fs";
import { KvmError } from "./errors.js";
import { FdHandle } from "./fd.js";
import {
  type KvmStatDescriptor,
  STATS_HEADER_BYTES,
  decodeStatsData,
  decodeStatsDescriptors,
  decodeStatsHeader,
  decodeStatsName,
  statsDescBlockBytes,
} from "./layouts/stats.js";

/** Attempts of one pread that keeps returning EINTR/EAGAIN before the error is reported. */
const READ_ATTEMPTS = 100;

/**
 * pread(2) of exactly `length` bytes at `position`, looping over short reads.
 * @throws {@link KvmError} `InvalidStats` if the file ends first; the errno's code if pread fails.
 */
function preadExact(fd: number, length: number, position: number, what: string, into?: Uint8Array): Uint8Array {
  const buf = into ?? new Uint8Array(length);
  let got = 0;
  let attempts = 0;
  while (got < length) {
    let n: number;
    try {
      n = readSync(fd, buf, got, length - got, position + got);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if ((code === "EINTR" || code === "EAGAIN") && ++attempts < READ_ATTEMPTS) continue;
      const errno = (e as { errno?: unknown }).errno;
      throw KvmError.fromErrno(`pread of the KVM stats ${what}`, typeof errno === "number" ? Math.abs(errno) : 0);
    }
    if (n === 0) throw new KvmError("InvalidStats", `KVM stats file: the ${what} (${length} bytes at offset ${position}) ends after ${got} bytes`);
    got += n;
  }
  return buf;
}

/**
 * A KVM binary statistics file (KVM_GET_STATS_FD, KVM_CAP_BINARY_STATS_FD) of
 * a VM or a vCPU: its id string and descriptors are read once, when it is
 * opened; {@link KvmStats.read} reads the data block again (one pread) each time.
 *
 * Reading is safe from any thread and while the vCPU runs: the kernel copies
 * the counters without stopping it, so values of one read are not a
 * consistent snapshot of each other (each u64 is).
 *
 * The layout is the kernel's (`struct kvm_stats_header`, `struct
 * kvm_stats_desc`), decoded in TypeScript with every offset and count the
 * kernel gives checked before it is used; the addon only makes the ioctl.
 */
export class KvmStats {
  readonly #h: FdHandle;
  readonly #dataOffset: number;
  readonly #data: Uint8Array;
  /** The file's id string, e.g. `kvm-4242` for a VM or `kvm-4242/vcpu-0` for a vCPU. */
  readonly id: string;
  /** The statistics the file has, in the kernel's order. */
  readonly descriptors: readonly KvmStatDescriptor[];

  /**
   * Takes ownership of a stats fd and reads its header, id and descriptors.
   * On failure the fd is closed.
   * @internal Use {@link VmFd.statsFd} or {@link VcpuFd.statsFd}.
   * @throws {@link KvmError} `InvalidStats` for a header, id or descriptor block that does not
   *   add up; an errno code if pread fails.
   */
  constructor(fd: number) {
    this.#h = new FdHandle(fd, true, "KvmStats");
    try {
      const header = decodeStatsHeader(preadExact(fd, STATS_HEADER_BYTES, 0, "header"));
      this.id = decodeStatsName(preadExact(fd, header.nameSize, header.idOffset, "id string"), "the id string");
      const block = preadExact(fd, statsDescBlockBytes(header), header.descOffset, "descriptor block");
      const { descriptors, dataBytes } = decodeStatsDescriptors(header, block);
      this.descriptors = Object.freeze(descriptors.map((d) => Object.freeze(d)));
      this.#dataOffset = header.dataOffset;
      this.#data = new Uint8Array(dataBytes);
      // The data block must be there as the descriptors describe it.
      if (dataBytes > 0) preadExact(fd, dataBytes, this.#dataOffset, "data block", this.#data);
    } catch (e) {
      this.#h.close();
      throw e;
    }
  }

  /** The stats fd. @throws {@link KvmError} `Closed` */
  get fd(): number {
    return this.#h.fd;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#h.closed;
  }

  /**
   * Reads the data block (one pread) and returns every statistic by name: a
   * bigint for a plain one, a bigint per bucket for a histogram.
   * @throws {@link KvmError} `Closed` after close(); `InvalidStats` if the file is shorter
   *   than its descriptors say; an errno code if pread fails.
   */
  read(): Record<string, bigint | bigint[]> {
    const fd = this.#h.fd;
    if (this.#data.byteLength > 0) preadExact(fd, this.#data.byteLength, this.#dataOffset, "data block", this.#data);
    return decodeStatsData(this.descriptors, this.#data);
  }

  /** Closes the stats fd. Idempotent. @throws {@link KvmError} if close(2) fails. */
  close(): void {
    this.#h.close();
  }
}
