// Checks every struct size and field offset in src/layouts/ against the C
// compiler's view of the installed Linux headers (linux-libc-dev). Structs
// newer than those headers (kvm_userspace_memory_region2,
// kvm_create_guest_memfd) are checked against the sizes the ioctl numbers
// encode instead (see generated.test.ts).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { KVM_CPUID2_HEADER, KVM_CPUID_ENTRY2_SIZE, CPUID_ENTRY_OFF, KVM_MSR_ENTRY_SIZE, KVM_MSRS_HEADER } from "./cpuid-msr.js";
import { RUN, RUN_EXIT } from "./kvm-run.js";
import { MSR_FILTER } from "./msr-filter.js";
import { NESTED_STATE } from "./nested-state.js";
import { KVM_REGS_SIZE, REGS_FIELDS } from "./regs.js";
import { KVM_SREGS2_SIZE, KVM_SREGS_SIZE, SEGMENT_OFF, SREGS_OFF } from "./sregs.js";
import { DEBUGREGS_OFF, FPU_OFF, KVM_DEBUGREGS_SIZE, KVM_FPU_SIZE, KVM_GUEST_DEBUG_SIZE, KVM_VCPU_EVENTS_SIZE, KVM_XCRS_SIZE, VCPU_EVENTS_OFF } from "./vcpu-state.js";
import {
  CLOCK_DATA, COALESCED_ZONE, CREATE_DEVICE, DEVICE_ATTR, DIRTY_GFN, DIRTY_LOG, ENABLE_CAP, IOEVENTFD, IRQCHIP,
  IRQFD, IRQ_LEVEL, IRQ_ROUTING, LAPIC_STATE, MEM_REGION, MSI, ONE_REG, PIT_CONFIG, PIT_STATE2, REINJECT_CONTROL, XSAVE,
} from "./vm-structs.js";

const camelToSnake = (s: string) => s.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

