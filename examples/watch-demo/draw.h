/* The drawing code of the watch demo's game loop: lives in libdraw.so, edited while it runs. */
#ifndef DRAW_H
#define DRAW_H
#include <stddef.h>

/* Writes frame number `frame` as one line of text into buf (at most size bytes). */
void draw_frame(unsigned frame, char *buf, size_t size);

#endif
