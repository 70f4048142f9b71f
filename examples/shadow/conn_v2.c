/* libconn.so v2: counts the requests of each connection. struct conn has no room for a counter
 * and cannot grow (live objects were made by v1), so the count lives in a shadow variable the
 * agent keeps by the object's address; it is freed when the connection closes, so a new object
 * at the same address starts from zero. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/hotagent.h"
#include "conn.h"

/* Any number unique to this field of this patch. */
#define REQUESTS_ID 0x5245515553UL /* "REQUS" */

struct conn *conn_open(const char *name) {
    struct conn *c = calloc(1, sizeof *c);
    if (c) snprintf(c->name, sizeof c->name, "%s", name);
    return c;
}

void conn_handle(struct conn *c, const char *request, char *out, unsigned long size) {
    unsigned long *requests = hotagent_shadow_get_or_alloc(c, REQUESTS_ID, sizeof *requests);
    unsigned long n = requests ? __atomic_add_fetch(requests, 1, __ATOMIC_RELAXED) : 0;
    snprintf(out, size, "[%s] %s (v2: request %lu on this connection)", c->name, request, n);
}

void conn_close(struct conn *c, char *out, unsigned long size) {
    unsigned long *requests = hotagent_shadow_get(c, REQUESTS_ID);
    snprintf(out, size, "closed %s (v2: %lu requests, shadow freed)", c->name,
             requests ? *requests : 0UL);
    hotagent_shadow_free(c, REQUESTS_ID);
    free(c);
}
