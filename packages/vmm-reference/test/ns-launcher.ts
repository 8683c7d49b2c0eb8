import type { NetNamespace } from "@ts-vmm/test-utils/node";
import type { VmmLauncher } from "@ts-vmm/test-guests";

/**
 * A launcher whose VMM process runs inside a network namespace: `ip netns exec`
 * enters it and execs the VMM (same pid, same process group, so the harness's
 * kill reaches it), and which provides `net` (the test puts the tap there).
 * Process plans only.
 */
export function inNamespace(base: VmmLauncher, ns: NetNamespace): VmmLauncher {
  return {
    ...base,
    provides: base.provides.includes("net") ? base.provides : [...base.provides, "net"],
    async plan(spec) {
      const p = await base.plan(spec);
      if (p.kind !== "process") throw new Error(`${base.name}: only a process plan can run in a network namespace`);
      const [file, ...prefix] = ns.execPrefix;
      return { ...p, file: file!, args: [...prefix, p.file, ...p.args] };
    },
  };
}
