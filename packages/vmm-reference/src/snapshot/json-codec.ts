// The snapshot state as JSON: bigints become {"$u64": "hex"} and byte arrays
// {"$b64": "..."}; everything else is plain JSON. Decoding rebuilds them and
// refuses anything else that looks like a tagged value.

/** A value the codec carries: JSON plus bigint and Uint8Array. */
export type StateValue = null | boolean | number | string | bigint | Uint8Array | readonly StateValue[] | { readonly [k: string]: StateValue };

/** JSON text of `value` (bigints as hex, byte arrays as base64). */
export function encodeState(value: unknown): string {
  return JSON.stringify(value, function (this: Record<string, unknown>, key: string, v: unknown) {
    const raw = this[key];
    if (typeof raw === "bigint") {
      if (raw < 0n) throw new RangeError(`negative bigint at ${key}`);
      return { $u64: raw.toString(16) };
    }
    if (raw instanceof Uint8Array) return { $b64: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("base64") };
    return v;
  });
}

/**
 * Parses {@link encodeState} output.
 * @throws SyntaxError for malformed JSON or a malformed tagged value.
 */
export function decodeState(text: string): unknown {
  return JSON.parse(text, (_key, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === "$u64") {
      const h = o["$u64"];
      if (typeof h !== "string" || !/^[0-9a-f]{1,32}$/.test(h)) throw new SyntaxError(`bad $u64 value ${JSON.stringify(h)}`);
      return BigInt(`0x${h}`);
    }
    if (keys.length === 1 && keys[0] === "$b64") {
      const b = o["$b64"];
      if (typeof b !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(b)) throw new SyntaxError("bad $b64 value");
      return new Uint8Array(Buffer.from(b, "base64"));
    }
    return v;
  });
}