// [C expression, value in TypeScript]
const checks: [string, number][] = [
  ["sizeof(struct kvm_regs)", KVM_REGS_SIZE],
  ...REGS_FIELDS.map((f, i): [string, number] => [`offsetof(struct kvm_regs, ${f})`, 8 * i]),
  ["sizeof(struct kvm_segment)", 24],
  ...Object.entries(SEGMENT_OFF).map(([f, o]): [string, number] => [`offsetof(struct kvm_segment, ${f})`, o]),
  ["sizeof(struct kvm_dtable)", 16],
  ["sizeof(struct kvm_sregs)", KVM_SREGS_SIZE],
  ["sizeof(struct kvm_sregs2)", KVM_SREGS2_SIZE],
  ...Object.entries(SREGS_OFF)
    .filter(([f]) => f !== "flags" && f !== "pdptrs")
    .map(([f, o]): [string, number] => [`offsetof(struct kvm_sregs, ${camelToSnake(f)})`, o]),
  ["offsetof(struct kvm_sregs2, flags)", SREGS_OFF.flags],
  ["offsetof(struct kvm_sregs2, pdptrs)", SREGS_OFF.pdptrs],
  ["sizeof(struct kvm_fpu)", KVM_FPU_SIZE],
  ...Object.entries(FPU_OFF).map(([f, o]): [string, number] => [`offsetof(struct kvm_fpu, ${camelToSnake(f)})`, o]),
  ["sizeof(struct kvm_vcpu_events)", KVM_VCPU_EVENTS_SIZE],
  ["offsetof(struct kvm_vcpu_events, interrupt)", VCPU_EVENTS_OFF.interrupt],
  ["offsetof(struct kvm_vcpu_events, nmi)", VCPU_EVENTS_OFF.nmi],
  ["offsetof(struct kvm_vcpu_events, sipi_vector)", VCPU_EVENTS_OFF.sipiVector],
  ["offsetof(struct kvm_vcpu_events, flags)", VCPU_EVENTS_OFF.flags],
  ["offsetof(struct kvm_vcpu_events, smi)", VCPU_EVENTS_OFF.smi],
  ["offsetof(struct kvm_vcpu_events, triple_fault)", VCPU_EVENTS_OFF.tripleFault],
  ["offsetof(struct kvm_vcpu_events, exception_has_payload)", VCPU_EVENTS_OFF.exceptionHasPayload],
  ["offsetof(struct kvm_vcpu_events, exception_payload)", VCPU_EVENTS_OFF.exceptionPayload],
  ["sizeof(struct kvm_debugregs)", KVM_DEBUGREGS_SIZE],
  ...Object.entries(DEBUGREGS_OFF).map(([f, o]): [string, number] => [`offsetof(struct kvm_debugregs, ${f})`, o]),
  ["sizeof(struct kvm_xcrs)", KVM_XCRS_SIZE],
  ["offsetof(struct kvm_xcrs, xcrs)", 8],
  ["sizeof(struct kvm_xcr)", 16],
  ["sizeof(struct kvm_guest_debug)", KVM_GUEST_DEBUG_SIZE],
  ["offsetof(struct kvm_guest_debug, arch)", 8],
  ["sizeof(struct kvm_cpuid2)", KVM_CPUID2_HEADER],
  ["sizeof(struct kvm_cpuid_entry2)", KVM_CPUID_ENTRY2_SIZE],
  ...Object.entries(CPUID_ENTRY_OFF).map(([f, o]): [string, number] => [`offsetof(struct kvm_cpuid_entry2, ${f})`, o]),
  ["sizeof(struct kvm_msrs)", KVM_MSRS_HEADER],
  ["sizeof(struct kvm_msr_entry)", KVM_MSR_ENTRY_SIZE],
  ["offsetof(struct kvm_msr_entry, data)", 8],
  ["sizeof(struct kvm_msr_list)", 4],
  ["sizeof(struct kvm_reg_list)", 8],
  ["sizeof(struct kvm_userspace_memory_region)", MEM_REGION.size],
  ["offsetof(struct kvm_userspace_memory_region, flags)", MEM_REGION.flags],
  ["offsetof(struct kvm_userspace_memory_region, guest_phys_addr)", MEM_REGION.guestPhysAddr],
  ["offsetof(struct kvm_userspace_memory_region, memory_size)", MEM_REGION.memorySize],
  ["offsetof(struct kvm_userspace_memory_region, userspace_addr)", MEM_REGION.userspaceAddr],
  ["sizeof(struct kvm_irqfd)", IRQFD.size],
  ["offsetof(struct kvm_irqfd, gsi)", IRQFD.gsi],
  ["offsetof(struct kvm_irqfd, flags)", IRQFD.flags],
  ["offsetof(struct kvm_irqfd, resamplefd)", IRQFD.resamplefd],
  ["sizeof(struct kvm_ioeventfd)", IOEVENTFD.size],
  ["offsetof(struct kvm_ioeventfd, addr)", IOEVENTFD.addr],
  ["offsetof(struct kvm_ioeventfd, len)", IOEVENTFD.len],
  ["offsetof(struct kvm_ioeventfd, fd)", IOEVENTFD.fd],
  ["offsetof(struct kvm_ioeventfd, flags)", IOEVENTFD.flags],
  ["sizeof(struct kvm_msi)", MSI.size],
  ["offsetof(struct kvm_msi, data)", MSI.data],
  ["offsetof(struct kvm_msi, flags)", MSI.flags],
  ["offsetof(struct kvm_msi, devid)", MSI.devid],
  ["sizeof(struct kvm_irq_routing)", IRQ_ROUTING.header],
  ["sizeof(struct kvm_irq_routing_entry)", IRQ_ROUTING.entrySize],
  ["offsetof(struct kvm_irq_routing_entry, type)", IRQ_ROUTING.type],
  ["offsetof(struct kvm_irq_routing_entry, flags)", IRQ_ROUTING.flags],
  ["offsetof(struct kvm_irq_routing_entry, u)", IRQ_ROUTING.u],
  ["offsetof(struct kvm_irq_routing_entry, u.msi.data)", IRQ_ROUTING.u + 8],
  ["offsetof(struct kvm_irq_routing_entry, u.msi.devid)", IRQ_ROUTING.u + 12],
  ["offsetof(struct kvm_irq_routing_entry, u.irqchip.pin)", IRQ_ROUTING.u + 4],
  ["sizeof(struct kvm_irq_level)", IRQ_LEVEL.size],
  ["offsetof(struct kvm_irq_level, level)", IRQ_LEVEL.level],
  ["sizeof(struct kvm_irqchip)", IRQCHIP.size],
  ["offsetof(struct kvm_irqchip, chip)", IRQCHIP.chip],
  ["offsetof(struct kvm_pic_state, irr)", 1],
  ["offsetof(struct kvm_pic_state, imr)", 2],
  ["sizeof(struct kvm_clock_data)", CLOCK_DATA.size],
  ["offsetof(struct kvm_clock_data, flags)", CLOCK_DATA.flags],
  ["offsetof(struct kvm_clock_data, realtime)", CLOCK_DATA.realtime],
  ["offsetof(struct kvm_clock_data, host_tsc)", CLOCK_DATA.hostTsc],
  ["sizeof(struct kvm_coalesced_mmio_zone)", COALESCED_ZONE.size],
  ["offsetof(struct kvm_coalesced_mmio_zone, size)", COALESCED_ZONE.sizeField],
  ["offsetof(struct kvm_coalesced_mmio_zone, pio)", COALESCED_ZONE.pio],
  ["sizeof(struct kvm_coalesced_mmio)", 24],
  ["sizeof(struct kvm_coalesced_mmio_ring)", 8],
  ["sizeof(struct kvm_enable_cap)", ENABLE_CAP.size],
  ["offsetof(struct kvm_enable_cap, args)", ENABLE_CAP.args],
  ["sizeof(struct kvm_pit_config)", PIT_CONFIG.size],
  ["sizeof(struct kvm_pit_state2)", PIT_STATE2.size],
  ["offsetof(struct kvm_pit_state2, flags)", PIT_STATE2.flags],
  ["sizeof(struct kvm_reinject_control)", REINJECT_CONTROL.size],
  ["sizeof(struct kvm_create_device)", CREATE_DEVICE.size],
  ["offsetof(struct kvm_create_device, fd)", CREATE_DEVICE.fd],
  ["offsetof(struct kvm_create_device, flags)", CREATE_DEVICE.flags],
  ["sizeof(struct kvm_device_attr)", DEVICE_ATTR.size],
  ["offsetof(struct kvm_device_attr, group)", DEVICE_ATTR.group],
  ["offsetof(struct kvm_device_attr, attr)", DEVICE_ATTR.attr],
  ["offsetof(struct kvm_device_attr, addr)", DEVICE_ATTR.addr],
  ["sizeof(struct kvm_dirty_log)", DIRTY_LOG.size],
  ["offsetof(struct kvm_dirty_log, dirty_bitmap)", DIRTY_LOG.bitmap],
  ["sizeof(struct kvm_one_reg)", ONE_REG.size],
  ["offsetof(struct kvm_one_reg, addr)", ONE_REG.addr],
  ["sizeof(struct kvm_mp_state)", 4],
  ["sizeof(struct kvm_translation)", 24],
  ["offsetof(struct kvm_translation, physical_address)", 8],
  ["offsetof(struct kvm_translation, valid)", 16],
  ["offsetof(struct kvm_translation, writeable)", 17],
  ["offsetof(struct kvm_translation, usermode)", 18],
  ["sizeof(struct kvm_lapic_state)", LAPIC_STATE.size],
  ["sizeof(struct kvm_dirty_gfn)", DIRTY_GFN.size],
  ["offsetof(struct kvm_dirty_gfn, slot)", DIRTY_GFN.slot],
  ["offsetof(struct kvm_dirty_gfn, offset)", DIRTY_GFN.offset],
  ["sizeof(struct kvm_xsave)", XSAVE.size],
  ["sizeof(struct kvm_run)", RUN.size],
  ["offsetof(struct kvm_run, immediate_exit)", RUN.immediateExit],
  ["offsetof(struct kvm_run, exit_reason)", RUN.exitReason],
  ["offsetof(struct kvm_run, ready_for_interrupt_injection)", RUN.readyForInterruptInjection],
  ["offsetof(struct kvm_run, if_flag)", RUN.ifFlag],
  ["offsetof(struct kvm_run, flags)", RUN.flags],
  ["offsetof(struct kvm_run, cr8)", RUN.cr8],
  ["offsetof(struct kvm_run, apic_base)", RUN.apicBase],
  ["offsetof(struct kvm_run, hw)", RUN.union],
  ["offsetof(struct kvm_run, kvm_valid_regs)", RUN.kvmValidRegs],
  ["offsetof(struct kvm_run, kvm_dirty_regs)", RUN.kvmDirtyRegs],
  ["offsetof(struct kvm_run, s)", RUN.syncRegs],
  ["offsetof(struct kvm_run, fail_entry.cpu)", RUN_EXIT.failEntryCpu],
  ["offsetof(struct kvm_run, ex.error_code)", RUN_EXIT.exErrorCode],
  ["offsetof(struct kvm_run, io.direction)", RUN_EXIT.ioDirection],
  ["offsetof(struct kvm_run, io.size)", RUN_EXIT.ioSize],
  ["offsetof(struct kvm_run, io.port)", RUN_EXIT.ioPort],
  ["offsetof(struct kvm_run, io.count)", RUN_EXIT.ioCount],
  ["offsetof(struct kvm_run, io.data_offset)", RUN_EXIT.ioDataOffset],
  ["offsetof(struct kvm_run, debug.arch.pc)", RUN_EXIT.debugPc],
  ["offsetof(struct kvm_run, debug.arch.dr6)", RUN_EXIT.debugDr6],
  ["offsetof(struct kvm_run, debug.arch.dr7)", RUN_EXIT.debugDr7],
  ["offsetof(struct kvm_run, mmio.phys_addr)", RUN_EXIT.mmioPhysAddr],
  ["offsetof(struct kvm_run, mmio.data)", RUN_EXIT.mmioData],
  ["offsetof(struct kvm_run, mmio.len)", RUN_EXIT.mmioLen],
  ["offsetof(struct kvm_run, mmio.is_write)", RUN_EXIT.mmioIsWrite],
  ["offsetof(struct kvm_run, hypercall.args)", RUN_EXIT.hypercallArgs],
  ["offsetof(struct kvm_run, hypercall.ret)", RUN_EXIT.hypercallRet],
  ["offsetof(struct kvm_run, hypercall.longmode)", RUN_EXIT.hypercallFlags], // flags in newer headers, same place
  ["offsetof(struct kvm_run, tpr_access.is_write)", RUN_EXIT.tprIsWrite],
  ["offsetof(struct kvm_run, internal.suberror)", RUN_EXIT.internalSuberror],
  ["offsetof(struct kvm_run, internal.ndata)", RUN_EXIT.internalNdata],
  ["offsetof(struct kvm_run, internal.data)", RUN_EXIT.internalData],
  ["offsetof(struct kvm_run, system_event.type)", RUN_EXIT.systemEventType],
  ["offsetof(struct kvm_run, system_event.ndata)", RUN_EXIT.systemEventNdata],
  ["offsetof(struct kvm_run, system_event.data)", RUN_EXIT.systemEventData],
  ["offsetof(struct kvm_run, eoi.vector)", RUN_EXIT.eoiVector],
  ["offsetof(struct kvm_run, msr.error)", RUN_EXIT.msrError],
  ["offsetof(struct kvm_run, msr.reason)", RUN_EXIT.msrReason],
  ["offsetof(struct kvm_run, msr.index)", RUN_EXIT.msrIndex],
  ["offsetof(struct kvm_run, msr.data)", RUN_EXIT.msrData],
  ["offsetof(struct kvm_run, notify.flags)", RUN_EXIT.notifyFlags],
  ["sizeof(struct kvm_nested_state)", NESTED_STATE.header],
  ["offsetof(struct kvm_nested_state, flags)", NESTED_STATE.flags],
  ["offsetof(struct kvm_nested_state, format)", NESTED_STATE.format],
  ["offsetof(struct kvm_nested_state, size)", NESTED_STATE.size],
  ["offsetof(struct kvm_nested_state, hdr)", NESTED_STATE.hdr],
  ["offsetof(struct kvm_nested_state, data)", NESTED_STATE.data],
  ["sizeof(struct kvm_msr_filter)", MSR_FILTER.size],
  ["offsetof(struct kvm_msr_filter, flags)", MSR_FILTER.flags],
  ["offsetof(struct kvm_msr_filter, ranges)", MSR_FILTER.ranges],
  ["sizeof(((struct kvm_msr_filter *)0)->ranges) / sizeof(struct kvm_msr_filter_range)", MSR_FILTER.maxRanges],
  ["sizeof(struct kvm_msr_filter_range)", MSR_FILTER.rangeSize],
  ["offsetof(struct kvm_msr_filter_range, flags)", MSR_FILTER.rangeFlags],
  ["offsetof(struct kvm_msr_filter_range, nmsrs)", MSR_FILTER.rangeNmsrs],
  ["offsetof(struct kvm_msr_filter_range, base)", MSR_FILTER.rangeBase],
  ["offsetof(struct kvm_msr_filter_range, bitmap)", MSR_FILTER.rangeBitmap],
];

describeWith({ tools: ["gcc"] }, "struct layouts match the installed Linux headers", () => {
  it(`${checks.length} sizes and offsets agree with the C compiler`, () => {
    const dir = mkdtempSync(join(tmpdir(), "kvm-layout-"));
    try {
      let c = "#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void){\n";
      for (const [expr] of checks) c += ` printf("%zu\\n", (size_t)(${expr}));\n`;
      c += " return 0;\n}\n";
      writeFileSync(join(dir, "l.c"), c);
      execFileSync("gcc", ["-o", join(dir, "l"), join(dir, "l.c")]);
      const got = execFileSync(join(dir, "l"), { encoding: "utf8" }).trim().split("\n").map(Number);
      const mismatches = checks.filter(([, v], i) => got[i] !== v).map(([e, v], i) => `${e}: C ${got[i]}, TS ${v}`);
      expect(mismatches).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
