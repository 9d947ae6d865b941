/*
 * q_id.c - message ids.
 *
 * An id is "SSSSSS-UUUU-PPPP": seconds since the epoch, microseconds and
 * pid, each in base 62 (q_b62, ASCII order, fixed width), so that ids
 * compare as strings in the order they were made and are safe as file
 * names (only [0-9A-Za-z-]).
 *
 * Invariants:
 * - Within a process, ids are strictly increasing: the last (seconds,
 *   microseconds) pair handed out is kept in one atomic 64-bit counter
 *   (microseconds since the epoch); when the clock gives the same or an
 *   earlier microsecond, the microsecond after the last one is used
 *   (carrying into the seconds). A compare-and-swap loop plays the part of
 *   a mutex, and stays safe in a child forked while another thread was
 *   making an id (a mutex could be left locked there).
 * - Across processes the pid field differs. Two processes with the same
 *   pid can only collide if the pid is reused within the same
 *   microsecond, or within the time a process ran ahead of the clock by
 *   bumping (at most one microsecond per id made faster than the clock
 *   ticks): the known, accepted weak point.
 * - The microsecond field is always below 1000000; the pid field holds
 *   pids below 62^4 (14776336 > Linux's PID_MAX_LIMIT, 4194304).
 *
 * The split directory of a message is the last character of the
 * microsecond field (id[Q_ID_SPLIT_POS]), which is spread evenly; the
 * last character of the id belongs to the pid and would put every message
 * of one long-lived process in the same directory.
 */
#include "config.h"
#include "q_private.h"
#include "q/spool.h"

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define SECS_W 6
#define USEC_W 4
#define PID_W 4

static _Atomic uint64_t last_usec;

static void b62_put(char *dst, uint64_t v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		dst[i] = q_b62[v % 62];
		v /= 62;
	}
}

static int b62_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 36;
	return -1;
}

/* Decode width base-62 digits; -1 on a bad digit. */
static int64_t b62_get(const char *s, int width)
{
	int64_t v = 0;

	for (int i = 0; i < width; i++) {
		int d = b62_val(s[i]);
		if (d < 0)
			return -1;
		v = v * 62 + d;
	}
	return v;
}

void q_id_new(char id[Q_ID_LEN + 1])
{
	struct timespec ts;
	uint64_t now, last, next;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
		ts.tv_sec = time(NULL);
		ts.tv_nsec = 0;
	}
	now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	last = atomic_load(&last_usec);
	do {
		next = now > last ? now : last + 1;
	} while (!atomic_compare_exchange_weak(&last_usec, &last, next));

	b62_put(id, next / 1000000u, SECS_W);
	id[SECS_W] = '-';
	b62_put(id + SECS_W + 1, next % 1000000u, USEC_W);
	id[SECS_W + 1 + USEC_W] = '-';
	b62_put(id + SECS_W + 1 + USEC_W + 1, (uint64_t)getpid(), PID_W);
	id[Q_ID_LEN] = '\0';
}

/* 1 + digit value for base-62 digits, 0 for every other byte */
static const unsigned char b62_tab[256] = {
#define D(c, v) [c] = (v) + 1
	D('0', 0), D('1', 1), D('2', 2), D('3', 3), D('4', 4), D('5', 5),
	D('6', 6), D('7', 7), D('8', 8), D('9', 9),
	D('A', 10), D('B', 11), D('C', 12), D('D', 13), D('E', 14), D('F', 15),
	D('G', 16), D('H', 17), D('I', 18), D('J', 19), D('K', 20), D('L', 21),
	D('M', 22), D('N', 23), D('O', 24), D('P', 25), D('Q', 26), D('R', 27),
	D('S', 28), D('T', 29), D('U', 30), D('V', 31), D('W', 32), D('X', 33),
	D('Y', 34), D('Z', 35),
	D('a', 36), D('b', 37), D('c', 38), D('d', 39), D('e', 40), D('f', 41),
	D('g', 42), D('h', 43), D('i', 44), D('j', 45), D('k', 46), D('l', 47),
	D('m', 48), D('n', 49), D('o', 50), D('p', 51), D('q', 52), D('r', 53),
	D('s', 54), D('t', 55), D('u', 56), D('v', 57), D('w', 58), D('x', 59),
	D('y', 60), D('z', 61),
#undef D
};

bool q_id_valid(const char *id)
{
	const unsigned char *u = (const unsigned char *)id;
	unsigned usec;

	if (id == NULL)
		return false;
	/* (a NUL has no table entry, so the loop never reads past it) */
	for (int i = 0; i < Q_ID_LEN; i++) {
		if (i == SECS_W || i == SECS_W + 1 + USEC_W) {
			if (u[i] != '-')
				return false;
		} else if (b62_tab[u[i]] == 0) {
			return false;
		}
	}
	if (u[Q_ID_LEN] != '\0')
		return false;
	usec = 0;
	for (int i = SECS_W + 1; i < SECS_W + 1 + USEC_W; i++)
		usec = usec * 62 + (unsigned)(b62_tab[u[i]] - 1);
	return usec < 1000000;
}

time_t q_id_time(const char *id)
{
	if (!q_id_valid(id))
		return 0;
	return (time_t)b62_get(id, SECS_W);
}
