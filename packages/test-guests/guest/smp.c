/* mode=smp: not implemented yet (APs need INIT-SIPI through the LAPIC and a real-mode trampoline). */
#include "guest.h"
int mode_smp(void) {
	print("SKIP smp not-implemented\n");
	return 4;
}
