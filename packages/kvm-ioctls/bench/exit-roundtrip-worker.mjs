// Worker side of exit-roundtrip.mjs: runs the vCPU the main thread built
// (passed as a VcpuTransferable) and times vcpu.run() until shutdown.
// RAW=1 times a bare loop over the addon's run() instead (no exit decoding): the
// floor that vcpu.run() is compared with in BENCHMARKS.md.
import { parentPort, workerData } from "node:worker_threads";
import { VcpuFd } from "../dist/index.js";

try {
  const vcpu = VcpuFd.fromTransferable(workerData.vcpu);
  let exits = 0;
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  if (process.env.RAW) {
    const { native } = await import("../dist/native.js");
    const run = native().run;
    const fd = vcpu.fd;
    const u32 = new Uint32Array(vcpu.runBuffer, 0, 4);
    for (;;) {
      run(fd);
      const r = u32[2]; // exit_reason
      if (r === 2 || r === 6) {
        exits++;
        continue;
      }
      break;
    }
  } else for (;;) {
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
