// Argument checks made in TypeScript before anything reaches the addon. Each throws
// VmmSysError("InvalidArgument") with a message naming the argument.
import { invalid } from "./errors.js";

/** @internal Throws unless `v` is an integer in [min, max]. */
export function intArg(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw invalid(`${name} must be an integer in [${min}, ${max}], got ${describe(v)}`);
  }
  return v;
}

/** @internal Throws unless `v` is a file descriptor number (a non-negative int32). */
export function fdArg(v: unknown, name = "fd"): number {
  return intArg(name, v, 0, 0x7fff_ffff);
}

/** @internal Throws unless `v` is a positive safe integer (a length in bytes). */
export function sizeArg(name: string, v: unknown): number {
  return intArg(name, v, 1, Number.MAX_SAFE_INTEGER);
}

/** @internal Throws unless `v` is a non-negative safe integer (an offset in bytes). */
export function offsetArg(name: string, v: unknown): number {
  return intArg(name, v, 0, Number.MAX_SAFE_INTEGER);
}

/** @internal Throws unless `v` is undefined or an object (an options bag). */
export function optionsArg<T extends object>(name: string, v: T | undefined): Partial<T> {
  if (v === undefined) return {};
  if (typeof v !== "object" || v === null) throw invalid(`${name} must be an object, got ${describe(v)}`);
  return v;
}

/** @internal Throws unless `v` is undefined or a boolean; returns `v` or `dflt`. */
export function boolOpt(name: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") throw invalid(`${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/** @internal */
export function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "number" || typeof v === "boolean" || v === undefined || v === null) return String(v);
  return typeof v;
}
