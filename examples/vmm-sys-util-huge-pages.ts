// packages/vmm-sys-util/README.md, ts/js code block 3: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { MmapRegion, VmmSysError } from "@ts-vmm/vmm-sys-util";

// Prefaulted 4 KiB-page memory: every page is resident when the call returns.
const warm = MmapRegion.memfd(8 << 20, { populate: true });
// Transparent huge pages on private memory: advised first, then populated.
const thp = MmapRegion.anonymous(8 << 20, { shared: false, madviseHugepage: true, populate: true });
try {
  // 2 MiB hugetlb pages (MFD_HUGE_2MB); needs a pool: echo 4 > /proc/sys/vm/nr_hugepages
  MmapRegion.memfd(8 << 20, { hugetlb: true, hugePageSize: 2 << 20 }).close();
} catch (e) {
  console.log((e as VmmSysError).code); // ENOMEM when the pool is too small: at mmap, never a SIGBUS later
}
warm.close();
thp.close();
