// API request latency: PUT /machine-config over the Unix socket (bench/api-latency.ts).
// Prints the median of several runs; JSON last line {"bench":"api","api_p50_ms":…}.
import { apiLatency } from "./api-latency.js";

const REQUESTS = 400;
const RUNS = 5;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

const { p50s, p99s } = await apiLatency(RUNS, REQUESTS, (l) => console.log(l));
console.log(JSON.stringify({ bench: "api", requests: REQUESTS, runs: RUNS, api_p50_ms: Number(median(p50s).toFixed(3)), api_p99_ms: Number(median(p99s).toFixed(3)) }));
