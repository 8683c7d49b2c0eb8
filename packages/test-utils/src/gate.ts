import { describe, it } from "vitest";
import { checkNeeds, type Needs } from "./needs.js";

/**
 * `describe` that runs only when the machine has what the tests need. Where it
 * does not, the group is skipped with the reason printed, or, under CI, fails
 * with that reason.
 */
export function describeWith(needs: Needs, name: string, body: () => void): void {
  const gate = checkNeeds(needs);
  if (gate.run) {
    describe(name, body);
  } else if (gate.mustFail) {
    describe(name, () => {
      it("has what it needs on this machine", () => {
        throw new Error(`${name}: ${gate.reason} (CI=true: refusing to skip)`);
      });
    });
  } else {
    console.warn(`[skipped] ${name}: ${gate.reason}`);
    describe.skip(`${name} (skipped: ${gate.reason})`, body);
  }
}

/** Shorthand for {@link describeWith} with `{ kvm: true }`. */
export function describeKvm(name: string, body: () => void): void {
  describeWith({ kvm: true }, name, body);
}
