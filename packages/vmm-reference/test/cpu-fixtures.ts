// Recorded and constructed CPUID tables (test/fixtures/cpuid/*.json).
import { readFileSync } from "node:fs";
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";

/** One table: the host's CPUID and KVM_GET_SUPPORTED_CPUID, with the kernel and module parameters. */
export interface CpuidFixture {
  readonly name: string;
  readonly source: string;
  readonly kernel: string;
  readonly host: CpuidEntry[];
  readonly kvmSupported: CpuidEntry[];
  readonly moduleParams: Record<string, string>;
}

export const FIXTURE_NAMES = ["this-machine", "tcg-l1-epyc", "zen4-genoa", "sapphire-rapids"] as const;

export function fixture(name: (typeof FIXTURE_NAMES)[number]): CpuidFixture {
  return JSON.parse(readFileSync(new URL(`./fixtures/cpuid/${name}.json`, import.meta.url), "utf8")) as CpuidFixture;
}
