import { describe, expect, it } from "vitest";
import { VmmError } from "../error.js";
import { checkMemoryOptions, formatMemorySpec, memorySpecFromJson, parseMemorySize, parseMemorySpec } from "./memory-config.js";
import { machineConfigBody, parseMachineConfig } from "./machine-config.js";

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VmmError);
    expect((e as VmmError).code).toBe("InvalidConfig");
    const m = (e as VmmError).message;
    expect(m.split("\n")).toHaveLength(1);
    return m;
  }
  throw new Error("did not throw");
}

describe("SIZE", () => {
  it.each([
    ["64", 64], ["512M", 512], ["512m", 512], ["512MiB", 512], ["512MB", 512], ["2G", 2048], ["2g", 2048], ["2GiB", 2048],
    ["1T", 1048576], ["4096K", 4], ["2", 2], [" 64 ", 64],
  ])("%j is %d MiB", (text, mib) => {
    expect(parseMemorySize("--memory", text)).toBe(mib);
  });
  it.each(["lots", "", "1.5G", "1536K", "0", "1", "1M", "2T", "-64", "0x40", "64 M B", "64Q", "1e3"])("%j is refused in one sentence that says which units work", (text) => {
    expect(message(() => parseMemorySize("--memory", text))).toBe(
      `--memory must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got ${JSON.stringify(text)}`,
    );
  });
});

describe("--memory SIZE,options", () => {
  it("reads every option", () => {
    expect(parseMemorySpec("--memory", "1G,backend=guest_memfd,prefault=on")).toEqual({ memMiB: 1024, memory: { backend: { kind: "guest_memfd" }, prefault: true } });
    expect(parseMemorySpec("--memory", "64M,hugepages=2m,shared=off")).toEqual({ memMiB: 64, memory: { hugePages: "2M", shared: false } });
    expect(parseMemorySpec("--memory", "2G,hugepages=1G")).toEqual({ memMiB: 2048, memory: { hugePages: "1G" } });
    expect(parseMemorySpec("--memory", "64,hugepages=thp,backend=memfd")).toEqual({ memMiB: 64, memory: { hugePages: "thp", backend: { kind: "memfd" } } });
    expect(parseMemorySpec("--memory", "64M,backend=file:/var/vm/ram.img,shared=on")).toEqual({ memMiB: 64, memory: { backend: { kind: "file", path: "/var/vm/ram.img" }, shared: true } });
    expect(parseMemorySpec("--memory", "64M,backend=file:ram.img", "/srv/vm").memory.backend).toEqual({ kind: "file", path: "/srv/vm/ram.img" });
    expect(parseMemorySpec("--memory", "64")).toEqual({ memMiB: 64, memory: {} });
  });
  it.each([
    ["64M,backend=disk", '--memory: backend must be memfd, guest_memfd or file:PATH, got "disk"'],
    ["64M,backend=file:", '--memory: backend must be memfd, guest_memfd or file:PATH, got "file:"'],
    ["64M,hugepages=4M", '--memory: hugepages must be 2M, 1G, thp or none, got "4M"'],
    ["64M,shared=maybe", '--memory: shared must be on or off, got "maybe"'],
    ["64M,prefault", '--memory: prefault must be on or off, got ""'],
    ["64M,size=2", '--memory: unknown option "size" after the size (known: backend, hugepages, shared, prefault; a file path cannot contain a comma)'],
    ["64M,backend=file:/a,b", '--memory: unknown option "b" after the size (known: backend, hugepages, shared, prefault; a file path cannot contain a comma)'],
    ["64M,shared=on,shared=off", "--memory: shared is given twice"],
    ["lots,backend=memfd", '--memory must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got "lots"'],
  ])("%j → %s", (text, msg) => {
    expect(message(() => parseMemorySpec("--memory", text))).toBe(msg);
  });
  it("formats back to a string that parses to the same spec", () => {
    for (const t of ["64M", "1024M,backend=guest_memfd,prefault=on", "64M,backend=file:/x/y,shared=off", "2048M,hugepages=1G", "64M,hugepages=thp,shared=on"]) {
      const spec = parseMemorySpec("--memory", t);
      expect(parseMemorySpec("--memory", formatMemorySpec(spec))).toEqual(spec);
    }
    expect(message(() => formatMemorySpec({ memMiB: 64, memory: { backend: { kind: "file", path: "/a,b" } } }))).toContain("contains a comma");
  });
});

describe("the JSON config's memory", () => {
  it("takes a number, a string or an object; relative paths resolve against the config's directory", () => {
    expect(memorySpecFromJson("memory", 128, "/cfg")).toEqual({ memMiB: 128, memory: {} });
    expect(memorySpecFromJson("memory", "1G,backend=file:ram", "/cfg")).toEqual({ memMiB: 1024, memory: { backend: { kind: "file", path: "/cfg/ram" } } });
    expect(memorySpecFromJson("memory", { size: "2G", backend: { file: "ram" }, shared: false, prefault: true }, "/cfg")).toEqual({
      memMiB: 2048, memory: { backend: { kind: "file", path: "/cfg/ram" }, shared: false, prefault: true },
    });
    expect(memorySpecFromJson("memory", { size: 64, backend: "guest_memfd", hugepages: "none" }, "/cfg")).toEqual({ memMiB: 64, memory: { backend: { kind: "guest_memfd" }, hugePages: "none" } });
  });
  it.each([
    [{ size: "1G", huge_pages: "2M" }, 'memory: unknown key "huge_pages" (known: size, backend, hugepages, shared, prefault)'],
    [{ backend: "memfd" }, "memory.size must be a number of MiB or a size string like \"512M\", got undefined"],
    [{ size: "1G", shared: "yes" }, 'memory.shared must be true or false, got "yes"'],
    [{ size: "1G", backend: 3 }, 'memory.backend must be "memfd", "guest_memfd", "file:PATH" or { "file": PATH }, got 3'],
    [{ size: "1G", hugepages: 2 }, 'memory.hugepages must be "2M", "1G", "thp" or "none", got 2'],
    [[64], "memory must be a number of MiB, a string like \"1G,hugepages=2M\" or an object, got [64]"],
  ])("%j → %s", (v, msg) => {
    expect(message(() => memorySpecFromJson("memory", v, "/cfg"))).toBe(msg);
  });
});

