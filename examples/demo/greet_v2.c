/* libgreet.so, version 2: same soname and symbols as version 1, louder behaviour.
 * This is the build `hotctl reload` switches the running server over to. */
#include <ctype.h>
#include <stdio.h>

#include "greet.h"

/* Upper-cases `in` into `out` (at most outlen - 1 bytes, NUL-terminated). Static on
 * purpose: a call to a static function never goes through the GOT, so v2 uses its own. */
static void upcase(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    if (outlen == 0)
        return;
    for (; in[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (char)toupper((unsigned char)in[i]);
    out[i] = '\0';
}

int greet(const char *name, char *out, size_t outlen)
{
    char loud[256];
    upcase(name, loud, sizeof loud);
    return snprintf(out, outlen, "HELLO, %s! (v2)", loud);
}

const char *greet_version(void)
{
    return "v2";
}
