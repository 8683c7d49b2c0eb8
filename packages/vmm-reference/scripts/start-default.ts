// `npm start`: boots the built-in default guest — the PVH micro-guest from
// @ts-vmm/test-guests in `hello` mode — on the reference VMM, with COM1 on
// stdout. Extra arguments are passed to `ts-vmm run` (for example --mem 64).
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { runCli } from "../src/cli.js";

const guest = await buildMicroGuest();
process.stderr.write(`ts-vmm: booting the micro-guest ${guest.elf} (mode=hello)\n`);
const code = await runCli(["run", "--kernel", guest.elf, "--cmdline", "mode=hello", "--timeout", "60", ...process.argv.slice(2)]);
// Odd statuses carry the guest's debug-exit value as (value << 1) | 1; value 0 is success.
const guestValue = code & 1 ? code >> 1 : null;
process.stderr.write(guestValue === null ? `ts-vmm: VMM exit status ${code}\n` : `ts-vmm: guest exited with value ${guestValue}\n`);
process.exit(guestValue === 0 ? 0 : code === 0 ? 1 : code);
