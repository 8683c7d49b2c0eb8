// Guest memory to and from the memory file. Full: every region's bytes, one
// after the other (the layout GuestMemoryMmap.fromFile maps). Diff: a file of
// the same size with only the dirty pages written and holes elsewhere (so it
// takes the disk space of the pages it holds), to be merged onto the memory
// file of the snapshot it follows with mergeDiffMemory.
import { closeSync, constants, fsyncSync, ftruncateSync, openSync, readSync, renameSync, rmSync, writeSync } from "node:fs";
import { writeToFdAsync } from "@ts-vmm/vm-memory";
import type { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import type { MemoryRegionSnapshot } from "./state.js";

const PAGE = 4096;

/** The regions of `mem` as the memory file lays them out. */
export function memoryLayout(mem: GuestMemoryMmap): { regions: MemoryRegionSnapshot[]; fileBytes: number } {
  let off = 0;
  const regions = mem.regions.map((r) => {
    const out = { start: r.start, size: r.size, fileOffset: off };
    off += r.size;
    return out;
  });
  return { regions, fileBytes: off };
}

/**
 * Writes guest memory to `path` (mode 0600): all of it, or only the pages
 * `dirty(regionIndex)` lists. Returns the runs written. The bytes go to a new
 * file renamed over `path` at the end, never into the file `path` names: that
 * may be the file this VM (or another) maps, and truncating a mapped file
 * discards the mapping's pages, copied-on-write ones included.
 * Asynchronous (libuv's pool writes straight from the mapping): the event
 * loop keeps serving while hundreds of MiB go out. The VM must be paused and
 * its devices quiet, or the file is not a consistent image.
 */
export async function writeMemoryFile(
  mem: GuestMemoryMmap,
  path: string,
  dirty?: (region: number) => Iterable<number>,
): Promise<{ runs: [number, number][]; bytes: number }> {
  const { regions, fileBytes } = memoryLayout(mem);
  const tmp = `${path}.tmp-${process.pid}`;
  rmSync(tmp, { force: true }); // left by a process of the same pid that died while writing
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  let open = true, done = false;
  try {
    ftruncateSync(fd, fileBytes);
    const runs: [number, number][] = [];
    let bytes = 0;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      if (dirty === undefined) {
        await writeToFdAsync(mem, fd, r.start, r.size, r.fileOffset);
        runs.push([r.fileOffset, r.size]);
        bytes += r.size;
        continue;
      }
      // Coalesce consecutive dirty pages into one write each.
      let runStart = -1, runPages = 0;
      const flush = async (): Promise<void> => {
        if (runPages === 0) return;
        await writeToFdAsync(mem, fd, r.start + runStart * PAGE, runPages * PAGE, r.fileOffset + runStart * PAGE);
        runs.push([r.fileOffset + runStart * PAGE, runPages * PAGE]);
        bytes += runPages * PAGE;
        runPages = 0;
      };
      for (const p of dirty(i)) {
        if (runPages > 0 && p === runStart + runPages) runPages++;
        else {
          await flush();
          runStart = p;
          runPages = 1;
        }
      }
      await flush();
    }
    fsyncSync(fd);
    open = false;
    closeSync(fd);
    renameSync(tmp, path);
    done = true;
    return { runs, bytes };
  } finally {
    if (open) closeSync(fd);
    if (!done) rmSync(tmp, { force: true });
  }
}

/**
 * Copies the runs a diff snapshot wrote (its state's `memory.pages`) from
 * `diffPath` into `basePath`, the full memory file of the snapshot the diff
 * was taken after (or a copy of it): `basePath` then holds the memory of the
 * diff snapshot. Never do this to a file a running VM maps (MAP_PRIVATE does
 * not protect pages the VM has not written yet).
 */
export function mergeDiffMemory(diffPath: string, basePath: string, runs: readonly (readonly [number, number])[]): void {
  const src = openSync(diffPath, "r");
  const dst = openSync(basePath, "r+");
  try {
    const buf = new Uint8Array(1 << 20);
    for (const [off, len] of runs) {
      for (let done = 0; done < len;) {
        const n = readSync(src, buf, 0, Math.min(buf.byteLength, len - done), off + done);
        if (n === 0) throw new Error(`the diff memory file ends at ${off + done}, inside a run it should hold`);
        writeSync(dst, buf, 0, n, off + done);
        done += n;
      }
    }
    fsyncSync(dst);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
}
