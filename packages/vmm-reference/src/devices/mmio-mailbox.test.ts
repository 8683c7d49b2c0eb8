import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { defaultMailboxSpinMs, MMIO_MAILBOX_BYTES, MMIO_MAILBOX_SPIN_MS, MmioMailboxClient, MmioMailboxServer, type MmioRequest } from "./mmio-mailbox.js";

// The client runs in a real worker thread (as in the VMM) from the compiled dist/.
const CLIENT = new URL("../../dist/devices/mmio-mailbox.js", import.meta.url).href;

function worker(script: string, data: unknown): Promise<unknown> {
  const w = new Worker(
    `import { workerData, parentPort } from "node:worker_threads";
     import { MmioMailboxClient } from ${JSON.stringify(CLIENT)};
     const { sab, stop, spinMs } = workerData;
     const c = new MmioMailboxClient(sab, new Int32Array(stop), spinMs);
     ${script}`,
    { eval: true, workerData: data },
  );
  return new Promise((res, rej) => {
    w.once("message", (m) => {
      res(m);
      void w.terminate();
    });
    w.once("error", rej);
  });
}

describe("MMIO mailbox between a worker and the device owner", () => {
  it("forwards reads and writes of every width with addresses above 4 GiB, in order", async () => {
    const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
    const stop = new SharedArrayBuffer(4);
    const seen: MmioRequest[] = [];
    const server = new MmioMailboxServer(sab, (r) => {
      seen.push({ address: r.address, write: r.write, data: r.data.slice() });
      if (!r.write) r.data.forEach((_, i) => (r.data[i] = (r.address + i) & 0xff));
    });
    const out = (await worker(
      `const reads = [];
       for (let i = 0; i < 200; i++) {
         const len = [1, 2, 4, 8][i % 4];
         const d = new Uint8Array(len);
         c.call(0x1_2345_6000 + i, false, d);
         reads.push([...d]);
         c.call(0xd000_1000 + i, true, new Uint8Array(len).fill(i & 0xff));
       }
       parentPort.postMessage(reads);`,
      { sab, stop },
    )) as number[][];
    server.close();
    expect(out).toHaveLength(200);
    expect(out[5]).toEqual([0x05, 0x06]);
    expect(out[3]).toEqual([3, 4, 5, 6, 7, 8, 9, 10].map((x) => x & 0xff));
    expect(seen).toHaveLength(400);
    expect(seen[0]).toMatchObject({ address: 0x1_2345_6000, write: false });
    expect(seen[1]).toMatchObject({ address: 0xd000_1000, write: true });
    expect([...seen[399]!.data]).toEqual(new Array(8).fill(199));
    expect(server.served).toBe(400);
  });

  for (const spinMs of [0, 0.1, 5]) {
    it(`with a spin of ${spinMs} ms before sleeping, every answer arrives and matches its request`, async () => {
      const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
      const stop = new SharedArrayBuffer(4);
      let n = 0;
      const server = new MmioMailboxServer(sab, (r) => {
        n++;
        // Answered in the owner's turn: with a spin the vCPU sees it while spinning.
        if (!r.write) new DataView(r.data.buffer, r.data.byteOffset, r.data.byteLength).setUint32(0, r.address >>> 0, true);
      });
      const out = (await worker(
        `const got = [];
         for (let i = 0; i < 300; i++) { const d = new Uint8Array(4); c.call(0xd000_0000 + i * 4, false, d); got.push(new DataView(d.buffer).getUint32(0, true)); }
         parentPort.postMessage({ got, spin: c.spinMs });`,
        { sab, stop, spinMs },
      )) as { got: number[]; spin: number };
      server.close();
      expect(out.spin).toBe(spinMs);
      expect(out.got).toEqual(Array.from({ length: 300 }, (_, i) => 0xd000_0000 + i * 4));
      expect(n).toBe(300);
    });
  }

  it("an answer later than the spin still arrives (the vCPU went on to sleep in Atomics.wait)", async () => {
    const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
    const stop = new SharedArrayBuffer(4);
    const server = new MmioMailboxServer(sab, (r) => {
      // Busy for 30 ms on the owner's thread: longer than the 5 ms spin.
      const until = Date.now() + 30;
      while (Date.now() < until);
      if (!r.write) r.data.fill(0x5a);
    });
    const out = (await worker(
      `const d = new Uint8Array(4); const t0 = performance.now(); c.call(0xd000_0000, false, d);
       parentPort.postMessage({ bytes: [...d], ms: performance.now() - t0, timeouts: c.timeouts });`,
      { sab, stop, spinMs: 5 },
    )) as { bytes: number[]; ms: number; timeouts: number };
    server.close();
    expect(out.bytes).toEqual([0x5a, 0x5a, 0x5a, 0x5a]);
    expect(out.ms).toBeGreaterThanOrEqual(29);
    expect(out.timeouts).toBe(0);
  });

  it("the spin's default: TS_VMM_MAILBOX_SPIN_MS if valid, else MMIO_MAILBOX_SPIN_MS with more CPUs than vCPUs, else 0; a bad spin is a RangeError", () => {
    expect(defaultMailboxSpinMs(1, {}, 2)).toBe(MMIO_MAILBOX_SPIN_MS);
    expect(defaultMailboxSpinMs(2, {}, 2)).toBe(0);
    expect(defaultMailboxSpinMs(1, {}, 1)).toBe(0);
    expect(defaultMailboxSpinMs(4, {}, 8)).toBe(MMIO_MAILBOX_SPIN_MS);
    expect(defaultMailboxSpinMs(8, { TS_VMM_MAILBOX_SPIN_MS: "0" }, 8)).toBe(0);
    expect(defaultMailboxSpinMs(1, { TS_VMM_MAILBOX_SPIN_MS: "0.5" }, 1)).toBe(0.5);
    for (const bad of ["-1", "nope", "11", "Infinity"]) expect(defaultMailboxSpinMs(1, { TS_VMM_MAILBOX_SPIN_MS: bad }, 2)).toBe(MMIO_MAILBOX_SPIN_MS);
    const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
    for (const bad of [-0.1, 10.5, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => new MmioMailboxClient(sab, new Int32Array(4), bad)).toThrow(RangeError);
    expect(new MmioMailboxClient(sab, new Int32Array(4), 0).spinMs).toBe(0);
  });

  it("a worker whose owner stopped answering gives up once the VM is stopping (reads float high)", async () => {
    const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
    const stop = new SharedArrayBuffer(4);
    setTimeout(() => Atomics.store(new Int32Array(stop), 0, 1), 100);
    const out = (await worker(
      `const d = new Uint8Array(4);
       const ok = c.call(0xd000_1000, false, d);
       parentPort.postMessage({ ok, d: [...d] });`,
      { sab, stop },
    )) as { ok: boolean; d: number[] };
    expect(out).toEqual({ ok: false, d: [0xff, 0xff, 0xff, 0xff] });
  });

  it("an owner that answers late (here: 300 ms after the test starts) is notified again every 50 ms and the access completes; the waits are counted", async () => {
    const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
    const stop = new SharedArrayBuffer(4);
    // No server yet: the request waits. A server started later still finds it and answers.
    let server: MmioMailboxServer | undefined;
    setTimeout(() => {
      server = new MmioMailboxServer(sab, (r) => { if (!r.write) r.data.fill(0x5a); });
    }, 300);
    const out = (await worker(
      `const d = new Uint8Array(4);
       const ok = c.call(0xfec0_0010, false, d);
       parentPort.postMessage({ ok, d: [...d], timeouts: c.timeouts });`,
      { sab, stop },
    )) as { ok: boolean; d: number[]; timeouts: number };
    server?.close();
    expect(out.ok).toBe(true);
    expect(out.d).toEqual([0x5a, 0x5a, 0x5a, 0x5a]);
    expect(out.timeouts).toBeGreaterThanOrEqual(2);
  });
});
