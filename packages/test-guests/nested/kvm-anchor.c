/*
 * kvm-anchor: holds one idle VM (in-kernel irqchip, one vCPU that never
 * runs) open for the whole life of the nested tier's L1.
 *
 * Why: creating the first VM and destroying the last one flips static keys
 * in the L1 kernel (preempt notifiers, used in __schedule; KVM's
 * apic_sw_disabled, used all over the LAPIC code), and every flip patches
 * kernel text through int3 while the other L1 vCPU runs. QEMU 7.2's
 * multi-threaded TCG sometimes keeps executing the old translation there:
 * we saw L1 oops in __schedule and in apic_has_pending_timer [kvm], and L2
 * vCPUs resuming at L1 addresses. With this VM open from before the other
 * L1 CPUs come online until poweroff, both keys stay set and no guest run
 * patches code.
 *
 * Prints "kvm-anchor ready" when the VM exists, then sleeps until killed.
 * Exits 1 with a message if any ioctl fails.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what) {
  perror(what);
  return 1;
}

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return fail("kvm-anchor: open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return fail("kvm-anchor: KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) return fail("kvm-anchor: KVM_CREATE_IRQCHIP");
  if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0) return fail("kvm-anchor: KVM_CREATE_VCPU");
  printf("kvm-anchor ready\n");
  fflush(stdout);
  for (;;) pause();
}
