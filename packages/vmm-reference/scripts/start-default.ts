// `npm start`: boots the built-in default guest — the PVH micro-guest from
// @ts-vmm/test-guests in `hello` mode — on the reference VMM, with COM1 on
// stdout. Extra arguments are passed to `ts-vmm run` (for example --mem 64).
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { runCli } from "../src/cli.js";

const guest = await buildMicroGuest();
process.stderr.write(`ts-vmm: booting the micro-guest ${guest.elf} (mode=hello)\n`);
const code = await runCli(["run", "--kernel", guest.elf, "--cmdline", "mode=hello", "--timeout", "60", ...process.argv.slice(2)]);
process.stderr.write(`ts-vmm: exit status ${code}\n`);
process.exit(code === 1 ? 0 : code);
