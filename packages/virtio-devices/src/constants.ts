// Numbers from the virtio 1.2 specification (OASIS, virtio-v1.2-cs01):
// §2.1 device status, §4.2.2 the virtio-mmio register layout, §5 device types,
// §6 reserved feature bits. Facts only; the code around them is ours.

/** Device type ids (§5). */
export const VIRTIO_ID_NET = 1;
/** virtio-blk (§5.2). */
export const VIRTIO_ID_BLOCK = 2;
/** virtio-console (§5.3). */
export const VIRTIO_ID_CONSOLE = 3;
/** virtio-rng, the entropy device (§5.4). */
export const VIRTIO_ID_RNG = 4;

/** Device status bits (§2.1). */
export const STATUS_ACKNOWLEDGE = 1;
/** The guest knows how to drive the device. */
export const STATUS_DRIVER = 2;
/** The driver is set up and ready to drive the device. */
export const STATUS_DRIVER_OK = 4;
/** The driver acknowledged the features it understands; negotiation is over. */
export const STATUS_FEATURES_OK = 8;
/** The device hit an error it cannot recover from without a reset. */
export const STATUS_DEVICE_NEEDS_RESET = 0x40;
/** The guest gave up on the device. */
export const STATUS_FAILED = 0x80;

/** Reserved feature bits (§6), as bigint masks. */
export const VIRTIO_F_INDIRECT_DESC = 1n << 28n;
/** Used/avail event index notification suppression. */
export const VIRTIO_F_EVENT_IDX = 1n << 29n;
/** Modern device (required by this transport). */
export const VIRTIO_F_VERSION_1 = 1n << 32n;
/** The packed virtqueue layout. */
export const VIRTIO_F_RING_PACKED = 1n << 34n;

/** virtio-mmio register offsets (§4.2.2, version 2). */
export const MMIO = {
  MagicValue: 0x000,
  Version: 0x004,
  DeviceId: 0x008,
  VendorId: 0x00c,
  DeviceFeatures: 0x010,
  DeviceFeaturesSel: 0x014,
  DriverFeatures: 0x020,
  DriverFeaturesSel: 0x024,
  QueueSel: 0x030,
  QueueNumMax: 0x034,
  QueueNum: 0x038,
  QueueReady: 0x044,
  QueueNotify: 0x050,
  InterruptStatus: 0x060,
  InterruptAck: 0x064,
  Status: 0x070,
  QueueDescLow: 0x080,
  QueueDescHigh: 0x084,
  QueueDriverLow: 0x090,
  QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0,
  QueueDeviceHigh: 0x0a4,
  ShmSel: 0x0ac,
  ShmLenLow: 0x0b0,
  ShmLenHigh: 0x0b4,
  ShmBaseLow: 0x0b8,
  ShmBaseHigh: 0x0bc,
  QueueReset: 0x0c0,
  ConfigGeneration: 0x0fc,
  Config: 0x100,
} as const;

/** "virt" in little-endian. */
export const MMIO_MAGIC = 0x7472_6976;
/** The modern virtio-mmio version. */
export const MMIO_VERSION = 2;
/** Our vendor id: "TSVM" little-endian. */
export const MMIO_VENDOR_ID = 0x4d56_5354;
/** Size of one virtio-mmio window (registers plus up to 3.75 KiB of config space). */
export const MMIO_WINDOW_SIZE = 0x1000;

/** InterruptStatus bits (§4.2.2). */
export const INT_USED_BUFFER = 1;
/** The configuration (or DEVICE_NEEDS_RESET) changed. */
export const INT_CONFIG_CHANGE = 2;
