#!/usr/bin/env node
// Writes src/generated/kvm-constants.ts: KVM ioctl request numbers, capability
// numbers, exit reasons and flags for x86-64, from the table below.
//
// Sources of the facts in the table (numbers, not code):
//  - Linux include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h as of
//    linux-next mid 2025 (the KVM_SET_USER_MEMORY_REGION2, guest_memfd, memory
//    fault and capability numbers up to 243), and the kvmtool header sync to
//    v6.19-rc6 (kvm list, 2026-01-23: KVM_CAP_GUEST_MEMFD_FLAGS 244,
//    GUEST_MEMFD_FLAG_MMAP / INIT_SHARED, KVM_X86_REG_TYPE_MSR / _KVM and
//    KVM_REG_GUEST_SSP, which entered in Linux 6.18);
//  - /usr/include/linux/kvm.h (linux-libc-dev 6.1) for everything older.
//
// Ioctl numbers are computed here with the asm-generic _IOC encoding
// (dir << 30 | size << 16 | type << 8 | nr) from the direction, number and
// struct size that the header names, so the table states what the header says.
//
//   node scripts/gen-constants.mjs           regenerate the file
//   node scripts/gen-constants.mjs --check   compile a C program against the
//        installed headers and compare every constant they define (newer ones
//        that the installed headers lack are listed as "not in installed headers")
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join, dirname } from "node:path";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "generated", "kvm-constants.ts");

// struct sizes on x86-64 (the layouts in src/layouts/ are checked against the
// installed headers by src/layouts/layouts.test.ts)
const S = {
  kvm_msr_list: 4, kvm_cpuid2: 8, kvm_dirty_log: 16, kvm_userspace_memory_region: 32,
  kvm_userspace_memory_region2: 160, __u64: 8, kvm_irq_level: 8, kvm_irqchip: 520,
  kvm_pit_state: 72, kvm_coalesced_mmio_zone: 16, kvm_irq_routing: 8, kvm_irqfd: 32,
  kvm_pit_config: 64, kvm_ioeventfd: 64, kvm_clock_data: 48, kvm_pit_state2: 112,
  kvm_msi: 32, kvm_create_device: 12, kvm_device_attr: 24, kvm_regs: 144, kvm_sregs: 312,
  kvm_translation: 24, kvm_interrupt: 4, kvm_msrs: 8, kvm_fpu: 416, kvm_lapic_state: 1024,
  kvm_mp_state: 4, kvm_guest_debug: 72, kvm_vcpu_events: 64, kvm_debugregs: 128,
  kvm_enable_cap: 104, kvm_xsave: 4096, kvm_xcrs: 392, kvm_one_reg: 16, kvm_reg_list: 8,
  kvm_sregs2: 320, kvm_create_guest_memfd: 64, kvm_clear_dirty_log: 24,
  kvm_memory_attributes: 32, kvm_pre_fault_memory: 64, kvm_nested_state: 128, kvm_msr_filter: 392,
};

