import { Kvm } from "@ts-vmm/kvm-ioctls";
import type { HostFeature } from "@ts-vmm/test-utils";
import { GMEM_INIT_SHARED, GMEM_MMAP, readMemoryHostFacts } from "../src/machine/memory-host.js";

/**
 * A guest_memfd the VMM can map (backend=guest_memfd): KVM_CAP_GUEST_MEMFD on a default VM
 * with GUEST_MEMFD_FLAG_MMAP and GUEST_MEMFD_FLAG_INIT_SHARED in KVM_CAP_GUEST_MEMFD_FLAGS.
 * A Linux 6.18+ host KVM built with guest_memfd has it (this workplace's machines did until
 * their kernel 6.18.44-fc-v1252, 2026-12-04, which answers KVM_CAP_GUEST_MEMFD with 0).
 */
export const MAPPABLE_GUEST_MEMFD: HostFeature = {
  name: "KVM_CAP_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP and GUEST_MEMFD_FLAG_INIT_SHARED (a Linux 6.18+ host KVM built with guest_memfd)",
  present: () => {
    const kvm = new Kvm();
    try {
      const vm = kvm.createVm();
      try {
        // The VMM's own reading of the VM's capabilities, the one its memory planner decides on.
        const facts = readMemoryHostFacts(vm);
        const want = GMEM_MMAP | GMEM_INIT_SHARED;
        return facts.guestMemfd && (facts.guestMemfdFlags & want) === want;
      } finally {
        vm.close();
      }
    } finally {
      kvm.close();
    }
  },
};
