// virtio-net numbers from the virtio 1.2 specification (§5.1): feature bits,
// the virtio_net_hdr layout and its flags. Facts only; the code around them is ours.

/** The device handles packets with partial checksum (the guest may send NEEDS_CSUM). */
export const VIRTIO_NET_F_CSUM = 1n << 0n;
/** The driver handles packets with partial checksum (the device may deliver NEEDS_CSUM). */
export const VIRTIO_NET_F_GUEST_CSUM = 1n << 1n;
/** The device has a MAC address in config space. */
export const VIRTIO_NET_F_MAC = 1n << 5n;
/** The driver can receive TSOv4. */
export const VIRTIO_NET_F_GUEST_TSO4 = 1n << 7n;
/** The driver can receive TSOv6. */
export const VIRTIO_NET_F_GUEST_TSO6 = 1n << 8n;
/** The driver can receive TSO with ECN. */
export const VIRTIO_NET_F_GUEST_ECN = 1n << 9n;
/** The device can receive (from the guest) TSOv4. */
export const VIRTIO_NET_F_HOST_TSO4 = 1n << 11n;
/** The device can receive (from the guest) TSOv6. */
export const VIRTIO_NET_F_HOST_TSO6 = 1n << 12n;
/** The device can receive (from the guest) TSO with ECN. */
export const VIRTIO_NET_F_HOST_ECN = 1n << 13n;
/** The driver can merge receive buffers (num_buffers in the header). */
export const VIRTIO_NET_F_MRG_RXBUF = 1n << 15n;
/** Config `status` is valid. */
export const VIRTIO_NET_F_STATUS = 1n << 16n;

/** Config `status`: the link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;

/** virtio_net_hdr with num_buffers: the size with VIRTIO_F_VERSION_1 (always, here). */
export const NET_HDR_SIZE = 12;
/** Largest Ethernet frame either way: 64 KiB plus the 14-byte Ethernet header. */
export const NET_MAX_FRAME = 65536 + 14;
/** Largest transmit chain or receive frame: header plus {@link NET_MAX_FRAME}. */
export const NET_MAX_BUFFER = NET_HDR_SIZE + NET_MAX_FRAME;
/** Smallest Ethernet frame the tap takes (its header). */
export const ETH_HLEN = 14;

/** Header flags (§5.1.6). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** Header gso_type values. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
/** TCP over IPv4 segmentation. */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** TCP over IPv6 segmentation. */
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** The ECN bit of gso_type. */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** Config space: mac[6], status (le16), max_virtqueue_pairs (le16). */
export const NET_CONFIG_SIZE = 10;
/** Queue size offered for rx and tx. */
export const NET_QUEUE_SIZE = 256;
