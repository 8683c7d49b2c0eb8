export * as aml from "./aml.js";
export {
  ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, ACPI_SLP_TYP_S5,
  buildAcpiTables, checkVirtioMmio, CMOS_CENTURY_INDEX, dsdtAml, FADT_HW_REDUCED_ACPI, FADT_RESET_REG_SUP, IAPC_CMOS_RTC_NOT_PRESENT, IOAPIC_PINS,
} from "./tables.js";
export type { AcpiOptions, AcpiTables, VirtioMmioDevice, VirtioMmioLimits } from "./tables.js";