describe("machine configuration (Firecracker's shape)", () => {
  it("reads Firecracker's fields and ours", () => {
    expect(parseMachineConfig({ vcpu_count: 2, mem_size_mib: 1024, smt: false, track_dirty_pages: false, huge_pages: "2M" })).toEqual({ vcpus: 2, memMiB: 1024, memory: { hugePages: "2M" } });
    expect(parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, huge_pages: "None" })).toEqual({ vcpus: 1, memMiB: 128, memory: { hugePages: "none" } });
    expect(parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, mem_backend: "guest_memfd", mem_prefault: true })).toEqual({ vcpus: 1, memMiB: 128, memory: { backend: { kind: "guest_memfd" }, prefault: true } });
    expect(parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, mem_backend: "file", mem_file_path: "/m", mem_shared: false, huge_pages: "THP" }).memory).toEqual({
      backend: { kind: "file", path: "/m" }, hugePages: "thp", shared: false,
    });
  });
  it("writes a body that reads back to the same configuration", () => {
    for (const body of [
      { vcpu_count: 2, mem_size_mib: 1024, huge_pages: "2M" },
      { vcpu_count: 1, mem_size_mib: 64, mem_backend: "file", mem_file_path: "/m", mem_shared: true, mem_prefault: true },
    ]) {
      const c = parseMachineConfig(body);
      const back = parseMachineConfig(machineConfigBody(c));
      expect(back.vcpus).toBe(c.vcpus);
      expect(back.memMiB).toBe(c.memMiB);
      expect({ hugePages: "none", backend: { kind: "memfd" }, prefault: false, ...c.memory }).toEqual({ hugePages: "none", backend: { kind: "memfd" }, prefault: false, ...back.memory });
    }
    expect(machineConfigBody({ vcpus: 1, memMiB: 64, memory: {} })).toEqual({ vcpu_count: 1, mem_size_mib: 64, smt: false, track_dirty_pages: false, huge_pages: "None", mem_backend: "memfd", mem_prefault: false });
  });
  it.each([
    [{ vcpu_count: 1 }, "machine-config: mem_size_mib must be a whole number from 2 to 1048576, got undefined"],
    [{ vcpu_count: 0, mem_size_mib: 64 }, "machine-config: vcpu_count must be a whole number from 1 to 1024, got 0"],
    [{ vcpu_count: 1, mem_size_mib: 64, huge_pages: "4M" }, 'machine-config: huge_pages must be "None", "2M", "1G" or "THP", got "4M"'],
    [{ vcpu_count: 1, mem_size_mib: 64, smt: true }, "machine-config: smt: true is not supported (every vCPU is a core of its own)"],
    [{ vcpu_count: 1, mem_size_mib: 64, track_dirty_pages: true }, "machine-config: track_dirty_pages: true is not supported yet"],
    [{ vcpu_count: 1, mem_size_mib: 64, mem_backend: "file" }, 'machine-config: mem_backend "file" needs mem_file_path'],
    [{ vcpu_count: 1, mem_size_mib: 64, mem_file_path: "/m" }, 'machine-config: mem_file_path needs mem_backend "file"'],
    [{ vcpu_count: 1, mem_size_mib: 64, mem_backend: "file", mem_file_path: "m" }, 'machine-config: mem_file_path must be an absolute path, got "m"'],
    [{ vcpu_count: 1, mem_size_mib: 64, cpu_template: "T2" }, 'machine-config: unknown field "cpu_template" (known: vcpu_count, mem_size_mib, smt, track_dirty_pages, huge_pages, mem_backend, mem_file_path, mem_shared, mem_prefault)'],
    ["x", 'machine-config: must be a JSON object, got "x"'],
  ])("%j → %s", (body, msg) => {
    expect(message(() => parseMachineConfig(body))).toBe(msg);
  });
});

describe("options from code", () => {
  it("checks their shape", () => {
    expect(checkMemoryOptions(undefined)).toEqual({});
    expect(checkMemoryOptions({ backend: { kind: "file", path: "/m" }, hugePages: "none", shared: true, prefault: false })).toBeTruthy();
    expect(message(() => checkMemoryOptions({ backend: { kind: "file", path: "rel" } }))).toContain("memory.backend must be");
    expect(message(() => checkMemoryOptions({ backend: "memfd" }))).toContain("memory.backend must be");
    expect(message(() => checkMemoryOptions({ hugePages: "2MB" }))).toBe('memory.hugePages must be "none", "2M", "1G" or "thp", got "2MB"');
    expect(message(() => checkMemoryOptions({ prefault: 1 }))).toBe("memory.prefault must be a boolean, got 1");
    expect(message(() => checkMemoryOptions({ huge_pages: "2M" }))).toBe('memory: unknown field "huge_pages"');
  });
});
