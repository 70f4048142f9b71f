/* libgreet.so, version 1: a polite lower-case greeting. */
#include <stdio.h>

#include "greet.h"

int greet(const char *name, char *out, size_t outlen)
{
    return snprintf(out, outlen, "hello, %s (v1)", name);
}

const char *greet_version(void)
{
    return "v1";
}
