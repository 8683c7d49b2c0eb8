// Assertions on the typed errors the queue throws, shared by the unit tests.
import { expect } from "vitest";
import { VirtqueueError, type VirtqueueErrorCode } from "../src/index.js";

/** Runs `fn`, which must throw a VirtqueueError; returns it. */
export function virtqueueError(fn: () => unknown): VirtqueueError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VirtqueueError);
    return e as VirtqueueError;
  }
  throw new Error("expected a VirtqueueError");
}

/** Runs `fn`, which must throw a VirtqueueError of `code`; returns it. */
export function expectCode(fn: () => unknown, code: VirtqueueErrorCode): VirtqueueError {
  const e = virtqueueError(fn);
  expect(e.code).toBe(code);
  return e;
}

/** The code of the VirtqueueError `fn` throws (any other throw fails the test), or undefined if it returns. */
export function codeOf(fn: () => unknown): VirtqueueErrorCode | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VirtqueueError);
    return (e as VirtqueueError).code;
  }
  return undefined;
}
