// The snapshot (state) file:
//
//   offset  size  field
//   0       8     magic "TSVMMSNP"
//   8       4     format version (u32 LE), SNAPSHOT_FORMAT_VERSION
//   12      4     reserved, 0
//   16      8     state length N (u64 LE)
//   24      N     the state: UTF-8 JSON (json-codec.ts)
//   24+N    8     CRC-64/XZ (u64 LE) of bytes 0 .. 24+N
//
// Guest memory is in its own file (see DESIGN.md).
import { VmmError } from "../error.js";
import { crc64 } from "./crc64.js";
import { decodeState, encodeState } from "./json-codec.js";

/** The first 8 bytes of every snapshot file. */
export const SNAPSHOT_MAGIC = "TSVMMSNP";
/** The format version this build writes and reads. */
export const SNAPSHOT_FORMAT_VERSION = 1;
const HEADER = 24;
/** Largest state accepted (64 MiB): a hostile length must not make us allocate without bound. */
export const MAX_STATE_BYTES = 64 << 20;

const invalid = (why: string, cause?: unknown): VmmError =>
  new VmmError("SnapshotInvalid", `the snapshot file is not usable: ${why}`, cause === undefined ? undefined : { cause });

/** The bytes of a snapshot file holding `state`. */
export function encodeSnapshotFile(state: unknown, version = SNAPSHOT_FORMAT_VERSION): Uint8Array {
  const json = Buffer.from(encodeState(state), "utf8");
  const out = new Uint8Array(HEADER + json.byteLength + 8);
  const dv = new DataView(out.buffer);
  out.set(Buffer.from(SNAPSHOT_MAGIC, "latin1"), 0);
  dv.setUint32(8, version, true);
  dv.setBigUint64(16, BigInt(json.byteLength), true);
  out.set(json, HEADER);
  dv.setBigUint64(HEADER + json.byteLength, crc64(out.subarray(0, HEADER + json.byteLength)), true);
  return out;
}

/**
 * The state in a snapshot file, after checking magic, version, length and CRC.
 * @throws {@link VmmError} `SnapshotInvalid`, naming what is wrong.
 */
export function decodeSnapshotFile(bytes: Uint8Array): unknown {
  if (bytes.byteLength < HEADER + 8) throw invalid(`it has ${bytes.byteLength} bytes, less than a header and a CRC (truncated?)`);
  if (Buffer.from(bytes.subarray(0, 8)).toString("latin1") !== SNAPSHOT_MAGIC) throw invalid("no TSVMMSNP magic (not a ts-vmm snapshot)");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== SNAPSHOT_FORMAT_VERSION) throw invalid(`format version ${version}, this ts-vmm reads version ${SNAPSHOT_FORMAT_VERSION} only`);
  if (dv.getUint32(12, true) !== 0) throw invalid("the reserved header field is not 0");
  const n = dv.getBigUint64(16, true);
  if (n > BigInt(MAX_STATE_BYTES)) throw invalid(`a state of ${n} bytes (at most ${MAX_STATE_BYTES})`);
  const len = Number(n);
  if (bytes.byteLength !== HEADER + len + 8) throw invalid(`the header says ${HEADER + len + 8} bytes, the file has ${bytes.byteLength} (truncated or padded)`);
  const want = dv.getBigUint64(HEADER + len, true);
  const got = crc64(bytes.subarray(0, HEADER + len));
  if (want !== got) throw invalid(`CRC-64 mismatch (stored 0x${want.toString(16)}, computed 0x${got.toString(16)}): the file is corrupted`);
  try {
    return decodeState(Buffer.from(bytes.subarray(HEADER, HEADER + len)).toString("utf8"));
  } catch (e) {
    throw invalid(`the state is not valid JSON: ${(e as Error).message}`, e);
  }
}
