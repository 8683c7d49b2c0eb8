// Writes test/fixtures/cpuid/{zen4-genoa,sapphire-rapids}.json: CPUID tables
// CONSTRUCTED (not recorded) from documented facts, for hosts we do not have.
// Only the leaves the CPU policy reads are present: 0, 1, 7.0, 7.1, 0xD.0/1/2/
// 5-7/9/11/12/17/18, 0x8000_0000, 0x8000_0001, 0x8000_000A.
// Facts used: the bit positions of the AMD APM vol. 3 appendix E and the Intel
// SDM vol. 2A CPUID chapter; Zen 4 / EPYC 9004 (family 19h model 11h) has
// AVX-512, shadow stacks but no IBT, AVIC and x2AVIC (0x8000_000A EDX[13],
// [18]); Sapphire Rapids (family 6 model 8Fh) has AMX, AVX512-FP16, SHSTK and
// IBT. These are public, documented properties of the parts, written down
// here by hand, NOT a dump of a real machine: register values we could not
// check (EBX of leaf 1, cache and topology leaves) are left out or generic. What KVM reports is derived from
// arch/x86/kvm/cpuid.c of Linux 6.18 (kvm_set_cpu_caps): KVM adds x2APIC,
// TSC-deadline and the hypervisor bit, drops MONITOR, OSXSAVE and host-only
// bits, and in 6.18 reports SHSTK (and IBT on Intel) with the CET_U/CET_S
// XSS components; it reports no AVIC bits to the guest.
//   node scripts/cpuid-recorder/construct-documented.mjs
import { writeFileSync } from "node:fs";

const bits = (...b) => b.reduce((a, x) => (a | (1 << x)) >>> 0, 0);
const e = (fn, idx, regs, flags = 0) => ({ function: fn, index: idx, flags, eax: 0, ebx: 0, ecx: 0, edx: 0, ...regs });
const sig = (s) => [0, 4, 8].map((o) => s.charCodeAt(o) | (s.charCodeAt(o + 1) << 8) | (s.charCodeAt(o + 2) << 16) | ((s.charCodeAt(o + 3) << 24) >>> 0)).map((x) => x >>> 0);
const xsaveSub = (i, size, offset, supervisor) => e(0xd, i, { eax: size, ebx: offset, ecx: supervisor ? 1 : 0 }, 1);
const v = (s) => { const [b, d, c] = sig(s); return { ebx: b, edx: d, ecx: c }; };

function write(name, doc) {
  const out = new URL(`../../test/fixtures/cpuid/${name}.json`, import.meta.url);
  writeFileSync(out, JSON.stringify(doc, null, 1) + "\n");
  console.error(`wrote ${out.pathname}`);
}

// ---- AMD EPYC 9004 "Genoa" (Zen 4) ----
{
  const l1ecx = bits(0, 1, 3, 9, 12, 13, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30);
  const l1edx = 0x178bfbff;
  const l7ebx = bits(0, 3, 5, 7, 8, 9, 10, 12, 15, 16, 17, 18, 19, 20, 21, 23, 24, 28, 29, 30, 31);
  const l7ecx = bits(1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 14, 16, 22);
  const l7edx = bits(4);
  const x1ecx = bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 17, 22, 23, 24, 26, 28, 29);
  const x1edx = (l1edx & 0x0183f3ff) | bits(11, 20, 22, 25, 26, 27, 29);
  const xcr0 = 0x2e7; // x87 SSE AVX opmask ZMM_Hi256 Hi16_ZMM PKRU
  const common = (l1c, l7c, l7d, svmEdx, d1ecx) => [
    e(0, 0, { eax: 0x10, ...v("AuthenticAMD") }),
    e(1, 0, { eax: 0x00a10f11, ebx: 0x00800800, ecx: l1c, edx: l1edx }),
    e(7, 0, { eax: 1, ebx: l7ebx, ecx: l7c, edx: l7d }, 1),
    e(7, 1, { eax: bits(5) }, 1), // AVX512_BF16
    e(0xd, 0, { eax: xcr0, ebx: 0x988, ecx: 0x988 }, 1),
    e(0xd, 1, { eax: 0xf, ebx: 0x988, ecx: d1ecx }, 1),
    xsaveSub(2, 256, 576, false), xsaveSub(5, 64, 832, false), xsaveSub(6, 512, 896, false), xsaveSub(7, 1024, 1408, false), xsaveSub(9, 8, 2432, false),
    xsaveSub(11, 16, 0, true), xsaveSub(12, 24, 0, true),
    e(0x80000000, 0, { eax: 0x80000028, ...v("AuthenticAMD") }),
    e(0x80000001, 0, { eax: 0x00a10f11, ecx: x1ecx, edx: x1edx }),
    e(0x8000000a, 0, { eax: 1, ebx: 0x8000, edx: svmEdx }),
  ];
  const host = common(l1ecx, l7ecx, l7edx, bits(0, 1, 2, 3, 4, 5, 6, 7, 10, 12, 13, 15, 16, 17, 18, 20, 25), 0x1800);
  const kvm = common((l1ecx & ~bits(3, 27)) | bits(24, 31), l7ecx, l7edx, bits(0, 3, 4, 5, 6, 7, 10, 12, 16, 25), 0x1800);
  write("zen4-genoa", {
    name: "zen4-genoa",
    source: "CONSTRUCTED by scripts/cpuid-recorder/construct-documented.mjs from the AMD APM vol. 3 and the family 19h model 11h PPR (host) and Linux 6.18 arch/x86/kvm/cpuid.c (KVM column); only the leaves the policy reads",
    vendor: "amd",
    kernel: "6.18.0",
    host,
    kvmSupported: kvm,
    moduleParams: { "kvm_amd.avic": "Y", "kvm_amd.force_avic": "N", "kvm_amd.nested": "1", "kvm_amd.npt": "Y" },
  });
}