// [name, dir ("" | "R" | "W" | "WR"), nr, struct or null, doc]
const IOCTLS = [
  ["KVM_GET_API_VERSION", "", 0x00, null, "system: API version (12)"],
  ["KVM_CREATE_VM", "", 0x01, null, "system: create a VM, argument is the VM type"],
  ["KVM_GET_MSR_INDEX_LIST", "WR", 0x02, "kvm_msr_list", "system: MSRs saved/restored by KVM"],
  ["KVM_CHECK_EXTENSION", "", 0x03, null, "system or VM: capability query"],
  ["KVM_GET_VCPU_MMAP_SIZE", "", 0x04, null, "system: size of the kvm_run mapping"],
  ["KVM_GET_SUPPORTED_CPUID", "WR", 0x05, "kvm_cpuid2", "system: supported CPUID"],
  ["KVM_GET_EMULATED_CPUID", "WR", 0x09, "kvm_cpuid2", "system: emulated CPUID"],
  ["KVM_GET_MSR_FEATURE_INDEX_LIST", "WR", 0x0a, "kvm_msr_list", "system: feature MSRs"],
  ["KVM_CREATE_VCPU", "", 0x41, null, "VM: create a vCPU, argument is its id"],
  ["KVM_GET_DIRTY_LOG", "W", 0x42, "kvm_dirty_log", "VM: dirty bitmap of a slot"],
  ["KVM_SET_USER_MEMORY_REGION", "W", 0x46, "kvm_userspace_memory_region", "VM: memory slot"],
  ["KVM_SET_TSS_ADDR", "", 0x47, null, "VM: 3-page TSS area (Intel)"],
  ["KVM_SET_IDENTITY_MAP_ADDR", "W", 0x48, "__u64", "VM: identity map page (Intel)"],
  ["KVM_SET_USER_MEMORY_REGION2", "W", 0x49, "kvm_userspace_memory_region2", "VM: memory slot with guest_memfd"],
  ["KVM_CREATE_IRQCHIP", "", 0x60, null, "VM: in-kernel PIC, IOAPIC and LAPICs"],
  ["KVM_IRQ_LINE", "W", 0x61, "kvm_irq_level", "VM: set a GSI level"],
  ["KVM_GET_IRQCHIP", "WR", 0x62, "kvm_irqchip", "VM: read PIC/IOAPIC state"],
  ["KVM_SET_IRQCHIP", "R", 0x63, "kvm_irqchip", "VM: write PIC/IOAPIC state (_IOR in the header)"],
  ["KVM_IRQ_LINE_STATUS", "WR", 0x67, "kvm_irq_level", "VM: set a GSI level, returning status"],
  ["KVM_REGISTER_COALESCED_MMIO", "W", 0x67, "kvm_coalesced_mmio_zone", "VM: add a coalesced zone"],
  ["KVM_UNREGISTER_COALESCED_MMIO", "W", 0x68, "kvm_coalesced_mmio_zone", "VM: remove a coalesced zone"],
  ["KVM_SET_GSI_ROUTING", "W", 0x6a, "kvm_irq_routing", "VM: GSI routing table"],
  ["KVM_REINJECT_CONTROL", "", 0x71, null, "VM: PIT reinjection (arg points to kvm_reinject_control)"],
  ["KVM_SET_BOOT_CPU_ID", "", 0x78, null, "VM: vCPU id of the boot CPU (before any vCPU)"],
  ["KVM_IRQFD", "W", 0x76, "kvm_irqfd", "VM: bind an eventfd to a GSI"],
  ["KVM_CREATE_PIT2", "W", 0x77, "kvm_pit_config", "VM: in-kernel i8254"],
  ["KVM_IOEVENTFD", "W", 0x79, "kvm_ioeventfd", "VM: bind an eventfd to a PIO/MMIO address"],
  ["KVM_SET_CLOCK", "W", 0x7b, "kvm_clock_data", "VM: set kvmclock"],
  ["KVM_GET_CLOCK", "R", 0x7c, "kvm_clock_data", "VM: read kvmclock"],
  ["KVM_GET_PIT2", "R", 0x9f, "kvm_pit_state2", "VM: read PIT state"],
  ["KVM_SET_PIT2", "W", 0xa0, "kvm_pit_state2", "VM: write PIT state"],
  ["KVM_SET_TSC_KHZ", "", 0xa2, null, "vCPU (or VM): set TSC frequency"],
  ["KVM_GET_TSC_KHZ", "", 0xa3, null, "vCPU: TSC frequency"],
  ["KVM_SIGNAL_MSI", "W", 0xa5, "kvm_msi", "VM: inject an MSI"],
  ["KVM_CREATE_DEVICE", "WR", 0xe0, "kvm_create_device", "VM: create a device"],
  ["KVM_SET_DEVICE_ATTR", "W", 0xe1, "kvm_device_attr", "device/VM/vCPU: set attribute"],
  ["KVM_GET_DEVICE_ATTR", "W", 0xe2, "kvm_device_attr", "device/VM/vCPU: get attribute"],
  ["KVM_HAS_DEVICE_ATTR", "W", 0xe3, "kvm_device_attr", "device/VM/vCPU: has attribute"],
  ["KVM_RUN", "", 0x80, null, "vCPU: run until an exit"],
  ["KVM_GET_REGS", "R", 0x81, "kvm_regs", "vCPU: general registers"],
  ["KVM_SET_REGS", "W", 0x82, "kvm_regs", "vCPU: general registers"],
  ["KVM_GET_SREGS", "R", 0x83, "kvm_sregs", "vCPU: special registers"],
  ["KVM_SET_SREGS", "W", 0x84, "kvm_sregs", "vCPU: special registers"],
  ["KVM_TRANSLATE", "WR", 0x85, "kvm_translation", "vCPU: translate a guest virtual address"],
  ["KVM_INTERRUPT", "W", 0x86, "kvm_interrupt", "vCPU: inject an interrupt (no irqchip)"],
  ["KVM_GET_MSRS", "WR", 0x88, "kvm_msrs", "vCPU or system (feature MSRs): read MSRs"],
  ["KVM_SET_MSRS", "W", 0x89, "kvm_msrs", "vCPU: write MSRs"],
  ["KVM_GET_FPU", "R", 0x8c, "kvm_fpu", "vCPU: FPU state"],
  ["KVM_SET_FPU", "W", 0x8d, "kvm_fpu", "vCPU: FPU state"],
  ["KVM_GET_LAPIC", "R", 0x8e, "kvm_lapic_state", "vCPU: local APIC registers"],
  ["KVM_SET_LAPIC", "W", 0x8f, "kvm_lapic_state", "vCPU: local APIC registers"],
  ["KVM_SET_CPUID2", "W", 0x90, "kvm_cpuid2", "vCPU: CPUID table"],
  ["KVM_GET_CPUID2", "WR", 0x91, "kvm_cpuid2", "vCPU: CPUID table"],
  ["KVM_GET_MP_STATE", "R", 0x98, "kvm_mp_state", "vCPU: MP state"],
  ["KVM_SET_MP_STATE", "W", 0x99, "kvm_mp_state", "vCPU: MP state"],
  ["KVM_NMI", "", 0x9a, null, "vCPU: inject an NMI"],
  ["KVM_SET_GUEST_DEBUG", "W", 0x9b, "kvm_guest_debug", "vCPU: single step / breakpoints"],
  ["KVM_GET_VCPU_EVENTS", "R", 0x9f, "kvm_vcpu_events", "vCPU: pending events"],
  ["KVM_SET_VCPU_EVENTS", "W", 0xa0, "kvm_vcpu_events", "vCPU: pending events"],
  ["KVM_GET_DEBUGREGS", "R", 0xa1, "kvm_debugregs", "vCPU: debug registers"],
  ["KVM_SET_DEBUGREGS", "W", 0xa2, "kvm_debugregs", "vCPU: debug registers"],
  ["KVM_ENABLE_CAP", "W", 0xa3, "kvm_enable_cap", "VM or vCPU: enable a capability"],
  ["KVM_GET_XSAVE", "R", 0xa4, "kvm_xsave", "vCPU: XSAVE area (4 KiB)"],
  ["KVM_SET_XSAVE", "W", 0xa5, "kvm_xsave", "vCPU: XSAVE area"],
  ["KVM_GET_XCRS", "R", 0xa6, "kvm_xcrs", "vCPU: extended control registers"],
  ["KVM_SET_XCRS", "W", 0xa7, "kvm_xcrs", "vCPU: extended control registers"],
  ["KVM_GET_ONE_REG", "W", 0xab, "kvm_one_reg", "vCPU: one register by id"],
  ["KVM_SET_ONE_REG", "W", 0xac, "kvm_one_reg", "vCPU: one register by id"],
  ["KVM_KVMCLOCK_CTRL", "", 0xad, null, "vCPU: tell the guest it was paused"],
  ["KVM_GET_REG_LIST", "WR", 0xb0, "kvm_reg_list", "vCPU: ids for ONE_REG"],
  ["KVM_SMI", "", 0xb7, null, "vCPU: inject an SMI"],
  ["KVM_GET_NESTED_STATE", "WR", 0xbe, "kvm_nested_state", "vCPU: nested virtualization state (header + `size` bytes)"],
  ["KVM_SET_NESTED_STATE", "W", 0xbf, "kvm_nested_state", "vCPU: nested virtualization state (header + `size` bytes)"],
  ["KVM_CLEAR_DIRTY_LOG", "WR", 0xc0, "kvm_clear_dirty_log", "VM: clear dirty bits (manual protect)"],
  ["KVM_X86_SET_MSR_FILTER", "W", 0xc6, "kvm_msr_filter", "VM: MSR filter, up to 16 ranges with bitmap pointers"],
  ["KVM_RESET_DIRTY_RINGS", "", 0xc7, null, "VM: reset harvested dirty ring entries"],
  ["KVM_GET_SREGS2", "R", 0xcc, "kvm_sregs2", "vCPU: special registers with PDPTRs"],
  ["KVM_SET_SREGS2", "W", 0xcd, "kvm_sregs2", "vCPU: special registers with PDPTRs"],
  ["KVM_GET_STATS_FD", "", 0xce, null, "VM or vCPU: binary stats fd"],
  ["KVM_GET_XSAVE2", "R", 0xcf, "kvm_xsave", "vCPU: XSAVE area of KVM_CAP_XSAVE2 bytes"],
  ["KVM_SET_MEMORY_ATTRIBUTES", "W", 0xd2, "kvm_memory_attributes", "VM: private/shared attributes"],
  ["KVM_CREATE_GUEST_MEMFD", "WR", 0xd4, "kvm_create_guest_memfd", "VM: create a guest_memfd"],
  ["KVM_PRE_FAULT_MEMORY", "WR", 0xd5, "kvm_pre_fault_memory", "vCPU: pre-fault guest memory"],
];

