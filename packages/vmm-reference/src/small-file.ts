// Reads a small text file (a JSON template or config) with a bound, so that
// /dev/zero or a FIFO named by mistake is not read forever.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** Largest JSON file the VMM reads (templates, --config). */
export const MAX_SMALL_FILE = 1 << 20;

/**
 * The file's text, at most `limit` bytes.
 * @throws Error (from fs) when it cannot be opened or read, or a plain Error when it is a directory or larger than `limit`.
 */
export function readSmallFile(path: string | URL, limit = MAX_SMALL_FILE): string {
  const fd = openSync(path, "r");
  try {
    if (fstatSync(fd).isDirectory()) throw new Error("it is a directory");
    const buf = Buffer.alloc(limit + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.byteLength - n, null);
      if (got === 0) break;
      n += got;
      if (n > limit) throw new Error(`it is larger than ${limit} bytes`);
    }
    return buf.toString("utf8", 0, n);
  } finally {
    closeSync(fd);
  }
}
