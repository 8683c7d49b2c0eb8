// Network namespaces for tests: a private namespace per test group, created
// with `ip netns add` and deleted with everything in it (taps included).
import { execFileSync, spawnSync } from "node:child_process";

let counter = 0;

/** A name unique to this process, at most `max` bytes: `<prefix><pid><n>`. */
export function uniqueIfName(prefix: string, max = 15): string {
  const name = `${prefix}${process.pid % 100000}${(counter++).toString(36)}`;
  if (name.length > max) throw new Error(`interface name ${name} is longer than ${max} bytes`);
  return name;
}

/**
 * A network namespace the test owns (`ip netns add`), with loopback up and IPv6
 * off (so the kernel sends no router solicitations or MLD reports into a test's
 * tap). `close()` deletes it and every interface in it.
 */
export class NetNamespace {
  /** The namespace name (`ip netns exec <name> …`). */
  readonly name: string;
  #closed = false;

  private constructor(name: string) {
    this.name = name;
  }

  /** Creates `tsvmm-<tag>-<pid>-<n>`. Needs root and `ip`. */
  static create(tag: string): NetNamespace {
    const name = `tsvmm-${tag}-${process.pid}-${counter++}`;
    execFileSync("ip", ["netns", "add", name]);
    const ns = new NetNamespace(name);
    try {
      ns.ip("link", "set", "lo", "up");
      ns.exec("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1");
    } catch (e) {
      ns.close();
      throw e;
    }
    return ns;
  }

  /** Runs `ip -n <name> …` and returns its stdout. @throws if it fails. */
  ip(...args: string[]): string {
    return execFileSync("ip", ["-n", this.name, ...args], { encoding: "utf8" });
  }

  /** Runs a program inside the namespace and returns its stdout. @throws if it fails. */
  exec(file: string, ...args: string[]): string {
    return execFileSync("ip", ["netns", "exec", this.name, file, ...args], { encoding: "utf8" });
  }

  /** The argv prefix that runs a program inside the namespace. */
  get execPrefix(): string[] {
    return ["ip", "netns", "exec", this.name];
  }

  /**
   * Moves an interface of this process's namespace (a tap whose fd the test
   * holds) into this one, gives it `cidr` and sets it up.
   */
  adopt(ifname: string, cidr = "10.0.2.2/24"): void {
    execFileSync("ip", ["link", "set", ifname, "netns", this.name]);
    this.ip("addr", "add", cidr, "dev", ifname);
    this.ip("link", "set", ifname, "up");
  }

  /** Creates a persistent tap inside the namespace (for a VMM run in it to attach to), with `cidr`, up. */
  addTap(ifname: string, cidr = "10.0.2.2/24"): void {
    this.ip("tuntap", "add", "dev", ifname, "mode", "tap", "vnet_hdr");
    this.ip("addr", "add", cidr, "dev", ifname);
    this.ip("link", "set", ifname, "up");
  }

  /** `ip -s -j link show dev <ifname>` statistics: rx/tx packets and drops as the kernel counts them. */
  linkStats(ifname: string): { rxPackets: number; txPackets: number; rxDropped: number; txDropped: number } {
    const j = JSON.parse(this.ip("-s", "-j", "link", "show", "dev", ifname)) as {
      stats64: { rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } };
    }[];
    const s = j[0]!.stats64;
    return { rxPackets: s.rx.packets, txPackets: s.tx.packets, rxDropped: s.rx.dropped, txDropped: s.tx.dropped };
  }

  /** Deletes the namespace and everything in it. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    spawnSync("ip", ["netns", "del", this.name]);
  }
}