// [name, value, doc]; values are numbers unless a bigint literal is given
const CAPS = [
  ["IRQCHIP", 0], ["HLT", 1], ["USER_MEMORY", 3], ["SET_TSS_ADDR", 4], ["EXT_CPUID", 7],
  ["CLOCKSOURCE", 8], ["NR_VCPUS", 9], ["NR_MEMSLOTS", 10], ["PIT", 11], ["MP_STATE", 14],
  ["COALESCED_MMIO", 15], ["SYNC_MMU", 16], ["USER_NMI", 22], ["SET_GUEST_DEBUG", 23],
  ["REINJECT_CONTROL", 24], ["IRQ_ROUTING", 25], ["IRQ_INJECT_STATUS", 26], ["MCE", 31],
  ["IRQFD", 32], ["PIT2", 33], ["SET_BOOT_CPU_ID", 34], ["PIT_STATE2", 35], ["IOEVENTFD", 36],
  ["SET_IDENTITY_MAP_ADDR", 37], ["ADJUST_CLOCK", 39], ["INTERNAL_ERROR_DATA", 40],
  ["VCPU_EVENTS", 41], ["INTR_SHADOW", 49], ["DEBUGREGS", 50], ["ENABLE_CAP", 54],
  ["XSAVE", 55], ["XCRS", 56], ["ASYNC_PF", 59], ["TSC_CONTROL", 60], ["GET_TSC_KHZ", 61],
  ["MAX_VCPUS", 66], ["ONE_REG", 70], ["TSC_DEADLINE_TIMER", 72], ["SYNC_REGS", 74],
  ["KVMCLOCK_CTRL", 76], ["SIGNAL_MSI", 77], ["READONLY_MEM", 81], ["IRQFD_RESAMPLE", 82],
  ["DEVICE_CTRL", 89], ["EXT_EMUL_CPUID", 95], ["HYPERV_TIME", 96], ["ENABLE_CAP_VM", 98],
  ["IOEVENTFD_NO_LENGTH", 100], ["VM_ATTRIBUTES", 101], ["CHECK_EXTENSION_VM", 105],
  ["DISABLE_QUIRKS", 116], ["X86_SMM", 117], ["MULTI_ADDRESS_SPACE", 118],
  ["GUEST_DEBUG_HW_BPS", 119], ["GUEST_DEBUG_HW_WPS", 120], ["SPLIT_IRQCHIP", 121],
  ["IOEVENTFD_ANY_LENGTH", 122], ["HYPERV_SYNIC", 123], ["VCPU_ATTRIBUTES", 127],
  ["MAX_VCPU_ID", 128], ["X2APIC_API", 129], ["IMMEDIATE_EXIT", 136],
  ["X86_DISABLE_EXITS", 143], ["GET_MSR_FEATURES", 153], ["NESTED_STATE", 157],
  ["COALESCED_PIO", 162], ["EXCEPTION_PAYLOAD", 164], ["MANUAL_DIRTY_LOG_PROTECT2", 168],
  ["PMU_EVENT_FILTER", 173], ["HALT_POLL", 182], ["X86_USER_SPACE_MSR", 188],
  ["X86_MSR_FILTER", 189], ["ENFORCE_PV_FEATURE_CPUID", 190], ["DIRTY_LOG_RING", 192],
  ["X86_BUS_LOCK_EXIT", 193], ["SET_GUEST_DEBUG2", 195], ["SREGS2", 200],
  ["EXIT_HYPERCALL", 201], ["BINARY_STATS_FD", 203], ["EXIT_ON_EMULATION_FAILURE", 204],
  ["VM_GPA_BITS", 207], ["XSAVE2", 208], ["SYS_ATTRIBUTES", 209], ["PMU_CAPABILITY", 212],
  ["DISABLE_QUIRKS2", 213], ["VM_TSC_CONTROL", 214], ["SYSTEM_EVENT_DATA", 215],
  ["X86_TRIPLE_FAULT_EVENT", 218], ["X86_NOTIFY_VMEXIT", 219], ["VM_DISABLE_NX_HUGE_PAGES", 220],
  ["DIRTY_LOG_RING_ACQ_REL", 223], ["DIRTY_LOG_RING_WITH_BITMAP", 225],
  ["USER_MEMORY2", 231], ["MEMORY_FAULT_INFO", 232], ["MEMORY_ATTRIBUTES", 233],
  ["GUEST_MEMFD", 234], ["VM_TYPES", 235], ["PRE_FAULT_MEMORY", 236],
  ["X86_APIC_BUS_CYCLES_NS", 237], ["X86_GUEST_MODE", 238], ["GUEST_MEMFD_FLAGS", 244],
];

