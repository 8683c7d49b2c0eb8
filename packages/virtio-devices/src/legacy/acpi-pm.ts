import type { PioDevice } from "./pio-bus.js";

/** Base of the HW-reduced ACPI registers linux-loader's FADT names (SLEEP_CONTROL, SLEEP_STATUS, RESET). */
export const ACPI_PM_PORT = 0x3c0;
/** Ports the device decodes: 0x3c0 sleep control, 0x3c1 sleep status, 0x3c2 reset. */
export const ACPI_PM_PORTS = 3;

/** SLP_TYP linux-loader's DSDT gives `\_S5` (soft off). */
export const SLP_TYP_S5 = 5;
const SLP_EN = 0x20;

/** What the guest asked for. */
export type AcpiPmEvent = "PowerOff" | "Reset";

/**
 * The HW-reduced ACPI sleep and reset registers (ACPI 6.5, 4.8.3.7 and
 * 4.8.3.6): writing SLP_EN with SLP_TYP 5 (`\_S5`) to the sleep control
 * register powers off, writing the FADT's RESET_VALUE (1) to the reset
 * register resets. Other sleep types are ignored (no S1-S4); the status
 * register reads 0 (no wake event).
 */
export class AcpiPm implements PioDevice {
  readonly #on: (e: AcpiPmEvent) => void;

  /** @param on receives the power-off or reset request. */
  constructor(on: (e: AcpiPmEvent) => void) {
    this.#on = on;
  }

  read(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0] ?? 0;
    if (offset === 0 && v & SLP_EN && ((v >> 2) & 7) === SLP_TYP_S5) this.#on("PowerOff");
    else if (offset === 2 && v === 1) this.#on("Reset");
  }
}
