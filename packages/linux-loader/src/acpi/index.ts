export * as aml from "./aml.js";
export { buildAcpiTables, checkVirtioMmio, dsdtAml, FADT_HW_REDUCED_ACPI, IOAPIC_PINS } from "./tables.js";
export type { AcpiOptions, AcpiTables, VirtioMmioDevice, VirtioMmioLimits } from "./tables.js";