const EXITS = [
  ["UNKNOWN", 0], ["EXCEPTION", 1], ["IO", 2], ["HYPERCALL", 3], ["DEBUG", 4], ["HLT", 5],
  ["MMIO", 6], ["IRQ_WINDOW_OPEN", 7], ["SHUTDOWN", 8], ["FAIL_ENTRY", 9], ["INTR", 10],
  ["SET_TPR", 11], ["TPR_ACCESS", 12], ["NMI", 16], ["INTERNAL_ERROR", 17],
  ["SYSTEM_EVENT", 24], ["IOAPIC_EOI", 26], ["HYPERV", 27], ["X86_RDMSR", 29],
  ["X86_WRMSR", 30], ["DIRTY_RING_FULL", 31], ["AP_RESET_HOLD", 32], ["X86_BUS_LOCK", 33],
  ["XEN", 34], ["NOTIFY", 37], ["MEMORY_FAULT", 39], ["TDX", 40],
];

// [name, value (number or bigint source text)]
const MISC = [
  ["KVM_API_VERSION", 12],
  ["KVM_MEM_LOG_DIRTY_PAGES", 1], ["KVM_MEM_READONLY", 2], ["KVM_MEM_GUEST_MEMFD", 4],
  ["KVM_EXIT_IO_IN", 0], ["KVM_EXIT_IO_OUT", 1],
  ["KVM_INTERNAL_ERROR_EMULATION", 1], ["KVM_INTERNAL_ERROR_SIMUL_EX", 2],
  ["KVM_INTERNAL_ERROR_DELIVERY_EV", 3], ["KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON", 4],
  ["KVM_SYSTEM_EVENT_SHUTDOWN", 1], ["KVM_SYSTEM_EVENT_RESET", 2], ["KVM_SYSTEM_EVENT_CRASH", 3],
  ["KVM_SYSTEM_EVENT_WAKEUP", 4], ["KVM_SYSTEM_EVENT_SUSPEND", 5], ["KVM_SYSTEM_EVENT_SEV_TERM", 6],
  ["KVM_SYSTEM_EVENT_TDX_FATAL", 7],
  ["KVM_MSR_EXIT_REASON_INVAL", 1], ["KVM_MSR_EXIT_REASON_UNKNOWN", 2], ["KVM_MSR_EXIT_REASON_FILTER", 4],
  ["KVM_MEMORY_EXIT_FLAG_PRIVATE", "8n"],
  ["KVM_IRQFD_FLAG_DEASSIGN", 1], ["KVM_IRQFD_FLAG_RESAMPLE", 2],
  ["KVM_IOEVENTFD_FLAG_DATAMATCH", 1], ["KVM_IOEVENTFD_FLAG_PIO", 2], ["KVM_IOEVENTFD_FLAG_DEASSIGN", 4],
  ["KVM_IRQ_ROUTING_IRQCHIP", 1], ["KVM_IRQ_ROUTING_MSI", 2],
  ["KVM_IRQCHIP_PIC_MASTER", 0], ["KVM_IRQCHIP_PIC_SLAVE", 1], ["KVM_IRQCHIP_IOAPIC", 2],
  ["KVM_IOAPIC_NUM_PINS", 24], ["KVM_MSI_VALID_DEVID", 1],
  ["KVM_PIT_SPEAKER_DUMMY", 1], ["KVM_PIT_FLAGS_HPET_LEGACY", 1],
  ["KVM_CLOCK_TSC_STABLE", 2], ["KVM_CLOCK_REALTIME", 4], ["KVM_CLOCK_HOST_TSC", 8],
  ["KVM_VCPU_TSC_CTRL", 0], ["KVM_VCPU_TSC_OFFSET", 0],
  ["KVM_MP_STATE_RUNNABLE", 0], ["KVM_MP_STATE_UNINITIALIZED", 1], ["KVM_MP_STATE_INIT_RECEIVED", 2],
  ["KVM_MP_STATE_HALTED", 3], ["KVM_MP_STATE_SIPI_RECEIVED", 4], ["KVM_MP_STATE_STOPPED", 5],
  ["KVM_MP_STATE_CHECK_STOP", 6], ["KVM_MP_STATE_OPERATING", 7], ["KVM_MP_STATE_LOAD", 8],
  ["KVM_MP_STATE_AP_RESET_HOLD", 9], ["KVM_MP_STATE_SUSPENDED", 10],
  ["KVM_GUESTDBG_ENABLE", 1], ["KVM_GUESTDBG_SINGLESTEP", 2],
  ["KVM_GUESTDBG_USE_SW_BP", 0x10000], ["KVM_GUESTDBG_USE_HW_BP", 0x20000],
  ["KVM_GUESTDBG_INJECT_DB", 0x40000], ["KVM_GUESTDBG_INJECT_BP", 0x80000],
  ["KVM_VCPUEVENT_VALID_NMI_PENDING", 1], ["KVM_VCPUEVENT_VALID_SIPI_VECTOR", 2],
  ["KVM_VCPUEVENT_VALID_SHADOW", 4], ["KVM_VCPUEVENT_VALID_SMM", 8],
  ["KVM_VCPUEVENT_VALID_PAYLOAD", 0x10], ["KVM_VCPUEVENT_VALID_TRIPLE_FAULT", 0x20],
  ["KVM_CPUID_FLAG_SIGNIFCANT_INDEX", 1], ["KVM_CPUID_FLAG_STATEFUL_FUNC", 2],
  ["KVM_CPUID_FLAG_STATE_READ_NEXT", 4],
  ["KVM_MAX_CPUID_ENTRIES", 256],
  ["KVM_SREGS2_FLAGS_PDPTRS_VALID", 1],
  ["KVM_MAX_XCRS", 16],
  ["KVM_CREATE_DEVICE_TEST", 1], ["KVM_DEV_TYPE_VFIO", 4], ["KVM_DEV_VFIO_FILE", 1],
  ["KVM_DEV_VFIO_FILE_ADD", 1], ["KVM_DEV_VFIO_FILE_DEL", 2],
  ["KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE", 1], ["KVM_DIRTY_LOG_INITIALLY_SET", 2],
  ["KVM_DIRTY_LOG_PAGE_OFFSET", 64], ["KVM_PIO_PAGE_OFFSET", 1], ["KVM_COALESCED_MMIO_PAGE_OFFSET", 2],
  ["KVM_DIRTY_GFN_F_DIRTY", 1], ["KVM_DIRTY_GFN_F_RESET", 2],
  ["KVM_X86_DEFAULT_VM", 0], ["KVM_X86_SW_PROTECTED_VM", 1], ["KVM_X86_SEV_VM", 2],
  ["KVM_X86_SEV_ES_VM", 3], ["KVM_X86_SNP_VM", 4], ["KVM_X86_TDX_VM", 5],
  ["KVM_MEMORY_ATTRIBUTE_PRIVATE", "8n"],
  ["GUEST_MEMFD_FLAG_MMAP", "1n"], ["GUEST_MEMFD_FLAG_INIT_SHARED", "2n"],
  ["KVM_X86_DISABLE_EXITS_MWAIT", 1], ["KVM_X86_DISABLE_EXITS_HLT", 2],
  ["KVM_X86_DISABLE_EXITS_PAUSE", 4], ["KVM_X86_DISABLE_EXITS_CSTATE", 8],
  ["KVM_MSR_FILTER_READ", 1], ["KVM_MSR_FILTER_WRITE", 2],
  ["KVM_MSR_FILTER_DEFAULT_ALLOW", 0], ["KVM_MSR_FILTER_DEFAULT_DENY", 1],
  ["KVM_MSR_FILTER_MAX_RANGES", 16], ["KVM_MSR_FILTER_MAX_BITMAP_SIZE", 0x600],
  ["KVM_STATE_NESTED_FORMAT_VMX", 0], ["KVM_STATE_NESTED_FORMAT_SVM", 1],
  ["KVM_STATE_NESTED_GUEST_MODE", 1], ["KVM_STATE_NESTED_RUN_PENDING", 2],
  ["KVM_STATE_NESTED_EVMCS", 4], ["KVM_STATE_NESTED_MTF_PENDING", 8], ["KVM_STATE_NESTED_GIF_SET", 0x100],
  ["KVM_STATE_NESTED_VMX_VMCS_SIZE", 0x1000], ["KVM_STATE_NESTED_SVM_VMCB_SIZE", 0x1000],
  ["KVM_REG_X86", "0x2000000000000000n"], ["KVM_REG_SIZE_SHIFT", 52],
  ["KVM_REG_SIZE_MASK", "0x00f0000000000000n"], ["KVM_REG_SIZE_U64", "0x0030000000000000n"],
  ["KVM_X86_REG_TYPE_MSR", 2], ["KVM_X86_REG_TYPE_KVM", 3], ["KVM_REG_GUEST_SSP", 0],
];

