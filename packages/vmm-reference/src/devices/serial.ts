import type { PioDevice } from "./pio-bus.js";

// Register offsets and bits of the 8250/16550 UART (National Semiconductor PC16550D data sheet).
const THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const LSR_THRE = 0x20, LSR_TEMT = 0x40;
const IIR_NONE = 0x01;
const MSR_CTS = 0x10, MSR_DSR = 0x20, MSR_DCD = 0x80;

/**
 * A transmit-only 8250 UART without interrupts: enough for a guest's serial
 * console and early printk. The transmitter is always empty (bytes go straight
 * to `out`), the receiver never has data, no interrupt is ever pending, and
 * loopback mode reflects MCR into MSR so that drivers probing for a UART find
 * one. Input and interrupts belong to the full device in virtio-devices.
 */
export class Serial8250 implements PioDevice {
  #ier = 0;
  #lcr = 0x03;
  #mcr = 0x08;
  #scr = 0;
  #dll = 0x0c;
  #dlm = 0;
  readonly #out: (byte: number) => void;

  /** @param out receives every byte the guest transmits. */
  constructor(out: (byte: number) => void) {
    this.#out = out;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    const dlab = (this.#lcr & LCR_DLAB) !== 0;
    let v = 0;
    switch (offset) {
      case THR: v = dlab ? this.#dll : 0; break;
      case IER: v = dlab ? this.#dlm : this.#ier; break;
      case IIR_FCR: v = IIR_NONE; break;
      case LCR: v = this.#lcr; break;
      case MCR: v = this.#mcr; break;
      case LSR: v = LSR_THRE | LSR_TEMT; break;
      case MSR:
        if (this.#mcr & MCR_LOOP) {
          // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
          const m = this.#mcr;
          v = ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4);
        } else v = MSR_DCD | MSR_DSR | MSR_CTS;
        break;
      case SCR: v = this.#scr; break;
    }
    data[0] = v;
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0] ?? 0;
    const dlab = (this.#lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case THR:
        if (dlab) this.#dll = v;
        else if (!(this.#mcr & MCR_LOOP)) this.#out(v);
        break;
      case IER: if (dlab) this.#dlm = v; else this.#ier = v & 0x0f; break;
      case LCR: this.#lcr = v; break;
      case MCR: this.#mcr = v & 0x1f; break;
      case SCR: this.#scr = v; break;
      default: break; // FCR, LSR and MSR writes have no effect here.
    }
  }
}
