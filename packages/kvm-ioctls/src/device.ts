import { check, checkU64, checkUint } from "./errors.js";
import { FdHandle } from "./fd.js";
import { DEVICE_ATTR, encodeDeviceAttr } from "./layouts/vm-structs.js";

/** A device attribute address: group and attribute id (struct kvm_device_attr). */
export interface DeviceAttr {
  /** Device-defined group. */
  readonly group: number;
  /** Group-defined attribute. */
  readonly attr: bigint | number;
  /** Flags (none defined yet; default 0). */
  readonly flags?: number;
}

/**
 * A device fd from {@link VmFd.createDevice}: has/get/set attribute.
 * Mirrors rust-vmm `DeviceFd`.
 */
export class DeviceFd {
  readonly #h: FdHandle;

  /** @internal Use {@link VmFd.createDevice}. */
  constructor(fd: number) {
    this.#h = new FdHandle(fd, true, "DeviceFd");
  }

  /** The raw fd. @throws {@link KvmError} `Closed` */
  get fd(): number {
    return this.#h.fd;
  }

  #attr(a: DeviceAttr): Uint8Array {
    check(a !== null && typeof a === "object", "attr must be an object");
    return encodeDeviceAttr(checkUint(a.group, "group"), checkU64(a.attr, "attr"), checkUint(a.flags ?? 0, "flags"));
  }

  /** KVM_HAS_DEVICE_ATTR: whether the device knows the attribute. @throws {@link KvmError} for errors other than ENXIO. */
  hasDeviceAttr(a: DeviceAttr): boolean {
    const buf = this.#attr(a);
    try {
      this.#h.buf("KVM_HAS_DEVICE_ATTR", buf);
      return true;
    } catch (e) {
      if ((e as { code?: string }).code === "ENXIO") return false;
      throw e;
    }
  }

  /**
   * KVM_GET_DEVICE_ATTR into `data` (the attribute's size is device-defined;
   * `data` must be at least that big, 8 bytes by default).
   * @throws {@link KvmError} `InvalidArgument`; `ENXIO`, `EINVAL` from KVM.
   */
  getDeviceAttr(a: DeviceAttr, data: Uint8Array = new Uint8Array(8)): Uint8Array {
    check(data instanceof Uint8Array && data.byteLength > 0, "data must be a non-empty Uint8Array");
    this.#h.ptr("KVM_GET_DEVICE_ATTR", this.#attr(a), DEVICE_ATTR.addr, data, data.byteLength);
    return data;
  }

  /** KVM_SET_DEVICE_ATTR from `data`. @throws {@link KvmError} */
  setDeviceAttr(a: DeviceAttr, data: Uint8Array): void {
    check(data instanceof Uint8Array && data.byteLength > 0, "data must be a non-empty Uint8Array");
    this.#h.ptr("KVM_SET_DEVICE_ATTR", this.#attr(a), DEVICE_ATTR.addr, data, data.byteLength);
  }

  /** Closes the device fd. Idempotent. @throws {@link KvmError} */
  close(): void {
    this.#h.close();
  }
}
