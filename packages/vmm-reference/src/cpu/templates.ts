// CPU templates: JSON files that say which CPUID bits a VM may see.
import { VmmError } from "../error.js";
import { readSmallFile } from "../small-file.js";
import type { CpuidRegister } from "./cpuid-table.js";
import { featureByName } from "./features.js";
import { PACKAGE_ROOT } from "../package-root.js";

/** A register whose bits a template masks. */
export interface MaskedRegister {
  /** The leaf. */
  readonly function: number;
  /** The subleaf. */
  readonly index: number;
  /** The register. */
  readonly register: CpuidRegister;
}

/**
 * A CPU template (the JSON files under `cpu-templates/`): a ceiling on what
 * the guest sees, applied to KVM's (normalized) table. In every `mask`
 * register only the bits of the listed `features` survive; registers not
 * listed pass through. XSAVE components are kept only within `xcr0Mask` and
 * `xssMask`, and only when the feature that uses them is exposed. A template
 * never adds a bit KVM does not support.
 */
export interface CpuTemplate {
  /** Its name (`baseline`, `host`). */
  readonly name: string;
  /** One paragraph for humans. */
  readonly description: string;
  /** Features kept in the masked registers. */
  readonly features: readonly string[];
  /** Registers where only `features` survive. */
  readonly mask: readonly MaskedRegister[];
  /** XCR0 components (CPUID.0xD.0:EAX) the template allows at most. */
  readonly xcr0Mask: number;
  /** IA32_XSS components (CPUID.0xD.1:ECX) the template allows at most. */
  readonly xssMask: number;
}

/** The names of the templates shipped with the package. */
export const BUILTIN_CPU_TEMPLATES = ["baseline", "host"] as const;

const REGS = new Set(["eax", "ebx", "ecx", "edx"]);

function u32(v: unknown, what: string, where: string): number {
  const n = typeof v === "string" && /^0x[0-9a-f]{1,8}$/i.test(v) ? Number.parseInt(v.slice(2), 16) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new VmmError("InvalidConfig", `${where}: ${what} must be a 32-bit unsigned number (or "0x…"), got ${JSON.stringify(v)}`);
  }
  return n;
}

/**
 * Checks a parsed JSON value and returns it as a {@link CpuTemplate}.
 * @throws {@link VmmError} `InvalidConfig` naming the first bad field.
 */
export function parseCpuTemplate(json: unknown, where = "CPU template"): CpuTemplate {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new VmmError("InvalidConfig", `${where} must be a JSON object`);
  const o = json as Record<string, unknown>;
  if (typeof o["name"] !== "string" || o["name"] === "") throw new VmmError("InvalidConfig", `${where}: "name" must be a non-empty string`);
  const features = o["features"] ?? [];
  if (!Array.isArray(features)) throw new VmmError("InvalidConfig", `${where}: "features" must be an array of feature names`);
  for (const n of features) {
    const feat = typeof n === "string" ? featureByName(n) : undefined;
    if (!feat || feat.kind !== "cpuid") throw new VmmError("InvalidConfig", `${where}: unknown CPUID feature ${JSON.stringify(n)} in "features" (ts-vmm cpu-features --all lists them)`);
  }
  const mask = o["mask"] ?? [];
  if (!Array.isArray(mask)) throw new VmmError("InvalidConfig", `${where}: "mask" must be an array of {function, index, register}`);
  const regs = mask.map((m: unknown, i): MaskedRegister => {
    const r = (typeof m === "object" && m !== null ? m : {}) as Record<string, unknown>;
    if (typeof r["register"] !== "string" || !REGS.has(r["register"])) throw new VmmError("InvalidConfig", `${where}: mask[${i}].register must be eax, ebx, ecx or edx`);
    return { function: u32(r["function"], `mask[${i}].function`, where), index: u32(r["index"] ?? 0, `mask[${i}].index`, where), register: r["register"] as CpuidRegister };
  });
  const xs = (o["xsave"] ?? {}) as Record<string, unknown>;
  return {
    name: o["name"],
    description: typeof o["description"] === "string" ? o["description"] : "",
    features: features as string[],
    mask: regs,
    xcr0Mask: u32(xs["xcr0Mask"] ?? 0xffff_ffff, "xsave.xcr0Mask", where),
    xssMask: u32(xs["xssMask"] ?? 0xffff_ffff, "xsave.xssMask", where),
  };
}

/**
 * Loads a template: a built-in name (`baseline`, `host`) or the path of a JSON
 * file (anything containing `/` or ending in `.json`).
 * @throws {@link VmmError} `InvalidConfig` for an unknown name or a bad file,
 * `FileNotReadable` if the file cannot be read.
 */
export function loadCpuTemplate(nameOrPath: string): CpuTemplate {
  const isPath = nameOrPath.includes("/") || nameOrPath.endsWith(".json");
  if (!isPath && !(BUILTIN_CPU_TEMPLATES as readonly string[]).includes(nameOrPath)) {
    throw new VmmError("InvalidConfig", `unknown CPU template ${JSON.stringify(nameOrPath)}: use ${BUILTIN_CPU_TEMPLATES.join(" or ")}, or the path of a JSON template`);
  }
  // src/cpu/ and dist/cpu/ are both two levels below the package root.
  const file = isPath ? nameOrPath : new URL(`cpu-templates/${nameOrPath}.json`, PACKAGE_ROOT);
  let text: string;
  try {
    text = readSmallFile(file);
  } catch (e) {
    throw new VmmError("FileNotReadable", `cannot read the CPU template ${String(nameOrPath)}: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new VmmError("InvalidConfig", `the CPU template ${nameOrPath} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  return parseCpuTemplate(json, `CPU template ${nameOrPath}`);
}
