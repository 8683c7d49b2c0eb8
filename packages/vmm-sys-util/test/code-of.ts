import { expect } from "vitest";
import { VmmSysError } from "../src/index.js";

/**
 * Runs `fn` and returns the `code` of the VmmSysError it throws, or undefined
 * if it returns. Any other thrown value fails the test.
 */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VmmSysError);
    return (err as VmmSysError).code;
  }
  return undefined;
}
