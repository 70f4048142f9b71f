/* libstats.so: a request counter the program keeps calling. Version 2 grows the struct. */
#ifndef STATS_H
#define STATS_H
void stats_request(long bytes);
void stats_print(void);
#endif
