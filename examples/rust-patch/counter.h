/* libcounter.so: a process-wide counter. */
#ifndef COUNTER_H
#define COUNTER_H

/* The next number: 1, 2, 3, ... for the life of the process. */
unsigned long counter_next(void);
/* Which build answers. */
const char *counter_version(void);

#endif
