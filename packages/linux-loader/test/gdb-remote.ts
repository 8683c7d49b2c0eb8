import { connect, type Socket } from "node:net";

/**
 * A minimal GDB remote serial protocol client, only to stop QEMU at an
 * address: QMP has no breakpoints, QEMU's gdbstub has. Memory and registers
 * are still read through QMP. Packets: `$<data>#<checksum>`; we switch acks
 * off with QStartNoAckMode.
 */
export class GdbRemote {
  readonly #sock: Socket;
  #buf = "";
  #waiters: ((packet: string) => void)[] = [];
  #acks = true;

  private constructor(sock: Socket) {
    this.#sock = sock;
    sock.setEncoding("latin1");
    sock.on("data", (d: string) => this.#onData(d));
  }

  static async connect(path: string, timeoutMs = 10_000): Promise<GdbRemote> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const s = await new Promise<Socket>((resolve, reject) => {
          const c = connect(path);
          c.once("connect", () => resolve(c));
          c.once("error", reject);
        });
        const g = new GdbRemote(s);
        const r = await g.request("QStartNoAckMode");
        if (r === "OK") g.#acks = false;
        return g;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`gdbstub at ${path}: ${String(e)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  #onData(d: string): void {
    this.#buf += d;
    for (;;) {
      this.#buf = this.#buf.replace(/^[+-]+/, "");
      const start = this.#buf.indexOf("$");
      if (start < 0) return;
      const hash = this.#buf.indexOf("#", start);
      if (hash < 0 || this.#buf.length < hash + 3) return;
      const packet = this.#buf.slice(start + 1, hash);
      this.#buf = this.#buf.slice(hash + 3);
      if (this.#acks) this.#sock.write("+");
      this.#waiters.shift()?.(packet);
    }
  }

  /** Sends a packet and resolves with the reply packet. */
  request(data: string, timeoutMs = 30_000): Promise<string> {
    let sum = 0;
    for (const c of data) sum = (sum + c.charCodeAt(0)) & 0xff;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`gdbstub: no reply to ${data} within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push((p) => (clearTimeout(t), resolve(p)));
      this.#sock.write(`$${data}#${sum.toString(16).padStart(2, "0")}`);
    });
  }

  /** Sets a breakpoint at `addr` (software under TCG, hardware under KVM) and continues until a stop reply. */
  async runTo(addr: number, hardware: boolean, timeoutMs = 60_000): Promise<string> {
    const r = await this.request(`Z${hardware ? 1 : 0},${addr.toString(16)},1`);
    if (r !== "OK") throw new Error(`gdbstub refused a breakpoint at 0x${addr.toString(16)}: "${r}"`);
    const stop = await this.request("c", timeoutMs);
    await this.request(`z${hardware ? 1 : 0},${addr.toString(16)},1`);
    return stop;
  }

  close(): void {
    this.#sock.destroy();
  }
}
