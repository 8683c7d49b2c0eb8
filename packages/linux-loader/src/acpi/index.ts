export * as aml from "./aml.js";
export { buildAcpiTables, dsdtAml, FADT_HW_REDUCED_ACPI } from "./tables.js";
export type { AcpiOptions, AcpiTables, VirtioMmioDevice } from "./tables.js";
