/* A tiny connection keeper on libconn.so, one command a line on stdin, one reply a line:
 *   open NAME | send NAME TEXT | close NAME | quit */
#include <stdio.h>
#include <string.h>

#include "conn.h"

#define MAX 16

static struct conn *conns[MAX];

static struct conn **find(const char *name) {
    for (int i = 0; i < MAX; i++)
        if (conns[i] && !strcmp(conns[i]->name, name)) return &conns[i];
    return NULL;
}

int main(void) {
    char line[512], reply[512], name[32], text[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        struct conn **slot;
        if (!strcmp(line, "quit")) {
            printf("bye\n");
            return 0;
        } else if (sscanf(line, "open %31s", name) == 1) {
            slot = find(name);
            for (int i = 0; !slot && i < MAX; i++)
                if (!conns[i]) slot = &conns[i];
            if (slot && !*slot) *slot = conn_open(name);
            printf(slot && *slot ? "opened %s\n" : "error cannot open %s\n", name);
        } else if (sscanf(line, "send %31s %255[^\n]", name, text) == 2 && (slot = find(name))) {
            conn_handle(*slot, text, reply, sizeof reply);
            printf("%s\n", reply);
        } else if (sscanf(line, "close %31s", name) == 1 && (slot = find(name))) {
            conn_close(*slot, reply, sizeof reply);
            *slot = NULL;
            printf("%s\n", reply);
        } else {
            printf("error %s\n", line);
        }
    }
    return 0;
}
