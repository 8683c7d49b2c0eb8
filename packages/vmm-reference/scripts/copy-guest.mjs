// Part of `build`: puts the micro-guest ELF (built by @ts-vmm/test-guests, or taken from its cache)
// into dist/guest/micro-guest.elf, so the tarball carries a guest that `ts-vmm demo` boots with no
// other file (the same guest, in the same hello mode, as `npm start` in the repository).
import { copyFileSync, mkdirSync } from "node:fs";
import { buildMicroGuest } from "@ts-vmm/test-guests";

const out = new URL("../dist/guest/", import.meta.url);
mkdirSync(out, { recursive: true });
copyFileSync((await buildMicroGuest()).elf, new URL("micro-guest.elf", out));