// What each MISC constant is (kvm.h's meaning, in our words), emitted as its TSDoc.
const MISC_DOCS = {
  KVM_VCPU_TSC_CTRL: "vCPU device-attribute group of the TSC controls (KVM_{HAS,GET,SET}_DEVICE_ATTR on a vCPU fd).",
  KVM_VCPU_TSC_OFFSET: "Attribute of KVM_VCPU_TSC_CTRL: the vCPU's TSC offset from the host TSC (u64), for precise TSC restore.",
  KVM_API_VERSION: "The only KVM API version there is: what KVM_GET_API_VERSION must return.",
  KVM_MEM_LOG_DIRTY_PAGES: "Memory slot flag: track writes in the slot's dirty bitmap (KVM_GET_DIRTY_LOG).",
  KVM_MEM_READONLY: "Memory slot flag: guest writes to the slot exit to userspace as MMIO.",
  KVM_MEM_GUEST_MEMFD: "Memory slot flag: the slot's private memory comes from a guest_memfd (KVM_SET_USER_MEMORY_REGION2).",
  KVM_EXIT_IO_IN: "kvm_run.io.direction of a port read (IN).",
  KVM_EXIT_IO_OUT: "kvm_run.io.direction of a port write (OUT).",
  KVM_INTERNAL_ERROR_EMULATION: "kvm_run.internal.suberror: KVM's instruction emulator failed.",
  KVM_INTERNAL_ERROR_SIMUL_EX: "kvm_run.internal.suberror: an exception was raised while delivering another.",
  KVM_INTERNAL_ERROR_DELIVERY_EV: "kvm_run.internal.suberror: an event could not be delivered (e.g. an exit during delivery).",
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "kvm_run.internal.suberror: the CPU exited for a reason KVM does not handle.",
  KVM_SYSTEM_EVENT_SHUTDOWN: "kvm_run.system_event.type: the guest asked to power off.",
  KVM_SYSTEM_EVENT_RESET: "kvm_run.system_event.type: the guest asked for a reset.",
  KVM_SYSTEM_EVENT_CRASH: "kvm_run.system_event.type: the guest reported a crash (e.g. Hyper-V crash MSRs).",
  KVM_SYSTEM_EVENT_WAKEUP: "kvm_run.system_event.type: the vCPU was suspended and KVM saw a wakeup event.",
  KVM_SYSTEM_EVENT_SUSPEND: "kvm_run.system_event.type: the guest asked to suspend the VM.",
  KVM_SYSTEM_EVENT_SEV_TERM: "kvm_run.system_event.type: an SEV-ES/SNP guest asked to terminate.",
  KVM_SYSTEM_EVENT_TDX_FATAL: "kvm_run.system_event.type: a TDX guest reported a fatal error.",
  KVM_MSR_EXIT_REASON_INVAL: "KVM_CAP_X86_USER_SPACE_MSR reason bit: exit on an access KVM would fault (#GP).",
  KVM_MSR_EXIT_REASON_UNKNOWN: "KVM_CAP_X86_USER_SPACE_MSR reason bit: exit on an MSR KVM does not know.",
  KVM_MSR_EXIT_REASON_FILTER: "KVM_CAP_X86_USER_SPACE_MSR reason bit: exit on an access the MSR filter denies.",
  KVM_MEMORY_EXIT_FLAG_PRIVATE: "kvm_run.memory_fault.flags: the faulting access was to private memory.",
  KVM_IRQFD_FLAG_DEASSIGN: "kvm_irqfd flag: unbind the eventfd from the GSI.",
  KVM_IRQFD_FLAG_RESAMPLE: "kvm_irqfd flag: level-triggered, with a resample eventfd signalled on EOI.",
  KVM_IOEVENTFD_FLAG_DATAMATCH: "kvm_ioeventfd flag: signal only when the written value equals datamatch.",
  KVM_IOEVENTFD_FLAG_PIO: "kvm_ioeventfd flag: the address is an I/O port, not MMIO.",
  KVM_IOEVENTFD_FLAG_DEASSIGN: "kvm_ioeventfd flag: remove the binding.",
  KVM_IRQ_ROUTING_IRQCHIP: "kvm_irq_routing_entry.type: route the GSI to an in-kernel PIC/IOAPIC pin.",
  KVM_IRQ_ROUTING_MSI: "kvm_irq_routing_entry.type: route the GSI to an MSI message.",
  KVM_IRQCHIP_PIC_MASTER: "kvm_irqchip.chip_id / routing irqchip: the master 8259 PIC.",
  KVM_IRQCHIP_PIC_SLAVE: "kvm_irqchip.chip_id / routing irqchip: the slave 8259 PIC.",
  KVM_IRQCHIP_IOAPIC: "kvm_irqchip.chip_id / routing irqchip: the IOAPIC.",
  KVM_IOAPIC_NUM_PINS: "Pins of KVM's in-kernel IOAPIC.",
  KVM_MSI_VALID_DEVID: "kvm_msi / MSI route flag: the devid field is valid.",
  KVM_PIT_SPEAKER_DUMMY: "kvm_pit_config flag: emulate a dummy PC speaker port (0x61).",
  KVM_PIT_FLAGS_HPET_LEGACY: "kvm_pit_state2 flag: the HPET's legacy replacement mode has the PIT's interrupts.",
  KVM_CLOCK_TSC_STABLE: "kvm_clock_data flag: the kvmclock is stable across vCPUs (master clock in use).",
  KVM_CLOCK_REALTIME: "kvm_clock_data flag: the realtime field is valid.",
  KVM_CLOCK_HOST_TSC: "kvm_clock_data flag: the host_tsc field is valid.",
  KVM_MP_STATE_RUNNABLE: "kvm_mp_state: the vCPU runs (the BSP after reset, an AP after its SIPI).",
  KVM_MP_STATE_UNINITIALIZED: "kvm_mp_state: an AP waiting for INIT.",
  KVM_MP_STATE_INIT_RECEIVED: "kvm_mp_state: an AP that got INIT and waits for a SIPI.",
  KVM_MP_STATE_HALTED: "kvm_mp_state: halted (HLT) until an interrupt.",
  KVM_MP_STATE_SIPI_RECEIVED: "kvm_mp_state: a SIPI was received (transient).",
  KVM_MP_STATE_STOPPED: "kvm_mp_state: stopped (s390).",
  KVM_MP_STATE_CHECK_STOP: "kvm_mp_state: check-stop (s390).",
  KVM_MP_STATE_OPERATING: "kvm_mp_state: operating (s390).",
  KVM_MP_STATE_LOAD: "kvm_mp_state: load state (s390).",
  KVM_MP_STATE_AP_RESET_HOLD: "kvm_mp_state: an SEV-ES AP parked in AP reset hold.",
  KVM_MP_STATE_SUSPENDED: "kvm_mp_state: suspended until a wakeup event (arm64 PSCI).",
  KVM_GUESTDBG_ENABLE: "kvm_guest_debug control: enable guest debugging.",
  KVM_GUESTDBG_SINGLESTEP: "kvm_guest_debug control: single-step the guest.",
  KVM_GUESTDBG_USE_SW_BP: "kvm_guest_debug control: exit on software breakpoints (INT3).",
  KVM_GUESTDBG_USE_HW_BP: "kvm_guest_debug control: use the debug registers in kvm_guest_debug.arch.",
  KVM_GUESTDBG_INJECT_DB: "kvm_guest_debug control: inject a #DB into the guest.",
  KVM_GUESTDBG_INJECT_BP: "kvm_guest_debug control: inject a #BP into the guest.",
  KVM_VCPUEVENT_VALID_NMI_PENDING: "kvm_vcpu_events flag: nmi.pending is valid (set it on restore).",
  KVM_VCPUEVENT_VALID_SIPI_VECTOR: "kvm_vcpu_events flag: sipi_vector is valid.",
  KVM_VCPUEVENT_VALID_SHADOW: "kvm_vcpu_events flag: interrupt.shadow is valid.",
  KVM_VCPUEVENT_VALID_SMM: "kvm_vcpu_events flag: the smi fields are valid.",
  KVM_VCPUEVENT_VALID_PAYLOAD: "kvm_vcpu_events flag: the exception payload fields are valid (KVM_CAP_EXCEPTION_PAYLOAD).",
  KVM_VCPUEVENT_VALID_TRIPLE_FAULT: "kvm_vcpu_events flag: triple_fault.pending is valid.",
  KVM_CPUID_FLAG_SIGNIFCANT_INDEX: "kvm_cpuid_entry2 flag: the leaf's subleaf index is significant (kvm.h's spelling).",
  KVM_CPUID_FLAG_STATEFUL_FUNC: "kvm_cpuid_entry2 flag: a stateful leaf (obsolete; leaf 2 on old CPUs).",
  KVM_CPUID_FLAG_STATE_READ_NEXT: "kvm_cpuid_entry2 flag: the next entry of a stateful leaf (obsolete).",
  KVM_MAX_CPUID_ENTRIES: "Most CPUID entries KVM takes in one KVM_SET_CPUID2.",
  KVM_SREGS2_FLAGS_PDPTRS_VALID: "kvm_sregs2 flag: the pdptrs field is valid (PAE paging).",
  KVM_MAX_XCRS: "Most entries in struct kvm_xcrs.",
  KVM_CREATE_DEVICE_TEST: "kvm_create_device flag: only test whether the device type is supported.",
  KVM_DEV_TYPE_VFIO: "kvm_create_device.type of the KVM-VFIO pseudo device.",
  KVM_DEV_VFIO_FILE: "KVM-VFIO device attribute group: VFIO files.",
  KVM_DEV_VFIO_FILE_ADD: "KVM-VFIO attribute in KVM_DEV_VFIO_FILE: add a VFIO file.",
  KVM_DEV_VFIO_FILE_DEL: "KVM-VFIO attribute in KVM_DEV_VFIO_FILE: remove a VFIO file.",
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flag: pages are write-protected again only by KVM_CLEAR_DIRTY_LOG.",
  KVM_DIRTY_LOG_INITIALLY_SET: "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flag: a new slot's dirty bitmap starts all set.",
  KVM_DIRTY_LOG_PAGE_OFFSET: "Page offset in the vCPU mapping where the dirty ring starts (KVM_CAP_DIRTY_LOG_RING).",
  KVM_PIO_PAGE_OFFSET: "Page offset in the vCPU mapping of the PIO data page (x86).",
  KVM_COALESCED_MMIO_PAGE_OFFSET: "Page offset in the vCPU mapping of the coalesced MMIO ring.",
  KVM_DIRTY_GFN_F_DIRTY: "kvm_dirty_gfn flag: the entry holds a dirtied page.",
  KVM_DIRTY_GFN_F_RESET: "kvm_dirty_gfn flag: userspace has harvested the entry.",
  KVM_X86_DEFAULT_VM: "KVM_CREATE_VM type: an ordinary VM.",
  KVM_X86_SW_PROTECTED_VM: "KVM_CREATE_VM type: software-protected VM (guest_memfd, for testing).",
  KVM_X86_SEV_VM: "KVM_CREATE_VM type: AMD SEV guest.",
  KVM_X86_SEV_ES_VM: "KVM_CREATE_VM type: AMD SEV-ES guest.",
  KVM_X86_SNP_VM: "KVM_CREATE_VM type: AMD SEV-SNP guest.",
  KVM_X86_TDX_VM: "KVM_CREATE_VM type: Intel TDX guest.",
  KVM_MEMORY_ATTRIBUTE_PRIVATE: "KVM_SET_MEMORY_ATTRIBUTES attribute: the range is private (backed by guest_memfd).",
  GUEST_MEMFD_FLAG_MMAP: "KVM_CREATE_GUEST_MEMFD flag: the guest_memfd can be mmap()ed by the host.",
  GUEST_MEMFD_FLAG_INIT_SHARED: "KVM_CREATE_GUEST_MEMFD flag: memory starts shared, not private (needs GUEST_MEMFD_FLAG_MMAP).",
  KVM_X86_DISABLE_EXITS_MWAIT: "KVM_CAP_X86_DISABLE_EXITS bit: MWAIT runs in the guest without an exit.",
  KVM_X86_DISABLE_EXITS_HLT: "KVM_CAP_X86_DISABLE_EXITS bit: HLT runs in the guest without an exit.",
  KVM_X86_DISABLE_EXITS_PAUSE: "KVM_CAP_X86_DISABLE_EXITS bit: PAUSE runs in the guest without an exit.",
  KVM_X86_DISABLE_EXITS_CSTATE: "KVM_CAP_X86_DISABLE_EXITS bit: deep C-states are left to the guest.",
  KVM_MSR_FILTER_READ: "kvm_msr_filter_range flag: the bitmap filters reads (RDMSR).",
  KVM_MSR_FILTER_WRITE: "kvm_msr_filter_range flag: the bitmap filters writes (WRMSR).",
  KVM_MSR_FILTER_DEFAULT_ALLOW: "kvm_msr_filter flag: MSRs outside every range are allowed.",
  KVM_MSR_FILTER_DEFAULT_DENY: "kvm_msr_filter flag: MSRs outside every range are denied.",
  KVM_MSR_FILTER_MAX_RANGES: "Most ranges in one KVM_X86_SET_MSR_FILTER.",
  KVM_MSR_FILTER_MAX_BITMAP_SIZE: "Largest bitmap of one MSR filter range, in bytes.",
  KVM_STATE_NESTED_FORMAT_VMX: "kvm_nested_state.format: Intel VMX.",
  KVM_STATE_NESTED_FORMAT_SVM: "kvm_nested_state.format: AMD SVM.",
  KVM_STATE_NESTED_GUEST_MODE: "kvm_nested_state flag: the vCPU was running an L2 guest.",
  KVM_STATE_NESTED_RUN_PENDING: "kvm_nested_state flag: a VM entry to L2 was pending.",
  KVM_STATE_NESTED_EVMCS: "kvm_nested_state flag: an enlightened VMCS (Hyper-V) is in use.",
  KVM_STATE_NESTED_MTF_PENDING: "kvm_nested_state flag: a monitor trap flag exit was pending.",
  KVM_STATE_NESTED_GIF_SET: "kvm_nested_state flag: the SVM global interrupt flag is set.",
  KVM_STATE_NESTED_VMX_VMCS_SIZE: "Bytes of a VMCS12 in kvm_nested_state's data.",
  KVM_STATE_NESTED_SVM_VMCB_SIZE: "Bytes of a VMCB12 in kvm_nested_state's data.",
  KVM_REG_X86: "KVM_GET/SET_ONE_REG id bits: an x86 register.",
  KVM_REG_SIZE_SHIFT: "Shift of the size field in a ONE_REG id (log2 of the size in bytes).",
  KVM_REG_SIZE_MASK: "Mask of the size field in a ONE_REG id.",
  KVM_REG_SIZE_U64: "ONE_REG id size field: a 64-bit register.",
  KVM_X86_REG_TYPE_MSR: "x86 ONE_REG id type: an MSR, by index.",
  KVM_X86_REG_TYPE_KVM: "x86 ONE_REG id type: a KVM-defined register (e.g. KVM_REG_GUEST_SSP).",
  KVM_REG_GUEST_SSP: "Index of the guest's shadow stack pointer among the KVM-defined x86 ONE_REG registers (CET).",
};

