// `ts-vmm pool --snapshot SNAP,mem=MEM --size N --api-sock PATH`: a snapshot
// pool served over HTTP until SIGINT or SIGTERM.
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { UsageError, parseRestore, parseWhole, type OptionValue } from "../cli-args.js";
import { startPoolApiServer } from "./pool-server.js";
import { DEFAULT_POOL_MAX_RUNNING, MAX_POOL_RUNNING, MAX_POOL_SIZE, SnapshotPool } from "./snapshot-pool.js";

/**
 * Runs the `pool` command; resolves to the exit status (130 after SIGINT or
 * SIGTERM, as `run`). Says `pool ready` on stderr once `size` VMs are
 * restored and the socket listens.
 * @internal
 */
export async function poolCommand(
  values: Readonly<Record<string, OptionValue>>,
  stderr: { write(s: string): unknown },
  signals: boolean,
  fail: (e: unknown) => number,
): Promise<number> {
  const s = (k: string): string | undefined => (typeof values[k] === "string" ? (values[k] as string) : undefined);
  let snapshot, size, maxRunning, sock, logDir;
  try {
    if (s("snapshot") === undefined) throw new UsageError("pool needs --snapshot SNAPSHOT_PATH,mem=MEMORY_FILE");
    snapshot = parseRestore(s("snapshot")!, "--snapshot");
    if (s("size") === undefined) throw new UsageError(`pool needs --size N (1 to ${MAX_POOL_SIZE})`);
    size = parseWhole("--size", s("size")!, 1, MAX_POOL_SIZE);
    maxRunning = s("max-running") === undefined ? DEFAULT_POOL_MAX_RUNNING : parseWhole("--max-running", s("max-running")!, 1, MAX_POOL_RUNNING);
    sock = s("api-sock");
    if (sock === undefined || sock === "") throw new UsageError("pool needs --api-sock PATH");
    logDir = s("log-dir") === undefined ? undefined : resolve(s("log-dir")!);
    if (logDir !== undefined) {
      let dir = false;
      try {
        dir = statSync(logDir).isDirectory();
      } catch {
        dir = false;
      }
      if (!dir) throw new UsageError(`--log-dir ${logDir}: not a directory`);
    }
  } catch (e) {
    return fail(e);
  }
  let pool: SnapshotPool;
  try {
    pool = await SnapshotPool.create({ ...snapshot, size, maxRunning, ...(logDir !== undefined ? { serial: logDir } : {}) });
  } catch (e) {
    return fail(e);
  }
  let server;
  try {
    server = await startPoolApiServer({ socketPath: sock, pool, snapshot });
  } catch (e) {
    await pool.close();
    return fail(e);
  }
  stderr.write(`ts-vmm: pool ready: ${size} VMs restored from ${snapshot.snapshotPath}, API on ${sock}\n`);
  let stop!: (sig: NodeJS.Signals) => void;
  const stopped = new Promise<NodeJS.Signals>((r) => { stop = r; });
  if (signals) {
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  }
  const sig = await stopped;
  if (signals) {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
  await server.close();
  const left = pool.stats().running;
  await pool.close();
  stderr.write(`ts-vmm: pool stopped by ${sig}: ${left} running VMs stopped, ${pool.stats().taken} handed out in all\n`);
  return 130;
}
