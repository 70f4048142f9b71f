/* libcounter.so v1, in C. Its state is a private static: no symbol exports it, but .symtab names
 * it, which is where hotagent_previous_symbol finds it. */
#include "counter.h"

static unsigned long total;

unsigned long counter_next(void) { return __atomic_add_fetch(&total, 1, __ATOMIC_RELAXED); }

const char *counter_version(void) { return "C v1"; }