const DIR = { "": 0, W: 1, R: 2, WR: 3 };
function ioc(dir, nr, struct) {
  const size = struct ? S[struct] : 0;
  if (struct && size === undefined) throw new Error(`no size for ${struct}`);
  return ((DIR[dir] << 30) | (size << 16) | (0xae << 8) | nr) >>> 0;
}
const hex = (n) => "0x" + n.toString(16).padStart(8, "0");

function render() {
  const L = [];
  L.push("// This file is automatically generated by scripts/gen-constants.mjs. Do not edit.");
  L.push("// Sources: Linux include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h");
  L.push("// (6.18 additions from the v6.19-rc6 uapi sync; older values also in linux-libc-dev 6.1).");
  L.push("");
  L.push("/** KVM ioctl request numbers (x86-64), computed with the _IOC encoding. */");
  L.push("export const Ioctl = {");
  for (const [name, dir, nr, struct, doc] of IOCTLS) {
    L.push(`  /** ${doc}${struct ? ` (struct ${struct}, ${S[struct]} bytes)` : ""} */`);
    L.push(`  ${name}: ${hex(ioc(dir, nr, struct))},`);
  }
  L.push("} as const;");
  L.push("");
  L.push("/** Names of the ioctls, by request number, for error messages. */");
  L.push("export const IOCTL_NAMES: ReadonlyMap<number, string> = new Map(");
  L.push("  Object.entries(Ioctl).map(([name, req]) => [req, name] as const),");
  L.push(");");
  L.push("");
  L.push("/** KVM_CAP_* capability numbers for {@link Kvm.checkExtension} (names without the KVM_CAP_ prefix). */");
  L.push("export const Cap = {");
  for (const [name, v] of CAPS) L.push(`  ${name}: ${v},`);
  L.push("} as const;");
  L.push("");
  L.push("/** KVM_EXIT_* exit reasons in kvm_run.exit_reason (names without the KVM_EXIT_ prefix). */");
  L.push("export const ExitReason = {");
  for (const [name, v] of EXITS) L.push(`  ${name}: ${v},`);
  L.push("} as const;");
  L.push("");
  for (const [name, v] of MISC) {
    const doc = MISC_DOCS[name];
    if (doc === undefined) throw new Error(`no doc for ${name} in MISC_DOCS`);
    L.push(`/** ${doc} */`);
    L.push(`export const ${name} = ${v};`);
  }
  L.push("");
  return L.join("\n");
}

