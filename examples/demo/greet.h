/* The interface of libgreet.so, the library the demo server is linked against.
 *
 * greet_v1.c and greet_v2.c are two builds of the same library (same soname, same
 * symbols, different behaviour). The server calls these functions through its PLT/GOT,
 * which is what hotagent rewrites on `hotctl reload`.
 */
#ifndef GREET_H
#define GREET_H

#include <stddef.h>

/* Writes the greeting for `name` into `out` (always NUL-terminated when outlen > 0).
 * Returns the length the full greeting would have, like snprintf. */
int greet(const char *name, char *out, size_t outlen);

/* A short version tag of this build of the library, e.g. "v1". */
const char *greet_version(void);

#endif
