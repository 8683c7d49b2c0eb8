export { MetricsWriter, METRICS_FLUSH_INTERVAL_MS } from "./writer.js";
export type { MetricsLine, MetricsWriterOptions } from "./writer.js";
export { VMM_METRICS_VERSION } from "./types.js";
export type { VmmMetrics, ExitMetrics, VcpuExitMetrics, DeviceMetrics, KvmMetrics, CounterSet } from "./types.js";
export { EXIT_REASONS, PIO_DEVICES } from "./exit-counters.js";
export type { PioDeviceName } from "./exit-counters.js";
