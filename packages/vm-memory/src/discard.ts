import { readFileSync, statfsSync } from "node:fs";
import type { GuestAddress } from "./address.js";

/**
 * What backs one mmap region, recorded when the memory maps it. It decides
 * how {@link DiscardableMemory.discardRange} gives the region's pages back:
 *
 * | backing | syscall | the range reads back as |
 * |---|---|---|
 * | shared (`memfd`, shared `anonymous` = shmem, shared `file`, `guest_memfd`, hugetlb memfd) | madvise(MADV_REMOVE): the kernel's fallocate(PUNCH_HOLE \| KEEP_SIZE) on the mapping's own file at the mapping's offset | zeros |
 * | private (`anonymous` with MAP_PRIVATE, private `file`) | madvise(MADV_DONTNEED): the private (copy-on-write) pages are dropped | zeros (anonymous), the file's data (file) |
 *
 * A hugetlb region (`pageSize` above 4096) is discarded in whole huge pages only.
 */
export interface MemoryBacking {
  /** How the mapping was made. */
  readonly kind: "memfd" | "anonymous" | "file" | "guest_memfd";
  /** MAP_SHARED (true) or MAP_PRIVATE (false). */
  readonly shared: boolean;
  /**
   * The size of the pages the kernel backs the mapping with (smaps'
   * `KernelPageSize`): 4096, or the huge page size of a hugetlb mapping. 0 when
   * it could not be learnt: such a region refuses discards.
   */
  readonly pageSize: number;
}

/**
 * Guest memory that can give host memory back for a guest range (a balloon's
 * inflate, free page reporting). Implemented by `GuestMemoryMmap`; used by
 * virtio-balloon in @ts-vmm/virtio-devices.
 */
export interface DiscardableMemory {
  /**
   * The smallest unit every region can discard: 4096, or a huge page size if
   * any region is hugetlb-backed. A range passed to
   * {@link DiscardableMemory.discardRange} must start and end on multiples of
   * its regions' page sizes.
   * @throws {@link GuestMemoryError} `"DiscardUnsupported"` if some region
   *   cannot discard at all; `"Closed"` after close.
   */
  discardGranularity(): number;
  /**
   * Returns the host memory behind `[addr, addr + len)` to the host: the host
   * RSS (and a memfd's allocated blocks) drop, and the range reads back as
   * zeros (the file's data for a private file mapping) and is allocated again
   * on the next touch. Marks the range dirty. May span contiguous regions.
   *
   * Everything is checked before the first syscall: a failed check discards
   * nothing. A syscall failing part way leaves the pieces before it discarded.
   * @throws {@link GuestMemoryError} `"Hole"`/`"OutOfBounds"` if the range is
   *   not backed; `"AddressTooLarge"`/`"InvalidArgument"` for a malformed
   *   address or length; `"Unaligned"` if it does not cover whole pages of
   *   every region it touches (4 KiB, or a whole huge page on hugetlb);
   *   `"DiscardUnsupported"` if a region cannot discard; `"Discard"` if the
   *   syscall fails (`cause`: the `VmmSysError`); `"Closed"` after close.
   */
  discardRange(addr: GuestAddress, len: number): void;
}

/** The madvise advice that discards pages of a mapping with this backing. @internal */
export function discardAdvice(b: MemoryBacking): "remove" | "dontneed" {
  return b.shared ? "remove" : "dontneed";
}

/** statfs f_type of hugetlbfs. */
const HUGETLBFS_MAGIC = 0x958458f6;

/**
 * The kernel page size of a mapping of file descriptor `fd`: the huge page
 * size for a file on hugetlbfs (its statfs block size), else 4 KiB (a regular
 * file, tmpfs or memfd maps in base pages); 0 if the fd cannot be statfs'd.
 * One statfs(2) through /proc/self/fd, where reading /proc/self/smaps costs
 * ~1.5 ms with a few hundred mappings and grows with every VM a process holds.
 * @internal
 */
export function fdPageSize(fd: number): number {
  try {
    const st = statfsSync(`/proc/self/fd/${fd}`);
    return st.type === HUGETLBFS_MAGIC ? st.bsize : 4096;
  } catch {
    return 0;
  }
}

/**
 * The kernel page size of this process's mapping that starts at `hostAddress`,
 * from /proc/self/smaps; 0 if it is not found or smaps cannot be read.
 * @internal
 */
export function kernelPageSize(hostAddress: bigint): number {
  let text: string;
  try {
    text = readFileSync("/proc/self/smaps", "latin1");
  } catch {
    return 0;
  }
  const head = `\n${hostAddress.toString(16).padStart(8, "0")}-`;
  const at = text.startsWith(head.slice(1)) ? 0 : text.indexOf(head);
  if (at < 0) return 0;
  const m = /\nKernelPageSize:\s+(\d+) kB/.exec(text.slice(at, at + 4096));
  return m ? Number(m[1]) * 1024 : 0;
}
