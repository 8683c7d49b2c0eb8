import { hex } from "./bytes.js";
import { LoaderError } from "./error.js";

/** One parameter: `key` alone (a flag) or `key=value`. */
export interface CmdlineEntry {
  readonly key: string;
  readonly value?: string;
}

/** A virtio-mmio device announced on the command line (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES). */
export interface VirtioMmioCmdlineDevice {
  /** Size of the register window in bytes (usually 0x1000). */
  readonly size: number;
  /** Guest physical base address. */
  readonly addr: number;
  /** GSI / IRQ number. */
  readonly irq: number;
  /** Optional platform device id. */
  readonly id?: number;
}

function checkText(s: string, what: string): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      throw new LoaderError(
        "CmdlineInvalid",
        `${what} contains ${c === 0 ? "a NUL byte" : `the character code ${c}`}; only printable ASCII is allowed`,
      );
    }
  }
}

function checkKey(key: string): void {
  if (key.length === 0) throw new LoaderError("CmdlineInvalid", "an empty parameter name");
  checkText(key, `parameter name "${key}"`);
  if (/[ "=]/.test(key) || key === "--") {
    throw new LoaderError("CmdlineInvalid", `parameter name "${key}" may not contain a space, '"' or '=' or be "--"`);
  }
}

function renderValue(key: string, value: string): string {
  checkText(value, `the value of ${key}`);
  if (value.includes('"')) throw new LoaderError("CmdlineInvalid", `the value of ${key} contains '"', which the kernel cannot unquote`);
  return value === "" || /\s/.test(value) ? `"${value}"` : value;
}

function render(e: CmdlineEntry): string {
  return e.value === undefined ? e.key : `${e.key}=${renderValue(e.key, e.value)}`;
}

/** `4K`, `1M`, or a decimal count: the shortest form the kernel's memparse() reads. */
function memSize(n: number): string {
  if (n % (1 << 20) === 0) return `${n / (1 << 20)}M`;
  if (n % 1024 === 0) return `${n / 1024}K`;
  return String(n);
}

/**
 * A kernel command line, built and validated piece by piece.
 *
 * Values containing whitespace are double-quoted (the kernel's
 * `next_arg()` strips the quotes); values containing `"`, NUL or other
 * control characters are refused. The rendered line never exceeds
 * `capacity` bytes (the setup header's `cmdline_size`, 2047 for Linux).
 * Every method validates first and leaves the line unchanged if it throws.
 */
export class Cmdline {
  /** Most bytes allowed, not counting the terminating NUL. */
  readonly capacity: number;
  #entries: CmdlineEntry[] = [];
  #init: string[] = [];

  /**
   * @param capacity - the kernel's limit without the NUL (`header.cmdline_size`)
   * @throws LoaderError `InvalidArgument` when capacity is not a positive integer.
   */
  constructor(capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity <= 0) {
      throw new LoaderError("InvalidArgument", `command line capacity ${capacity} must be a positive integer`);
    }
    this.capacity = capacity;
  }

  /**
   * Parses an existing command line. Double-quoted values keep their spaces;
   * words after a lone `--` are arguments for init.
   *
   * @throws LoaderError `CmdlineInvalid` (NUL, control characters, an
   * unterminated quote, a quote inside a word where the kernel would keep it),
   * `CmdlineTooLong`.
   */
  static parse(text: string, capacity: number): Cmdline {
    checkText(text, "the command line");
    const c = new Cmdline(capacity);
    const words: string[] = [];
    let cur = "";
    let inQuote = false;
    let started = false;
    // The kernel's next_arg() strips a quote only at the start of a word or of
    // its value (and the matching one at the word's end); a quote anywhere
    // else stays in the value. Such a line would not mean the same once
    // re-rendered, so it is refused.
    let closed = false;
    const misplaced = (): LoaderError =>
      new LoaderError("CmdlineInvalid", `the command line has a '"' inside a word, which the kernel keeps as part of the value; quote the whole value (key="a b") instead`);
    for (const ch of text) {
      if (closed && ch !== " ") throw misplaced();
      if (ch === '"') {
        if (inQuote) {
          inQuote = false;
          closed = true;
        } else {
          const eq = cur.indexOf("=");
          if (started && !(eq >= 0 && eq === cur.length - 1)) throw misplaced();
          inQuote = true;
        }
        started = true;
      } else if (ch === " " && !inQuote) {
        if (started) words.push(cur);
        cur = "";
        started = false;
        closed = false;
      } else {
        cur += ch;
        started = true;
      }
    }
    if (inQuote) throw new LoaderError("CmdlineInvalid", "the command line has an unterminated double quote");
    if (started) words.push(cur);
    const dash = words.indexOf("--");
    const params = dash < 0 ? words : words.slice(0, dash);
    const entries = params.map((w): CmdlineEntry => {
      const eq = w.indexOf("=");
      return eq < 0 ? { key: w } : { key: w.slice(0, eq), value: w.slice(eq + 1) };
    });
    entries.forEach((e) => checkKey(e.key));
    c.#commit(entries, dash < 0 ? [] : words.slice(dash + 1));
    return c;
  }

  /** The parameters in order (without init arguments). */
  get entries(): readonly CmdlineEntry[] {
    return this.#entries;
  }

  /** Value of the last `key=value` for `key`, `""` for a bare flag, or undefined. */
  get(key: string): string | undefined {
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const e = this.#entries[i]!;
      if (e.key === key) return e.value ?? "";
    }
    return undefined;
  }

  /**
   * Appends `key` or `key=value`, keeping earlier entries with the same key
   * (for repeatable parameters such as `console=` or `virtio_mmio.device=`).
   *
   * @throws LoaderError `CmdlineInvalid`, `CmdlineTooLong`.
   */
  add(key: string, value?: string): this {
    checkKey(key);
    this.#commit([...this.#entries, value === undefined ? { key } : { key, value }], this.#init);
    return this;
  }

  /**
   * Sets `key` to `value` (or as a flag), replacing every earlier occurrence
   * of `key` in place of the first one; appends if absent.
   *
   * @throws LoaderError `CmdlineInvalid`, `CmdlineTooLong`.
   */
  set(key: string, value?: string): this {
    checkKey(key);
    const entry: CmdlineEntry = value === undefined ? { key } : { key, value };
    const first = this.#entries.findIndex((e) => e.key === key);
    const next = first < 0 ? [...this.#entries, entry] : this.#entries.flatMap((e, i) => (e.key !== key ? [e] : i === first ? [entry] : []));
    this.#commit(next, this.#init);
    return this;
  }

  /** Removes every occurrence of `key`. */
  remove(key: string): this {
    this.#entries = this.#entries.filter((e) => e.key !== key);
    return this;
  }

  /**
   * Merges another command line into this one: each of its keys replaces
   * ours ({@link Cmdline.set}), except repeated keys in `other`, which are all
   * kept; its init arguments are appended.
   *
   * @throws LoaderError `CmdlineTooLong`.
   */
  merge(other: Cmdline): this {
    const keys = new Set(other.entries.map((e) => e.key));
    const next = [...this.#entries.filter((e) => !keys.has(e.key)), ...other.entries];
    this.#commit(next, [...this.#init, ...other.#init]);
    return this;
  }

  /**
   * Appends `virtio_mmio.device=<size>@<addr>:<irq>[:<id>]`, the form
   * drivers/virtio/virtio_mmio.c parses.
   *
   * @throws LoaderError `InvalidArgument` for a bad size, address or IRQ; `CmdlineTooLong`.
   */
  addVirtioMmioDevice(dev: VirtioMmioCmdlineDevice): this {
    const ok = (n: number, max: number): boolean => Number.isSafeInteger(n) && n >= 0 && n <= max;
    if (!ok(dev.size, 2 ** 32) || dev.size === 0 || !ok(dev.addr, 2 ** 52) || !ok(dev.irq, 0xffff) || (dev.id !== undefined && !ok(dev.id, 0xffff))) {
      throw new LoaderError("InvalidArgument", `virtio-mmio device ${JSON.stringify(dev)} has an invalid size, address, IRQ or id`);
    }
    const v = `${memSize(dev.size)}@${hex(dev.addr)}:${dev.irq}${dev.id === undefined ? "" : `:${dev.id}`}`;
    return this.add("virtio_mmio.device", v);
  }

  /**
   * Appends a word passed to init (after `--`).
   *
   * @throws LoaderError `CmdlineInvalid`, `CmdlineTooLong`.
   */
  addInitArg(arg: string): this {
    checkText(arg, "an init argument");
    if (arg === "" || arg.includes(" ")) throw new LoaderError("CmdlineInvalid", `init argument "${arg}" must be one non-empty word`);
    // The kernel's next_arg() would take '"' as a quote and join the words after it.
    if (arg.includes('"')) throw new LoaderError("CmdlineInvalid", `init argument ${arg} contains '"', which the kernel would read as a quote`);
    this.#commit(this.#entries, [...this.#init, arg]);
    return this;
  }

  /** The rendered line, without NUL. */
  toString(): string {
    return Cmdline.#render(this.#entries, this.#init);
  }

  /** The rendered line as ASCII bytes with the terminating NUL, ready for guest memory. */
  toBytes(): Uint8Array {
    const s = this.toString();
    const b = new Uint8Array(s.length + 1);
    for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
    return b;
  }

  static #render(entries: readonly CmdlineEntry[], init: readonly string[]): string {
    const words = entries.map(render);
    // Init arguments are split by the kernel's next_arg() too: keep a parsed
    // word with spaces (or an empty one) as one argument by quoting it.
    if (init.length > 0) words.push("--", ...init.map((a) => (a === "" || /\s/.test(a) ? `"${a}"` : a)));
    return words.join(" ");
  }

  #commit(entries: CmdlineEntry[], init: string[]): void {
    const text = Cmdline.#render(entries, init);
    if (text.length > this.capacity) {
      throw new LoaderError("CmdlineTooLong", `the command line would be ${text.length} bytes; the kernel accepts at most ${this.capacity}`);
    }
    this.#entries = entries;
    this.#init = init;
  }
}
