/* libconn.so v1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"

struct conn *conn_open(const char *name) {
    struct conn *c = calloc(1, sizeof *c);
    if (c) snprintf(c->name, sizeof c->name, "%s", name);
    return c;
}

void conn_handle(struct conn *c, const char *request, char *out, unsigned long size) {
    snprintf(out, size, "[%s] %s (v1)", c->name, request);
}

void conn_close(struct conn *c, char *out, unsigned long size) {
    snprintf(out, size, "closed %s (v1)", c->name);
    free(c);
}
