// Type tests for the exit union (checked by `pnpm run typecheck`).
import { expectTypeOf } from "vitest";
import type { VcpuExit, VcpuExitKind } from "./exits.js";

declare const e: VcpuExit;

expectTypeOf<VcpuExitKind>().toEqualTypeOf<
  | "IoOut" | "IoIn" | "MmioRead" | "MmioWrite" | "Hlt" | "Shutdown" | "IrqWindowOpen" | "Intr" | "DirtyRingFull"
  | "FailEntry" | "Exception" | "InternalError" | "SystemEvent" | "IoapicEoi" | "Hypercall" | "X86Rdmsr" | "X86Wrmsr"
  | "Debug" | "MemoryFault" | "Unknown"
>();

if (e.kind === "IoIn") {
  expectTypeOf(e.data).toEqualTypeOf<Uint8Array>();
  expectTypeOf(e.port).toEqualTypeOf<number>();
}
if (e.kind === "MmioWrite") expectTypeOf(e.address).toEqualTypeOf<number>();
if (e.kind === "MemoryFault") expectTypeOf(e.gpa).toEqualTypeOf<number>();
if (e.kind === "Unknown") expectTypeOf(e.reason).toEqualTypeOf<number>();
if (e.kind === "Hlt") {
  // @ts-expect-error: Hlt carries no data
  void e.data;
}

// A switch over every kind is exhaustive.
function handle(x: VcpuExit): string {
  switch (x.kind) {
    case "IoOut": case "IoIn": case "MmioRead": case "MmioWrite": case "Hlt": case "Shutdown":
    case "IrqWindowOpen": case "Intr": case "DirtyRingFull": case "FailEntry": case "Exception":
    case "InternalError": case "SystemEvent": case "IoapicEoi": case "Hypercall": case "X86Rdmsr":
    case "X86Wrmsr": case "Debug": case "MemoryFault": case "Unknown":
      return x.kind;
    default: {
      const never: never = x;
      return never;
    }
  }
}
void handle;
