import { describe, expect, it } from "vitest";
import * as api from "./index.js";

describe("public API", () => {
  it("names the pieces the issue asks for", () => {
    for (const name of ["BzImage", "Elf", "BootParams", "Cmdline", "LoaderError", "loadLinux", "planLinuxBoot", "ramRegions"] as const) {
      expect(typeof api[name], name).toBe("function");
    }
    expect(typeof api.acpi.buildAcpiTables).toBe("function");
    expect(typeof api.acpi.aml.device).toBe("function");
    expect(typeof api.mptable.build).toBe("function");
    expect(typeof api.e820.build).toBe("function");
    expect(typeof api.cpuState.longMode).toBe("function");
    expect(typeof api.cpuState.pvh).toBe("function");
    expect(typeof api.pvh.buildStartInfo).toBe("function");
    expect(api.pvh.XEN_HVM_START_MAGIC).toBe(0x336ec578);
    expect(api.layout.zeroPage).toBe(0x7000);
  });
});
