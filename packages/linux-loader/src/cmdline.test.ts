import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Cmdline } from "./cmdline.js";
import { LoaderError } from "./error.js";

describe("Cmdline", () => {
  it("renders flags and key=value, quoting values with spaces", () => {
    const c = new Cmdline(2047).add("console", "ttyS0").add("quiet").add("dyndbg", "file foo.c +p").add("empty", "");
    expect(c.toString()).toBe('console=ttyS0 quiet dyndbg="file foo.c +p" empty=""');
    expect(c.toBytes().at(-1)).toBe(0);
    expect(c.toBytes().byteLength).toBe(c.toString().length + 1);
  });

  it("formats virtio_mmio.device entries as virtio_mmio.c parses them", () => {
    const c = new Cmdline(2047).addVirtioMmioDevice({ size: 0x1000, addr: 0xd0000000, irq: 5 }).addVirtioMmioDevice({ size: 0x200, addr: 0xd0001000, irq: 6, id: 3 });
    expect(c.toString()).toBe("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=512@0xd0001000:6:3");
    expect(() => c.addVirtioMmioDevice({ size: 0, addr: 0, irq: 1 })).toThrow(LoaderError);
    expect(() => c.addVirtioMmioDevice({ size: 4096, addr: -1, irq: 1 })).toThrow(LoaderError);
  });

  it("set replaces every occurrence in place; add keeps repeats; merge lets the other line win", () => {
    const c = Cmdline.parse("a=1 b=2 a=3 c", 2047);
    c.set("a", "9");
    expect(c.toString()).toBe("a=9 b=2 c");
    c.add("b", "5");
    expect(c.get("b")).toBe("5");
    c.merge(Cmdline.parse("b=7 d -- single", 2047));
    expect(c.toString()).toBe("a=9 c b=7 d -- single");
    expect(c.remove("c").get("c")).toBeUndefined();
    expect(c.get("d")).toBe("");
  });

  it("parses quotes and init arguments", () => {
    const c = Cmdline.parse('  root=/dev/vda  x="a b"  -- -s 2 ', 2047);
    expect(c.entries).toEqual([{ key: "root", value: "/dev/vda" }, { key: "x", value: "a b" }]);
    expect(c.toString()).toBe('root=/dev/vda x="a b" -- -s 2');
  });

  it("refuses NUL, control characters, quotes in values and bad keys", () => {
    const codes = [
      () => new Cmdline(100).add("a", "x\0y"),
      () => new Cmdline(100).add("a\n"),
      () => new Cmdline(100).add("a", 'x"y'),
      () => new Cmdline(100).add("a=b"),
      () => new Cmdline(100).add(""),
      () => new Cmdline(100).add("a", "é"),
      () => Cmdline.parse('a="b', 100),
      () => new Cmdline(100).addInitArg("two words"),
    ].map((f) => {
      try {
        f();
        return "none";
      } catch (e) {
        return (e as LoaderError).code;
      }
    });
    expect(codes).toEqual(Array(8).fill("CmdlineInvalid"));
  });

  it("enforces the kernel's length limit and stays unchanged when it would be exceeded", () => {
    const c = new Cmdline(10).add("abcd", "efgh");
    expect(c.toString().length).toBe(9);
    expect(() => c.add("x")).toThrow(expect.objectContaining({ code: "CmdlineTooLong" }));
    expect(c.toString()).toBe("abcd=efgh");
    expect(() => Cmdline.parse("x".repeat(2048), 2047)).toThrow(expect.objectContaining({ code: "CmdlineTooLong" }));
    expect(Cmdline.parse("x".repeat(2047), 2047).toString().length).toBe(2047);
  });

  it("round-trips through parse for any valid entries", () => {
    const key = fc.stringMatching(/^[a-z_][a-z0-9_.]{0,8}$/);
    const value = fc.option(fc.stringMatching(/^[ -!#-~]{0,12}$/), { nil: undefined });
    fc.assert(
      fc.property(fc.array(fc.record({ key, value }), { maxLength: 12 }), (entries) => {
        const c = new Cmdline(4096);
        for (const e of entries) c.add(e.key, e.value);
        const back = Cmdline.parse(c.toString(), 4096);
        expect(back.entries.map((e) => [e.key, e.value ?? null])).toEqual(
          entries.map((e) => [e.key, e.value ?? null]),
        );
      }),
      { numRuns: 200 },
    );
  });
});
