/*
 * clock.h - the gateway's two clocks, in milliseconds.  The rules library
 * reads no clock: the gateway passes it clock_wall_ms() as now_ms (windows
 * are wall-clock times, shared with other processes and hosts), and uses
 * clock_mono_ms() for timeouts, deadlines and backoff, which must not jump
 * when the wall clock is set.
 */
#ifndef GATEWAY_CLOCK_H
#define GATEWAY_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_REALTIME: ms since the epoch. */
int64_t clock_wall_ms(void);

/* CLOCK_MONOTONIC: ms since an arbitrary start, never going back. */
int64_t clock_mono_ms(void);

/* CLOCK_MONOTONIC ms from now, as a timespec for the waits that take a
 * monotonic deadline (pthread_mutex_clocklock, a condition variable set
 * to that clock). */
struct timespec clock_mono_deadline(int64_t ms);

#endif