function check() {
  const dir = mkdtempSync(join(tmpdir(), "kvm-gen-"));
  try {
    const names = [
      ...IOCTLS.map(([n, , , , ]) => [n, hex(ioc(...IOCTLS.find((e) => e[0] === n).slice(1, 4)))]),
      ...CAPS.map(([n, v]) => ["KVM_CAP_" + n, String(v)]),
      ...EXITS.map(([n, v]) => ["KVM_EXIT_" + n, String(v)]),
      ...MISC.map(([n, v]) => [n, String(v).replace(/n$/, "")]),
    ];
    let c = "#include <stdio.h>\n#include <linux/kvm.h>\nint main(void){\n";
    for (const [n] of names) {
      c += `#ifdef ${n}\n printf("%s %llu\\n", "${n}", (unsigned long long)(${n}));\n#else\n printf("%s -\\n", "${n}");\n#endif\n`;
    }
    c += "return 0;}\n";
    writeFileSync(join(dir, "c.c"), c);
    execFileSync("gcc", ["-w", "-o", join(dir, "c"), join(dir, "c.c")]);
    const lines = execFileSync(join(dir, "c"), { encoding: "utf8" }).trim().split("\n");
    let bad = 0, missing = [];
    const want = new Map(names.map(([n, v]) => [n, BigInt(v)]));
    for (const line of lines) {
      const [n, v] = line.split(" ");
      if (v === "-") { missing.push(n); continue; }
      if (BigInt(v) !== want.get(n)) { bad++; console.error(`MISMATCH ${n}: header ${v}, table ${want.get(n)}`); }
    }
    console.log(`checked ${lines.length - missing.length} constants against installed headers, ${bad} mismatches`);
    console.log(`not in installed headers (${missing.length}): ${missing.join(" ")}`);
    return bad === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes("--check")) {
  process.exit(check() ? 0 : 1);
} else {
  writeFileSync(out, render());
  console.log(`wrote ${out}`);
}
