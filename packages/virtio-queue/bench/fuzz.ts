// `pnpm fuzz`: at least a million random descriptor tables against the device
// side of split and packed queues. Fails (exit 1) on any exception that is not
// a VirtqueueError, or on a popped chain that breaks an invariant.
import { fuzzOne, newStats } from "../test/fuzz-engine.js";

const count = Number(process.env.FUZZ_TABLES ?? 1_000_000);
const firstSeed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
// Errors are the common case here: skip capturing stack traces.
Error.stackTraceLimit = 0;

const stats = newStats();
const t0 = performance.now();
let lastReport = t0;
for (let i = 0; i < count; i++) {
  fuzzOne((firstSeed + i) >>> 0, stats);
  if ((i & 0xffff) === 0 && performance.now() - lastReport > 10_000) {
    lastReport = performance.now();
    console.error(`  ${stats.tables} tables, ${stats.chains} chains, ${((lastReport - t0) / 1000).toFixed(0)} s`);
  }
}
const secs = (performance.now() - t0) / 1000;
const codes = [...stats.typedErrors.entries()].sort((a, b) => b[1] - a[1]);
console.log(`seeds ${firstSeed}..${firstSeed + count - 1}`);
console.log(`typed errors: ${codes.map(([c, n]) => `${c}=${n}`).join(" ")}`);
for (const f of stats.failures.slice(0, 10)) console.log(`FAIL seed ${f.seed}:`, f.error);
console.log(
  `fuzz: ${stats.tables} tables, ${stats.chains} chains popped, ${stats.failures.length} untyped exceptions, ${secs.toFixed(1)} s`,
);
process.exit(stats.failures.length === 0 && stats.tables >= count ? 0 : 1);