// ---- Intel Xeon 4th gen "Sapphire Rapids" ----
{
  const l1ecx = bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
  const l1edx = 0xbfebfbff;
  const l7ebx = bits(0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 28, 29, 30, 31);
  const l7ecx = bits(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 22, 24, 25, 27, 28, 29, 31);
  const l7edx = bits(4, 5, 10, 14, 16, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
  const xcr0 = 0x602e7; // + XTILECFG, XTILEDATA
  const common = (l1c, l7b, l7c, l7d, d1ecx) => [
    e(0, 0, { eax: 0x20, ...v("GenuineIntel") }),
    e(1, 0, { eax: 0x000806f8, ebx: 0x00800800, ecx: l1c, edx: l1edx }),
    e(7, 0, { eax: 2, ebx: l7b, ecx: l7c, edx: l7d }, 1),
    e(7, 1, { eax: bits(4, 5) }, 1), // AVX-VNNI, AVX512_BF16
    e(0xd, 0, { eax: xcr0, ebx: 0x2b00, ecx: 0x2b00 }, 1),
    e(0xd, 1, { eax: 0x1f, ebx: 0x2b00, ecx: d1ecx }, 1),
    xsaveSub(2, 256, 576, false), xsaveSub(5, 64, 1088, false), xsaveSub(6, 512, 1152, false), xsaveSub(7, 1024, 1664, false), xsaveSub(9, 8, 2688, false),
    xsaveSub(11, 16, 0, true), xsaveSub(12, 24, 0, true), xsaveSub(17, 64, 2752, false), xsaveSub(18, 8192, 2816, false),
    e(0x80000000, 0, { eax: 0x80000008 }),
    e(0x80000001, 0, { ecx: bits(0, 5, 8), edx: bits(11, 20, 26, 27, 29) }),
  ];
  const host = common(l1ecx, l7ebx, l7ecx, l7edx, 0x9900); // PT, CET_U, CET_S, LBR
  const kvm = common(
    (l1ecx & ~bits(2, 3, 4, 6, 7, 8, 11, 14, 18, 27)) | bits(31),
    l7ebx & ~bits(12, 15, 25),
    l7ecx & ~bits(13),
    l7edx & ~bits(18),
    0x1800,
  );
  write("sapphire-rapids", {
    name: "sapphire-rapids",
    source: "CONSTRUCTED by scripts/cpuid-recorder/construct-documented.mjs from the Intel SDM vol. 2A CPUID tables for family 6 model 8Fh (host) and Linux 6.18 arch/x86/kvm/cpuid.c (KVM column); only the leaves the policy reads",
    vendor: "intel",
    kernel: "6.18.0",
    host,
    kvmSupported: kvm,
    moduleParams: { "kvm_intel.enable_apicv": "Y", "kvm_intel.enable_ipiv": "Y", "kvm_intel.nested": "Y", "kvm_intel.ept": "Y" },
  });
}
