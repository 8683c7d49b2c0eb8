// Worker side of exit-roundtrip.mjs: runs the vCPU the main thread built
// (passed as a VcpuTransferable) and times vcpu.run() until shutdown.
import { parentPort, workerData } from "node:worker_threads";
import { VcpuFd } from "../dist/index.js";

try {
  const vcpu = VcpuFd.fromTransferable(workerData.vcpu);
  let exits = 0;
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  for (;;) {
    const e = vcpu.run();
    if (e.kind === "IoOut" || e.kind === "MmioWrite") {
      exits++;
      continue;
    }
    if (e.kind === "Shutdown") break;
    throw new Error(`unexpected exit ${JSON.stringify(e, (_k, v) => (typeof v === "bigint" ? v.toString() : v))}`);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  const cpu = (c.user + c.system) / 1e6; // whole process: the main thread only waits meanwhile
  vcpu.close();
  parentPort.postMessage({ exits, seconds, cpu });
} catch (e) {
  parentPort.postMessage({ error: String(e?.stack ?? e) });
}
