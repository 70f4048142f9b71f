/* libconn.so: the connections of a small server. The layout of struct conn is fixed: the program
 * allocates them (and its old copies of the library use them), so a patch cannot add a field. */
#ifndef CONN_H
#define CONN_H

struct conn {
    char name[32];
};

/* Opens a connection named NAME (NULL when out of memory). */
struct conn *conn_open(const char *name);
/* Handles one request; the reply is written to OUT (at most SIZE bytes, NUL-terminated). */
void conn_handle(struct conn *c, const char *request, char *out, unsigned long size);
/* Closes and frees the connection; a closing line goes to OUT. */
void conn_close(struct conn *c, char *out, unsigned long size);

#endif
