/**
 * `@ts-vmm/virtio-devices/legacy`: the legacy PC devices (16550 serial, i8042, ACPI PM,
 * the debug-exit and boot-timer ports, CMOS RTC), the IOAPIC, and the bus that routes port
 * accesses to them.
 *
 * @module legacy
 */
export { PioBus } from "./pio-bus.js";
export type { PioDevice } from "./pio-bus.js";
export { SharedLock } from "./shared-lock.js";
export { Serial16550, serialState, SERIAL_RX_FIFO } from "./serial.js";
export type { SerialHooks, SerialState } from "./serial.js";
export { I8042, i8042State, I8042_DATA_PORT, I8042_COMMAND_PORT } from "./i8042.js";
export type { I8042Hooks, I8042State } from "./i8042.js";
export { AcpiPm, ACPI_PM_PORT, ACPI_PM_PORTS, SLP_TYP_S5 } from "./acpi-pm.js";
export type { AcpiPmEvent } from "./acpi-pm.js";
export { DebugExit, DEBUG_EXIT_PORT, debugExitStatus } from "./debug-exit.js";
export {
  BootTimer,
  bootTimerState,
  monotonicMicros,
  BOOT_TIMER_PORT,
  BOOT_TIMER_PORTS,
  BOOT_TIMER_MAX_MILESTONES,
  BOOT_TIMER_CAPACITY_LIMIT,
} from "./boot-timer.js";
export type { BootMilestone, BootTimerOptions, BootTimerReport, BootTimerStateOptions } from "./boot-timer.js";
export { Ioapic, IOAPIC_BASE, IOAPIC_WINDOW, IOAPIC_DEFAULT_PINS } from "./ioapic.js";
export type { IoapicHooks, IoapicRoute, IoapicState, IoapicMetrics, RedirectionEntry } from "./ioapic.js";
export {
  CmosRtc,
  cmosState,
  CMOS_INDEX_PORT,
  CMOS_DATA_PORT,
  CMOS_PORTS,
  CMOS_BYTES,
  CMOS_CENTURY,
  CMOS_UIP_MS,
  CMOS_OFFSET_LIMIT_MS,
} from "./cmos.js";
export type { CmosRtcOptions, CmosState, CmosStateOptions } from "./cmos.js";
