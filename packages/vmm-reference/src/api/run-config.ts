// `ts-vmm run --api-sock`: the VM is started from flags, and the API reports
// that configuration (GET /machine-config, GET /vm/config) and addresses its
// devices (PATCH /drives/disk0, /network-interfaces/net0) by the ids given
// here: `disk<i>` and `net<i>` in flag order.
import type { RunArgs } from "../cli-args.js";
import { PrebootConfig } from "./preboot.js";

const HUGE = { none: "None", thp: "Transparent", "2M": "2M", "1G": "1G" } as const;

/** The API's view of a VM started from `ts-vmm run` flags, and each virtio device's API id by index. */
export function configOfRunArgs(a: RunArgs): { config: PrebootConfig; deviceIds: string[] } {
  const c = new PrebootConfig();
  const backend = a.memory.backend;
  c.setMachineConfig({
    vcpu_count: a.vcpus,
    mem_size_mib: a.memMiB,
    ...(a.cpuTemplate === "baseline" || a.cpuTemplate === "host" ? { cpu_template: a.cpuTemplate } : {}),
    ...(a.memory.hugePages !== undefined ? { huge_pages: HUGE[a.memory.hugePages] } : {}),
    ...(backend !== undefined ? { mem_backend: backend.kind } : {}),
    ...(backend?.kind === "file" ? { mem_file_path: backend.path } : {}),
    ...(a.memory.shared !== undefined ? { mem_shared: a.memory.shared } : {}),
    ...(a.memory.prefault !== undefined ? { mem_prefault: a.memory.prefault } : {}),
  }, false);
  // A restored VM (`run --restore`) has no boot source: it continues from the snapshot.
  if (a.restore === undefined) c.setBootSource({ kernel_image_path: a.kernel, ...(a.cmdline !== undefined ? { boot_args: a.cmdline } : {}), ...(a.initrd !== undefined ? { initrd_path: a.initrd } : {}) });
  const ids: string[] = [];
  let disks = 0;
  let nets = 0;
  for (const d of a.virtio) {
    switch (d.kind) {
      case "blk": {
        const id = `disk${disks++}`;
        c.putDrive({ drive_id: id, is_root_device: false, is_read_only: d.readOnly ?? false, path_on_host: d.path });
        ids.push(`drive:${id}`);
        break;
      }
      case "net": {
        const id = `net${nets++}`;
        c.putNet({ iface_id: id, host_dev_name: d.tap, ...(d.mac !== undefined ? { guest_mac: d.mac } : {}) });
        ids.push(`net:${id}`);
        break;
      }
      case "vsock":
        c.setVsock({ guest_cid: d.cid, uds_path: d.udsPath });
        ids.push("vsock");
        break;
      case "rng":
        c.setEntropy({});
        ids.push("entropy");
        break;
      case "balloon":
        c.setBalloon({
          amount_mib: d.amountMib ?? 0,
          deflate_on_oom: d.deflateOnOom ?? false,
          stats_polling_interval_s: d.statsIntervalS ?? 0,
          free_page_reporting: d.freePageReporting ?? false,
        });
        ids.push("balloon");
        break;
      default:
        ids.push(d.kind);
    }
  }
  return { config: c, deviceIds: ids };
}
