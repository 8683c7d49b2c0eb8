// Builds guest RAM from a MemoryPlan and registers it with KVM: one memory slot
// per region, with KVM_SET_USER_MEMORY_REGION2 and the guest_memfd for the
// guest_memfd backend. Owns the backing fds (file, guest_memfd) for as long
// as the memory lives, because every region names its fd.
import { closeSync, constants, fstatSync, ftruncateSync, openSync } from "node:fs";
import { GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, type VmFd } from "@ts-vmm/kvm-ioctls";
import { GuestMemoryMmap, type MmapMemoryOptions } from "@ts-vmm/vm-memory/mmap";
import { VmmError } from "../error.js";
import type { MemoryPlan } from "./memory-plan.js";

/** Guest RAM as built: the memory and what closes it. */
export interface BuiltGuestMemory {
  /** The memory, one region per KVM slot (slot i = region i). */
  readonly mem: GuestMemoryMmap;
  /** Closes the memory and the fds it needs (the file, the guest_memfd). Idempotent. */
  close(): void;
}

/** The host side of a guest memory failure that is not a bug: an `ENOMEM` from a hugetlb mapping (the pool shrank under us). */
function isNoMemory(e: unknown): boolean {
  for (let c: unknown = e; c instanceof Error; c = c.cause) if ((c as { code?: unknown }).code === "ENOMEM") return true;
  return false;
}

/**
 * Maps `ranges` as `plan` says and registers one KVM slot per region.
 * Everything made is closed again if a step fails.
 * @throws {@link VmmError} `FileNotReadable` / `InvalidConfig` for the file
 *   backend's file, `MemoryBackendRefused` if hugetlb pages ran out between the
 *   check and the mapping; other failures propagate (the caller wraps them as
 *   `SetupFailed`).
 */
export function buildGuestMemory(
  vm: VmFd,
  plan: MemoryPlan,
  ranges: readonly { readonly start: number; readonly size: number }[],
  opts: { readonly dirtyLog?: boolean } = {},
): BuiltGuestMemory {
  // Diff snapshots: KVM logs the guest's writes per slot, vm-memory's bitmaps the VMM's.
  const dirtyLog = opts.dirtyLog ?? false;
  let fd: number | undefined;
  let mem: GuestMemoryMmap | undefined;
  const closeFd = (): void => {
    if (fd !== undefined) closeSync(fd);
    fd = undefined;
  };
  try {
    const populate = plan.prefault !== "none";
    if (plan.source === "guest_memfd") {
      fd = vm.createGuestMemfd(plan.bytes, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
      mem = GuestMemoryMmap.fromGuestMemfd(fd, ranges, { populate, dirtyTracking: dirtyLog });
    } else if (plan.source === "file") {
      fd = openMemoryFile(plan.path!, plan.bytes, plan.shared);
      mem = GuestMemoryMmap.fromFile(fd, ranges, { shared: plan.shared, populate, dirtyTracking: dirtyLog });
    } else {
      const opts: MmapMemoryOptions = {
        name: "guest-ram",
        populate,
        dirtyTracking: dirtyLog,
        ...(plan.source === "anonymous" ? { backing: "anonymous" as const, shared: false } : {}),
        ...(plan.hugePageSize !== undefined ? { hugetlb: true, hugePageSize: plan.hugePageSize } : {}),
        ...(plan.hugePages === "thp" ? { madviseHugepage: true } : {}),
      };
      try {
        mem = GuestMemoryMmap.fromRanges(ranges, opts);
      } catch (e) {
        if (plan.hugePageSize !== undefined && isNoMemory(e)) {
          throw new VmmError("MemoryBackendRefused", `hugepages=${plan.hugePages} needs ${plan.hugePagesNeeded} free ${plan.hugePageSize / (1 << 20)} MiB pages, and the pool ran out while mapping guest memory (another process took pages after the check)`, { cause: e });
        }
        throw e;
      }
    }
    const m = mem;
    const gmem = plan.source === "guest_memfd" ? fd : undefined;
    m.regions.forEach((r, slot) => {
      if (r.hostAddress === undefined) throw new VmmError("SetupFailed", "guest memory region has no host mapping");
      // `buffer` (the mapping's SharedArrayBuffer) makes the slot hold the mapping alive:
      // KVM keeps only its address, and GC must not unmap memory the guest still maps.
      const memory = { address: r.hostAddress, size: r.size, buffer: r.bytes.buffer };
      if (gmem !== undefined) vm.setUserMemoryRegion2({ slot, guestPhysAddr: r.start, memory, logDirtyPages: dirtyLog, guestMemfd: { fd: gmem, offset: r.fileOffset ?? 0 } });
      else vm.setUserMemoryRegion({ slot, guestPhysAddr: r.start, memory, logDirtyPages: dirtyLog });
    });
    let closed = false;
    return {
      mem: m,
      close(): void {
        if (closed) return;
        closed = true;
        try {
          m.close();
        } finally {
          closeFd();
        }
      },
    };
  } catch (e) {
    mem?.close();
    closeFd();
    throw e;
  }
}

/**
 * Opens the file of the file backend. Shared: read-write, created if missing
 * and extended (sparse) to `bytes` if shorter. Private: read-only, and it must
 * hold `bytes` already (a private mapping never changes the file, so it cannot
 * grow it either).
 */
// (libuv opens every file O_CLOEXEC.)
function openMemoryFile(path: string, bytes: number, shared: boolean): number {
  let fd: number;
  try {
    fd = shared ? openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600) : openSync(path, constants.O_RDONLY);
  } catch (e) {
    throw new VmmError("FileNotReadable", `cannot open the memory file ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new VmmError("InvalidConfig", `the memory file ${path} is not a regular file`);
    if (st.size < bytes) {
      if (!shared) throw new VmmError("InvalidConfig", `backend=file:${path} with shared=off needs a file of at least ${bytes} bytes (a private mapping never changes the file), but it has ${st.size}`);
      ftruncateSync(fd, bytes);
    }
    return fd;
  } catch (e) {
    closeSync(fd);
    if (e instanceof VmmError) throw e;
    throw new VmmError("FileNotReadable", `cannot size the memory file ${path}: ${(e as Error).message}`, { cause: e });
  }
}
