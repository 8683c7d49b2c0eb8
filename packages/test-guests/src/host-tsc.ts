import { Kvm } from "@ts-vmm/kvm-ioctls";

/**
 * The TSC rate KVM gives a new vCPU (KVM_GET_TSC_KHZ of a scratch VM's vCPU 0),
 * in Hz: what benches convert a guest's TSC-timed figures with. Opens and
 * closes /dev/kvm, a VM and a vCPU.
 * @throws KvmError where /dev/kvm or KVM_GET_TSC_KHZ is not available.
 */
export function kvmTscHz(): number {
  const kvm = new Kvm();
  try {
    const vm = kvm.createVm();
    try {
      const vcpu = vm.createVcpu(0);
      try {
        return vcpu.getTscKhz() * 1000;
      } finally {
        vcpu.close();
      }
    } finally {
      vm.close();
    }
  } finally {
    kvm.close();
  }
}
