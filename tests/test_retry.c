/*
 * tests/test_retry.c - retry rules, keys and records (q_retry.c).
 *
 * The next-try computation is driven by a fake clock: each case is a
 * rule, an optional starting record and a sequence of failures at given
 * times (seconds after T0), each with the next try and expired flag it
 * must produce. Times in the tables are relative to T0.
 */
#include "config.h"
#include "q/retry.h"
#include "q/hints.h"
#include "q/util.h"
#include "tlib.h"

#include <CUnit/CUnit.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define T0 ((time_t)1700000000)
#define M 60LL
#define H 3600LL
#define D 86400LL
#define END (-1LL)

/* ------------------------------------------------------------------ */
/* next try: the table */

struct step {
	long long at;        /* failure time (relative), END terminates */
	long long next;      /* expected next_try (relative) */
	int expired;
};

struct ccase {
	const char *name;
	const char *algos;   /* NULL = the built-in default rule */
	long long imax;      /* interval_max (<= 0 = 24h) */
	int has_rec;         /* start from this record (else none) */
	long long ff, lt, nt;/* its times (relative) */
	int exp0;            /* its expired flag */
	struct step s[12];
};

#define NOREC 0, 0, 0, 0, 0
#define REC(ff, lt, nt, e) 1, ff, lt, nt, e

static const struct ccase ccases[] = {
	{ "F first failure", "F,1h,10m", 0, NOREC,
	  { { 0, 10 * M, 0 }, { END, 0, 0 } } },
	{ "F repeated on time", "F,1h,10m", 0, NOREC,
	  { { 0, 600, 0 }, { 600, 1200, 0 }, { 1200, 1800, 0 }, { END, 0, 0 } } },
	{ "F counts from the failure, not the plan", "F,1h,10m", 0, NOREC,
	  { { 0, 600, 0 }, { 1000, 1600, 0 }, { END, 0, 0 } } },
	{ "F failure exactly at the cutoff is inside", "F,1h,10m", 0, NOREC,
	  { { 0, 600, 0 }, { 3600, 4200, 0 }, { END, 0, 0 } } },
	{ "F one second past the cutoff expires", "F,1h,10m", 0, NOREC,
	  { { 0, 600, 0 }, { 3601, 4201, 1 }, { 5000, 5600, 1 }, { END, 0, 0 } } },
	{ "G first interval is the start", "G,1d,1h,2", 0, NOREC,
	  { { 0, 1 * H, 0 }, { END, 0, 0 } } },
	{ "G doubles", "G,1d,1h,2", 0, NOREC,
	  { { 0, 3600, 0 }, { 3600, 10800, 0 }, { 10800, 25200, 0 },
	    { 25200, 54000, 0 }, { END, 0, 0 } } },
	{ "G late retry grows from the predicted gap", "G,1d,1h,2", 0, NOREC,
	  { { 0, 3600, 0 }, { 3600, 10800, 0 }, { 30000, 44400, 0 }, { END, 0, 0 } } },
	{ "G early retry below start falls back to start", "G,1d,1h,2", 0, NOREC,
	  { { 0, 3600, 0 }, { 3600, 10800, 0 }, { 5400, 9000, 0 }, { END, 0, 0 } } },
	{ "G early retry grows from the actual gap", "G,1d,10m,2", 0, NOREC,
	  { { 0, 600, 0 }, { 600, 1800, 0 }, { 1500, 3300, 0 }, { END, 0, 0 } } },
	{ "G truncates to whole seconds", "G,1d,1000s,1.3", 0, NOREC,
	  { { 0, 1000, 0 }, { 1000, 2300, 0 }, { 2300, 3990, 0 },
	    { 3990, 6187, 0 }, { END, 0, 0 } } },
	{ "F to G: first G interval is the start, not 15m*factor",
	  "F,30m,15m; G,1d,1h,1.5", 0, NOREC,
	  { { 0, 900, 0 }, { 900, 1800, 0 }, { 1800, 2700, 0 },
	    { 2700, 6300, 0 }, { 6300, 11700, 0 }, { 11700, 19800, 0 },
	    { END, 0, 0 } } },
	{ "G to F at 16h (exactly 16h is still G)", NULL, 0,
	  REC(0, 50000, 60000, 0),
	  { { 57600, 69000, 0 }, { END, 0, 0 } } },
	{ "G to F one second after 16h", NULL, 0,
	  REC(0, 50000, 60000, 0),
	  { { 57601, 57601 + 6 * H, 0 }, { END, 0, 0 } } },
	{ "F,G,F custom transitions", "F,1h,20m; G,3h,30m,2; F,1d,2h", 0, NOREC,
	  { { 0, 1200, 0 }, { 3600, 4800, 0 }, { 4800, 6600, 0 },
	    { 6600, 10200, 0 }, { 10801, 10801 + 7200, 0 }, { END, 0, 0 } } },
	{ "interval_max caps G", "G,30d,1h,10", 2 * H, NOREC,
	  { { 0, 3600, 0 }, { 3600, 3600 + 7200, 0 }, { 10800, 18000, 0 },
	    { END, 0, 0 } } },
	{ "interval_max caps F", "F,1d,5h", 1 * H, NOREC,
	  { { 0, 3600, 0 }, { END, 0, 0 } } },
	{ "interval_max 0 means 24h", "G,30d,10h,3", 0, NOREC,
	  { { 0, 36000, 0 }, { 36000, 36000 + 86400, 0 }, { END, 0, 0 } } },
	{ "default rule: last try inside 4d", NULL, 0,
	  REC(0, 4 * D - 6 * H, 4 * D, 0),
	  { { 4 * D, 4 * D + 6 * H, 0 }, { END, 0, 0 } } },
	{ "default rule: expired after 4d, keeps F,6h", NULL, 0,
	  REC(0, 4 * D - 6 * H, 4 * D, 0),
	  { { 4 * D, 4 * D + 6 * H, 0 }, { 4 * D + 6 * H, 4 * D + 12 * H, 1 },
	    { 4 * D + 12 * H, 4 * D + 18 * H, 1 }, { END, 0, 0 } } },
	{ "a rule without algorithms expires at once", "", 0, NOREC,
	  { { 0, 0, 1 }, { 100, 100, 1 }, { END, 0, 0 } } },
	{ "a record older than retry_data_expire starts afresh", "F,1h,10m", 0,
	  REC(-10 * D, -8 * D, -8 * D + 600, 1),
	  { { 0, 600, 0 }, { 600, 1200, 0 }, { END, 0, 0 } } },
	{ "exactly retry_data_expire old is kept", "F,1h,10m", 0,
	  REC(-7 * D - 100, -7 * D, -7 * D + 600, 1),
	  { { 0, 600, 1 }, { END, 0, 0 } } },
	{ "expired flag cleared when inside a (longer) rule", "F,10d,1h", 0,
	  REC(0, 4 * D, 4 * D + 6 * H, 1),
	  { { 5 * D, 5 * D + 3600, 0 }, { END, 0, 0 } } },
	{ "clock went backwards: G restarts at start", "G,1d,1h,2", 0,
	  REC(0, 1000, 2000, 0),
	  { { 500, 500 + 3600, 0 }, { END, 0, 0 } } },
	{ "G capped and then grows from the capped gap", "G,30d,1h,3", 5 * H, NOREC,
	  { { 0, 3600, 0 }, { 3600, 3600 + 10800, 0 }, { 14400, 14400 + 18000, 0 },
	    { 32400, 32400 + 18000, 0 }, { END, 0, 0 } } },
	{ "lowercase letters and no spaces", "f,1h,5m;g,2h,10m,2", 0, NOREC,
	  { { 0, 300, 0 }, { 3601, 3601 + 600, 0 }, { END, 0, 0 } } },
};

static void parse_rule(const char *algos, struct q_retry_rule *r)
{
	const char *err = NULL;

	memset(r, 0, sizeof(*r));
	if (algos == NULL) {
		*r = *q_retry_default_rule();
		return;
	}
	if (q_retry_parse_algos(algos, r, &err) != 0) {
		fprintf(stderr, "parse %s: %s\n", algos, err);
		CU_FAIL_FATAL("rule does not parse");
	}
}

static void test_compute_table(void)
{
	size_t i, j;

	CU_ASSERT_TRUE(sizeof(ccases) / sizeof(ccases[0]) >= 25);
	for (i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
		const struct ccase *c = &ccases[i];
		struct q_retry_rule rule;
		struct q_retry_rec rec;

		parse_rule(c->algos, &rule);
		memset(&rec, 0, sizeof(rec));
		if (c->has_rec) {
			rec.first_failed = T0 + c->ff;
			rec.last_try = T0 + c->lt;
			rec.next_try = T0 + c->nt;
			rec.expired = c->exp0;
		}
		for (j = 0; c->s[j].at != END; j++) {
			q_retry_compute(&rec, &rule, c->imax, T0 + c->s[j].at);
			if (rec.next_try != T0 + c->s[j].next ||
			    rec.expired != (c->s[j].expired != 0) ||
			    rec.last_try != T0 + c->s[j].at) {
				fprintf(stderr, "\n  case \"%s\" step %zu: at %lld "
					"next %lld expired %d last %lld, want next "
					"%lld expired %d\n", c->name, j, c->s[j].at,
					(long long)(rec.next_try - T0), rec.expired,
					(long long)(rec.last_try - T0),
					c->s[j].next, c->s[j].expired);
				CU_FAIL("compute case");
			}
		}
		if (c->algos != NULL)
			q_retry_rule_clear(&rule);
	}
}

/* The whole life of a dead host under the default rule, failing at each
 * next try: 15m for 2h, then 1h, 1.5h, 2.25h, ... (G from the 15m gap
 * starts at 1h), then 6h until 4d after the first failure. */
static void test_compute_default_life(void)
{
	static const long long want[] = {
		0, 900, 1800, 2700, 3600, 4500, 5400, 6300, 7200,
		8100, 11700, 17100, 25200, 37350, 55575, 82912,
		104512, 126112, 147712, 169312, 190912, 212512, 234112,
		255712, 277312, 298912, 320512, 342112, 363712,
	};
	struct q_retry_rec rec;
	size_t i, n = sizeof(want) / sizeof(want[0]);
	time_t now = T0;

	memset(&rec, 0, sizeof(rec));
	for (i = 0; i < n; i++) {
		CU_ASSERT_EQUAL((long long)(now - T0), want[i]);
		q_retry_compute(&rec, q_retry_default_rule(), 0, now);
		CU_ASSERT_EQUAL(rec.first_failed, T0);
		CU_ASSERT_EQUAL(rec.expired, i == n - 1);
		if (rec.expired != (i == n - 1))
			fprintf(stderr, "\n  default life: step %zu at %lld\n", i,
				(long long)(now - T0));
		now = rec.next_try;
	}
}

static void test_due_and_use(void)
{
	struct q_retry_rec rec;
	const struct q_retry_rule *def = q_retry_default_rule();

	memset(&rec, 0, sizeof(rec));
	CU_ASSERT_TRUE(q_retry_due(NULL, T0));
	q_retry_compute(&rec, def, 0, T0);
	CU_ASSERT_FALSE(q_retry_due(&rec, T0 + 899));
	CU_ASSERT_TRUE(q_retry_due(&rec, T0 + 900));

	CU_ASSERT_EQUAL(q_retry_final_cutoff(def), 4 * D);
	CU_ASSERT_EQUAL(q_retry_host_use(NULL, def, T0, T0), Q_RETRY_USE);
	CU_ASSERT_EQUAL(q_retry_host_use(&rec, def, T0, T0 + 900), Q_RETRY_USE);
	CU_ASSERT_EQUAL(q_retry_host_use(&rec, def, T0, T0 + 10), Q_RETRY_SKIP);
	/* a message older than the final cutoff gets its one attempt */
	CU_ASSERT_EQUAL(q_retry_host_use(&rec, def, T0 - 5 * D, T0 + 10),
			Q_RETRY_USE);
	rec.expired = true;
	CU_ASSERT_EQUAL(q_retry_host_use(&rec, def, T0 - 5 * D, T0 + 10),
			Q_RETRY_SKIP_EXPIRED);
	/* delay_after_cutoff = false: tried unless tried since arrival */
	CU_ASSERT_TRUE(q_retry_try_after_cutoff(&rec, T0 + 1));
	CU_ASSERT_FALSE(q_retry_try_after_cutoff(&rec, T0));
	rec.expired = false;
	CU_ASSERT_FALSE(q_retry_try_after_cutoff(&rec, T0 + 1));
}

/* Times at the edges: huge intervals in rules, huge factors, a huge
 * interval_max, a clock near the ends of time_t. Each case fails at the
 * next try, again and again; every step must give the interval in its
 * table (next_try - now, never wrapped, never past the end of time_t),
 * keep first_failed (a record it wrote is never later taken for a
 * damaged one and restarted, or forgotten as older than retry_data_expire),
 * and set expired as the table says. One interval is at most 3d12h (half
 * of retry_data_expire) whatever interval_max says. */
#define LIMIT (3 * D + 12 * H)
#define TMAX ((long long)LLONG_MAX)

struct ostep {
	long long ival;      /* expected next_try - now; END terminates */
	int expired;
};

struct ocase {
	const char *name;
	const char *algos;
	long long imax;
	long long now0;      /* absolute time of the first failure */
	struct ostep s[5];
};

static const struct ocase ocases[] = {
	{ "interval of LLONG_MAX seconds, interval_max LLONG_MAX",
	  "F,1h,9223372036854775807s", LLONG_MAX, T0,
	  { { LIMIT, 0 }, { LIMIT, 1 }, { LIMIT, 1 }, { END, 0 } } },
	{ "interval of 99999999999d, interval_max LLONG_MAX",
	  "F,1h,99999999999d", LLONG_MAX, T0,
	  { { LIMIT, 0 }, { LIMIT, 1 }, { LIMIT, 1 }, { END, 0 } } },
	{ "interval of 99999999999d, default interval_max",
	  "F,1h,99999999999d", 0, T0,
	  { { D, 0 }, { D, 1 }, { END, 0 } } },
	{ "huge factor, interval_max LLONG_MAX (expired after 4d)",
	  "G,4d,1h,999999", LLONG_MAX, T0,
	  { { H, 0 }, { LIMIT, 0 }, { LIMIT, 0 }, { LIMIT, 1 }, { END, 0 } } },
	{ "interval_max of 2 years is a year",
	  "G,3650d,1d,100", 2 * LIMIT, T0,
	  { { D, 0 }, { LIMIT, 0 }, { END, 0 } } },
	{ "cutoff of 99999999999d", "F,99999999999d,1s", 0, T0,
	  { { 1, 0 }, { 1, 0 }, { END, 0 } } },
	{ "cutoff of LLONG_MAX seconds", "F,9223372036854775807s,1h", 0, T0,
	  { { H, 0 }, { H, 0 }, { END, 0 } } },
	{ "clock 100 s before the end of time_t", NULL, 0, TMAX - 100,
	  { { 100, 0 }, { 0, 0 }, { 0, 0 }, { END, 0 } } },
	{ "clock at the end of time_t", "F,1h,10m", LLONG_MAX, TMAX,
	  { { 0, 0 }, { 0, 0 }, { END, 0 } } },
	{ "G near the end of time_t", "G,1d,1h,2", 0, TMAX - 2 * H,
	  { { H, 0 }, { H, 0 }, { 0, 0 }, { END, 0 } } },
	{ "clock near the start of time_t", "F,1h,10m", 0, LLONG_MIN + 10,
	  { { 600, 0 }, { END, 0 } } },
};

static void test_compute_overflow(void)
{
	size_t i, j;

	for (i = 0; i < sizeof(ocases) / sizeof(ocases[0]); i++) {
		const struct ocase *c = &ocases[i];
		struct q_retry_rule rule;
		struct q_retry_rec rec;
		time_t now = (time_t)c->now0;

		parse_rule(c->algos, &rule);
		memset(&rec, 0, sizeof(rec));
		for (j = 0; c->s[j].ival != END; j++) {
			long long ival;

			q_retry_compute(&rec, &rule, c->imax, now);
			/* in long double: a wrapped next_try shows as such
			 * without overflowing the test's own arithmetic */
			ival = (long long)((long double)rec.next_try -
					   (long double)now);
			if (ival != c->s[j].ival || rec.next_try < now ||
			    (now >= 0 && rec.next_try < 0) ||
			    rec.last_try != now ||
			    rec.first_failed != (time_t)c->now0 ||
			    rec.expired != (c->s[j].expired != 0)) {
				fprintf(stderr, "\n  case \"%s\" step %zu: next_try "
					"%lld (interval %lld) expired %d "
					"first_failed %lld, want interval %lld "
					"expired %d first_failed %lld\n", c->name,
					j, (long long)rec.next_try, ival,
					rec.expired, (long long)rec.first_failed,
					c->s[j].ival, c->s[j].expired, c->now0);
				CU_FAIL("overflow case");
				break;
			}
			now = rec.next_try;
		}
		if (c->algos != NULL)
			q_retry_rule_clear(&rule);
	}
}

/* H: G's interval g, then one in [max(g/2, start), g] (g when the cap
 * put g below start), chosen by a hash of the key and the record's
 * times. For a sweep of records (elapsed time, last gap, lateness) under
 * several rules, the H result is compared with what the same rule
 * written with G gives for the same record: same expired flag, same
 * last_try, an interval within the bounds; over the sweep the intervals
 * must not all sit at one end (the choice is really spread). */
struct hcase {
	const char *h, *g;   /* the rule with H, and with G in its place */
	long long imax;
};

static const struct hcase hcases[] = {
	{ "H,4d,1h,1.5", "G,4d,1h,1.5", 0 },
	{ "H,16h,10m,2", "G,16h,10m,2", 0 },
	{ "F,2h,15m; H,16h,1h,1.5; F,4d,6h", "F,2h,15m; G,16h,1h,1.5; F,4d,6h", 0 },
	{ "H,30d,1h,3", "G,30d,1h,3", 5 * H },      /* capped */
	{ "H,1d,2h,1.1", "G,1d,2h,1.1", H },        /* cap below start */
	{ "H,2d,1s,1.001", "G,2d,1s,1.001", 0 },    /* tiny intervals */
};

static void h_bounds(const struct q_retry_algo *a, long long g,
		     long long *lo_r)
{
	long long lo = g / 2, p1 = a->p1 < g ? a->p1 : g;

	*lo_r = lo > p1 ? lo : p1;
}

static void test_compute_h(void)
{
	static const long long elapsed[] = { 0, 1, 30 * M, 3 * H, 15 * H, 3 * D, 5 * D };
	static const long long gaps[] = { 0, 1, 10 * M, H, 2 * H, 7 * H, 20 * H };
	static const long long late[] = { 0, 7, 40 * M };
	static const char *const keys[] = { "T:mx.example.com:192.0.2.1", NULL };
	size_t i, e, g, l, k;
	unsigned n = 0, nrange = 0, at_g = 0, at_lo = 0, inside = 0;

	for (i = 0; i < sizeof(hcases) / sizeof(hcases[0]); i++) {
		struct q_retry_rule rh, rg;

		parse_rule(hcases[i].h, &rh);
		parse_rule(hcases[i].g, &rg);
		for (e = 0; e < sizeof(elapsed) / sizeof(elapsed[0]); e++)
		for (g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++)
		for (l = 0; l < sizeof(late) / sizeof(late[0]); l++)
		for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			struct q_retry_rec rech, recg;
			time_t now = T0 + elapsed[e] + gaps[g] + late[l];
			long long ih, ig, lo;
			const struct q_retry_algo *a = NULL;
			size_t j;

			memset(&rech, 0, sizeof(rech));
			if (elapsed[e] + gaps[g] > 0) {
				rech.first_failed = T0;
				rech.last_try = T0 + elapsed[e];
				rech.next_try = T0 + elapsed[e] + gaps[g];
			}
			recg = rech;
			q_retry_compute_key(&rech, &rh, hcases[i].imax, keys[k], now);
			q_retry_compute(&recg, &rg, hcases[i].imax, now);
			ih = (long long)(rech.next_try - now);
			ig = (long long)(recg.next_try - now);
			for (j = 0; j < rh.nalgo && a == NULL; j++)
				if (now - rech.first_failed <= rh.algo[j].cutoff)
					a = &rh.algo[j];
			if (a == NULL)
				a = &rh.algo[rh.nalgo - 1];
			if (a->type != 'H') {
				/* F parts of the rule: exactly as G's twin */
				CU_ASSERT_EQUAL(ih, ig);
				continue;
			}
			h_bounds(a, ig, &lo);
			n++;
			if (lo + 2 < ig) {   /* a range to choose from */
				nrange++;
				at_g += ih == ig;
				at_lo += ih == lo;
				inside += ih > lo && ih < ig;
			}
			if (ih < lo || ih > ig || rech.expired != recg.expired ||
			    rech.last_try != now || rech.first_failed != recg.first_failed) {
				fprintf(stderr, "\n  H case \"%s\" elapsed %lld gap %lld "
					"late %lld key %s: interval %lld, want "
					"[%lld, %lld]\n", hcases[i].h, elapsed[e],
					gaps[g], late[l], keys[k] ? keys[k] : "-",
					ih, lo, ig);
				CU_FAIL("H out of bounds");
			}
		}
		q_retry_rule_clear(&rh);
		q_retry_rule_clear(&rg);
	}
	/* spread: where there is a range (g above the floor; G gives
	 * start after a gap shorter than start, and then H has no choice),
	 * most land strictly inside it */
	CU_ASSERT(n >= 300 && nrange >= 100);
	CU_ASSERT(inside > nrange * 3 / 4);
	CU_ASSERT(at_g < nrange / 8 && at_lo < nrange / 8);
	if (!(inside > nrange * 3 / 4))
		fprintf(stderr, "\n  H: %u results, %u with a range: %u inside, "
			"%u at g, %u at the floor\n", n, nrange, inside, at_g,
			at_lo);
}

/* A host failing at each next try for its whole life under an H rule:
 * every interval within the bounds of G's interval for that record,
 * expiry at the cutoff as for G; and the same life again gives the same
 * next tries (no hidden state, no real randomness). */
static void h_life(const char *key, long long *out, size_t n)
{
	struct q_retry_rule rh, rg;
	struct q_retry_rec rec;
	time_t now = T0;
	size_t i;

	parse_rule("F,2h,15m; H,16h,1h,1.5; H,4d,6h,1.2", &rh);
	parse_rule("F,2h,15m; G,16h,1h,1.5; G,4d,6h,1.2", &rg);
	memset(&rec, 0, sizeof(rec));
	for (i = 0; i < n; i++) {
		struct q_retry_rec g = rec;
		long long ih, ig, lo;
		bool in_h = now - T0 > 2 * H;

		q_retry_compute(&g, &rg, 0, now);
		q_retry_compute_key(&rec, &rh, 0, key, now);
		ih = (long long)(rec.next_try - now);
		ig = (long long)(g.next_try - now);
		lo = ig / 2 > (now - T0 <= 16 * H ? H : 6 * H) ?
			ig / 2 : (now - T0 <= 16 * H ? H : 6 * H);
		if (lo > ig)
			lo = ig;
		CU_ASSERT_EQUAL(rec.expired, g.expired);
		CU_ASSERT_EQUAL(rec.expired, now - T0 > 4 * D);
		if (in_h && (ih < lo || ih > ig)) {
			fprintf(stderr, "\n  H life %s step %zu at %lld: interval "
				"%lld, want [%lld, %lld]\n", key, i,
				(long long)(now - T0), ih, lo, ig);
			CU_FAIL("H life out of bounds");
		}
		if (!in_h)
			CU_ASSERT_EQUAL(ih, 15 * M);
		out[i] = (long long)(rec.next_try - T0);
		now = rec.next_try;
	}
	q_retry_rule_clear(&rh);
	q_retry_rule_clear(&rg);
}

static void test_compute_h_life(void)
{
	long long a[60], b[60], c[60];

	h_life("T:mx1.example.com:192.0.2.1", a, 60);
	h_life("T:mx1.example.com:192.0.2.1", b, 60);
	h_life("T:mx2.example.com:192.0.2.2", c, 60);
	CU_ASSERT(memcmp(a, b, sizeof(a)) == 0);     /* deterministic */
	CU_ASSERT(memcmp(a, c, sizeof(a)) != 0);     /* another host differs */
	CU_ASSERT(a[59] > 4 * D);                    /* it reached expiry */
}

/* The same record and clock for 32 hosts: H gives each key its own next
 * try (within a range of 2701 seconds, nearly all distinct); each key
 * gives the same answer every time, and so does q_retry_fail's record. */
static void test_compute_h_keys(void)
{
	struct q_retry_rule rh;
	time_t first[32];
	unsigned distinct = 0;
	size_t i, j;

	parse_rule("H,4d,1h,1.5", &rh);
	for (i = 0; i < 32; i++) {
		char key[64];
		struct q_retry_rec r1, r2;

		snprintf(key, sizeof(key), "T:mx%zu.example.com:192.0.2.%zu", i, i);
		memset(&r1, 0, sizeof(r1));
		r1.first_failed = T0;
		r1.last_try = T0 + 3 * H;
		r1.next_try = T0 + 4 * H;          /* last gap 1h: g = 1.5h */
		r2 = r1;
		q_retry_compute_key(&r1, &rh, 0, key, T0 + 4 * H);
		q_retry_compute_key(&r2, &rh, 0, key, T0 + 4 * H);
		CU_ASSERT_EQUAL(r1.next_try, r2.next_try);
		CU_ASSERT(r1.next_try - (T0 + 4 * H) >= 45 * M &&
			  r1.next_try - (T0 + 4 * H) <= 90 * M);
		first[i] = r1.next_try;
		for (j = 0; j < i && first[j] != first[i]; j++)
			;
		distinct += j == i;
	}
	CU_ASSERT(distinct >= 28);
	if (distinct < 28)
		fprintf(stderr, "\n  H: %u distinct next tries of 32\n", distinct);
	/* and q_retry_compute (no key) is deterministic too */
	{
		struct q_retry_rec r1, r2;

		memset(&r1, 0, sizeof(r1));
		r1.first_failed = T0;
		r1.last_try = T0 + 3 * H;
		r1.next_try = T0 + 4 * H;
		r2 = r1;
		q_retry_compute(&r1, &rh, 0, T0 + 5 * H);
		q_retry_compute(&r2, &rh, 0, T0 + 5 * H);
		CU_ASSERT_EQUAL(r1.next_try, r2.next_try);
	}
	q_retry_rule_clear(&rh);
}

/* ------------------------------------------------------------------ */
/* parsing the algorithm list */

struct pcase {
	const char *in;
	const char *err;     /* NULL: must parse; else a substring of the error */
	size_t n;
	struct q_retry_algo a[3];
};

static const struct pcase pcases[] = {
	{ "F,2h,15m; G,16h,1h,1.5; F,4d,6h", NULL, 3,
	  { { 'F', 7200, 900, 0 }, { 'G', 57600, 3600, 1.5 }, { 'F', 345600, 21600, 0 } } },
	{ "F,2h,15m;G,16h,1h,1.5;F,4d,6h", NULL, 3,
	  { { 'F', 7200, 900, 0 }, { 'G', 57600, 3600, 1.5 }, { 'F', 345600, 21600, 0 } } },
	{ "  f , 2h , 15m ;\tg,16h,1h30m,2.25 ; ", NULL, 2,
	  { { 'F', 7200, 900, 0 }, { 'G', 57600, 5400, 2.25 } } },
	{ "F,1w,1d", NULL, 1, { { 'F', 604800, 86400, 0 } } },
	/* factors count to 1/1000, rounded at the fourth decimal */
	{ "G,2d,10m,2.0912354775804", NULL, 1, { { 'G', 172800, 600, 2.091 } } },
	{ "G,2d,10m,1.0995", NULL, 1, { { 'G', 172800, 600, 1.1 } } },
	{ "G,2d,10m,1.0004", "item 1: G needs a factor greater than 1", 0, { { 0, 0, 0, 0 } } },
	{ "", NULL, 0, { { 0, 0, 0, 0 } } },
	{ "G,16h,1h,1", "item 1: G needs a factor greater than 1", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m; G,16h,1h,0.5", "item 2: G needs a factor greater than 1", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m; G,1h,1h,1.5", "item 2: cutoff 1h is not after the previous cutoff 2h", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m; F,2h,15m", "item 2: cutoff 2h is not after", 0, { { 0, 0, 0, 0 } } },
	{ "H,4d,1h,1.5", NULL, 1, { { 'H', 345600, 3600, 1.5 } } },
	{ "F,2h,15m; h,16h,1h,2; H,4d,6h,1.0995", NULL, 3,
	  { { 'F', 7200, 900, 0 }, { 'H', 57600, 3600, 2 }, { 'H', 345600, 21600, 1.1 } } },
	{ "H,16h,1h", "item 1: H needs a cutoff, a first interval and a factor (H,cutoff,start,factor)", 0, { { 0, 0, 0, 0 } } },
	{ "H,16h,1h,1.5,2", "item 1: H takes 3 values (H,cutoff,start,factor)", 0, { { 0, 0, 0, 0 } } },
	{ "H,16h,1h,1", "item 1: H needs a factor greater than 1", 0, { { 0, 0, 0, 0 } } },
	{ "H,16h,0,2", "item 1: the first interval must be greater than 0", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m; G,16h,1h,1.5; F,4d,6h; X,5d,1h,2", "item 4: unknown algorithm 'X' (F, G or H expected)", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h", "item 1: F needs a cutoff and an interval", 0, { { 0, 0, 0, 0 } } },
	{ "F 2h 15m", "item 1: F needs a cutoff and an interval", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m,3", "item 1: F takes 2 values", 0, { { 0, 0, 0, 0 } } },
	{ "G,16h,1h", "item 1: G needs a cutoff, a first interval and a factor", 0, { { 0, 0, 0, 0 } } },
	{ "G,16h,1h,1.5,2", "item 1: G takes 3 values", 0, { { 0, 0, 0, 0 } } },
	{ "F,2x,15m", "item 1: bad cutoff \"2x\"", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,abc", "item 1: bad interval \"abc\"", 0, { { 0, 0, 0, 0 } } },
	{ "G,2h,1h,1.5.2", "item 1: bad factor \"1.5.2\"", 0, { { 0, 0, 0, 0 } } },
	{ "G,2h,1h,x", "item 1: bad factor", 0, { { 0, 0, 0, 0 } } },
	{ "G,2h,1h,1,5", "item 1: G takes 3 values", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m;;F,4d,6h", "item 2: empty", 0, { { 0, 0, 0, 0 } } },
	{ "F,0s,15m", "item 1: the cutoff must be greater than 0", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,0", "item 1: the interval must be greater than 0", 0, { { 0, 0, 0, 0 } } },
	{ "G,2h,0,2", "item 1: the first interval must be greater than 0", 0, { { 0, 0, 0, 0 } } },
	{ "F,2h,15m G,16h,1h,1.5", "item 1: unexpected", 0, { { 0, 0, 0, 0 } } },
	{ "F,,15m", "item 1: missing or overlong cutoff", 0, { { 0, 0, 0, 0 } } },
	{ "F,-2h,15m", "item 1: bad cutoff", 0, { { 0, 0, 0, 0 } } },
};

static void test_parse_table(void)
{
	size_t i, j;

	for (i = 0; i < sizeof(pcases) / sizeof(pcases[0]); i++) {
		const struct pcase *c = &pcases[i];
		struct q_retry_rule r;
		const char *err = NULL;
		int ret;

		memset(&r, 0, sizeof(r));
		ret = q_retry_parse_algos(c->in, &r, &err);
		if (c->err == NULL) {
			CU_ASSERT_EQUAL(ret, 0);
			if (ret != 0) {
				fprintf(stderr, "\n  \"%s\": %s\n", c->in, err);
				continue;
			}
			CU_ASSERT_EQUAL(r.nalgo, c->n);
			for (j = 0; j < c->n && j < r.nalgo; j++) {
				CU_ASSERT_EQUAL(r.algo[j].type, c->a[j].type);
				CU_ASSERT_EQUAL(r.algo[j].cutoff, c->a[j].cutoff);
				CU_ASSERT_EQUAL(r.algo[j].p1, c->a[j].p1);
				CU_ASSERT_DOUBLE_EQUAL(r.algo[j].factor, c->a[j].factor, 1e-9);
			}
			q_retry_rule_clear(&r);
		} else {
			CU_ASSERT_EQUAL(ret, -1);
			CU_ASSERT_PTR_NULL(r.algo);
			if (ret != -1 || err == NULL || strstr(err, c->err) == NULL) {
				fprintf(stderr, "\n  \"%s\": got \"%s\", want \"%s\"\n",
					c->in, ret == -1 && err ? err : "(success)",
					c->err);
				CU_FAIL("parse error text");
			}
			q_retry_rule_clear(&r);
		}
	}
}

/* The same list fed in every split: the parser sees only whole strings,
 * but a list cut short at any byte must be refused or parse to a prefix,
 * never crash or read past the end. */
static void test_parse_prefixes(void)
{
	const char *full = "F,2h,15m; G,16h,1h,1.5; F,4d,6h";
	size_t len = strlen(full), i;

	for (i = 0; i <= len; i++) {
		char *s = strndup(full, i);
		struct q_retry_rule r;
		const char *err;
		int ret;

		memset(&r, 0, sizeof(r));
		ret = q_retry_parse_algos(s, &r, &err);
		CU_ASSERT(ret == 0 || ret == -1);
		if (ret == 0)
			CU_ASSERT(r.nalgo <= 3);
		if (i == len)
			CU_ASSERT(ret == 0 && r.nalgo == 3);
		q_retry_rule_clear(&r);
		free(s);
	}
}

/* ------------------------------------------------------------------ */
/* error kinds */

static void test_kind_valid(void)
{
	static const char *const good[] = {
		"*", "refused", "refused_A", "refused_MX", "REFUSED_mx",
		"timeout", "timeout_A", "timeout_MX", "timeout_connect",
		"timeout_connect_A", "timeout_connect_MX", "lost_connection",
		"tls_required", "auth_failed", "quota", "lookup", "mail_4xx",
		"rcpt_4xx", "data_4xx", "rcpt_45x", "data_452", "MAIL_42X",
	};
	static const char *const bad[] = {
		"", "refused_B", "refused_", "refusedMX", "timeout_",
		"timeout_connect_", "timeout_foo", "timeout_connect_AA",
		"timeout_connectA", "rcpt_5xx", "rcpt_4x2", "rcpt_4",
		"rcpt_4xxx", "mail_", "quota_5d", "protocol", "**", "rcpt 4xx",
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CU_ASSERT_TRUE(q_retry_kind_valid(good[i]));
		if (!q_retry_kind_valid(good[i]))
			fprintf(stderr, "\n  should be valid: %s\n", good[i]);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT_FALSE(q_retry_kind_valid(bad[i]));
		if (q_retry_kind_valid(bad[i]))
			fprintf(stderr, "\n  should be invalid: %s\n", bad[i]);
	}
	CU_ASSERT_FALSE(q_retry_kind_valid(NULL));
}

struct kcase {
	const char *rule, *kind;
	int code;
	bool match;
};

static const struct kcase kcases[] = {
	{ "*", "refused", 0, true },
	{ "*", "protocol", 0, true },
	{ "refused", "refused", 0, true },
	{ "refused", "refused_MX", 0, true },
	{ "refused", "refused_A", 0, true },
	{ "refused_MX", "refused_MX", 0, true },
	{ "refused_MX", "refused_A", 0, false },
	{ "refused_MX", "refused", 0, false },
	{ "refused_A", "refused_A", 0, true },
	{ "timeout", "timeout", 0, true },
	{ "timeout", "timeout_connect", 0, true },
	{ "timeout", "timeout_connect_MX", 0, true },
	{ "timeout", "timeout_A", 0, true },
	{ "timeout_connect", "timeout", 0, false },
	{ "timeout_connect", "timeout_connect", 0, true },
	{ "timeout_connect", "timeout_connect_A", 0, true },
	{ "timeout_connect_MX", "timeout_connect_A", 0, false },
	{ "timeout_connect_MX", "timeout_connect_MX", 0, true },
	{ "timeout_connect_MX", "timeout_MX", 0, false },
	{ "timeout_MX", "timeout_connect_MX", 0, true },
	{ "timeout_MX", "timeout_MX", 0, true },
	{ "timeout_MX", "timeout", 0, false },
	{ "timeout", "refused", 0, false },
	{ "refused", "timeout_connect", 0, false },
	{ "rcpt_4xx", "rcpt_4xx", 452, true },
	{ "rcpt_4xx", "rcpt_4xx", 0, true },
	{ "rcpt_45x", "rcpt_4xx", 451, true },
	{ "rcpt_45x", "rcpt_4xx", 452, true },
	{ "rcpt_45x", "rcpt_4xx", 421, false },
	{ "rcpt_45x", "rcpt_4xx", 0, false },
	{ "rcpt_452", "rcpt_4xx", 452, true },
	{ "rcpt_452", "rcpt_4xx", 451, false },
	{ "rcpt_452", "rcpt_452", 0, true },
	{ "rcpt_45x", "rcpt_452", 0, true },
	{ "rcpt_4xx", "mail_4xx", 452, false },
	{ "mail_4xx", "mail_4xx", 421, true },
	{ "mail_42x", "mail_4xx", 421, true },
	{ "data_45x", "data_4xx", 450, true },
	{ "data_45x", "data_4xx", 550, false },
	{ "RCPT_4XX", "rcpt_4xx", 452, true },
	{ "lost_connection", "lost_connection", 0, true },
	{ "lost_connection", "timeout", 0, false },
	{ "tls_required", "tls_required", 0, true },
	{ "lookup", "lookup", 0, true },
	{ "lookup", "refused", 0, false },
	{ "auth_failed", "auth_failed", 0, true },
	{ "quota", "quota", 0, true },
	{ "rcpt_4xx", NULL, 452, false },
	{ "bogus", "bogus", 0, false },
};

static void test_kind_match(void)
{
	size_t i;

	for (i = 0; i < sizeof(kcases) / sizeof(kcases[0]); i++) {
		const struct kcase *c = &kcases[i];
		bool got = q_retry_kind_match(c->rule, c->kind, c->code);

		CU_ASSERT_EQUAL(got, c->match);
		if (got != c->match)
			fprintf(stderr, "\n  rule %s failure %s %d: got %d\n",
				c->rule, c->kind ? c->kind : "(null)", c->code, got);
	}
	CU_ASSERT_TRUE(q_retry_kind_match(NULL, "anything", 0));
}

/* ------------------------------------------------------------------ */
/* finding the rule */

static void test_find_rule(void)
{
	static const struct {
		const char *pattern, *kind, *algos;
	} defs[] = {
		{ "*.example.com", "refused_MX", "F,1h,5m" },
		{ "mail.example.org", "*", "F,2h,10m" },
		{ "*@example.net", "rcpt_45x", "F,3h,30m" },
		{ "example.net", "timeout", "F,4h,1h" },
		{ "*", "lookup", "F,5h,2h" },
	};
	static const struct {
		const char *host, *domain, *kind;
		int code;
		int want;            /* index, or -1 = the default rule */
	} cases[] = {
		{ "mx1.example.com", "example.com", "refused_MX", 0, 0 },
		{ "MX1.Example.COM", "example.com", "refused_MX", 0, 0 },
		{ "mx1.example.com", "example.com", "refused_A", 0, -1 },
		{ "mail.example.org", "other.org", "timeout", 0, 1 },
		{ "mx.other", "mail.example.org", "refused", 0, 1 },
		{ "mx.other", "example.net", "rcpt_4xx", 451, 2 },
		{ "mx.other", "example.net", "rcpt_4xx", 421, -1 },
		{ "mx.other", "example.net", "timeout_connect", 0, 3 },
		{ NULL, "anything.test", "lookup", 0, 4 },
		{ "x.test", NULL, "lost_connection", 0, -1 },
		{ "alice@example.net", NULL, "rcpt_4xx", 452, 2 },
		{ "alice@example.net", NULL, "timeout", 0, 3 },
	};
	struct q_retry_rule rules[5];
	size_t i;

	for (i = 0; i < 5; i++) {
		parse_rule(defs[i].algos, &rules[i]);
		rules[i].pattern = strdup(defs[i].pattern);
		rules[i].kind = strdup(defs[i].kind);
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct q_retry_rule *got, *want;

		got = q_retry_find_rule(rules, 5, cases[i].host, cases[i].domain,
					cases[i].kind, cases[i].code);
		want = cases[i].want < 0 ? q_retry_default_rule()
					 : &rules[cases[i].want];
		CU_ASSERT_PTR_EQUAL(got, want);
		if (got != want)
			fprintf(stderr, "\n  find %s/%s %s: got %s\n",
				cases[i].host ? cases[i].host : "-",
				cases[i].domain ? cases[i].domain : "-",
				cases[i].kind, got->pattern);
	}
	CU_ASSERT_PTR_EQUAL(q_retry_find_rule(NULL, 0, "h", "d", "refused", 0),
			    q_retry_default_rule());
	for (i = 0; i < 5; i++)
		q_retry_rule_clear(&rules[i]);
}

static void test_default_rule(void)
{
	const struct q_retry_rule *r = q_retry_default_rule();

	CU_ASSERT_STRING_EQUAL(r->pattern, "*");
	CU_ASSERT_STRING_EQUAL(r->kind, "*");
	CU_ASSERT_EQUAL_FATAL(r->nalgo, 3);
	CU_ASSERT_EQUAL(r->algo[0].type, 'F');
	CU_ASSERT_EQUAL(r->algo[0].cutoff, 2 * H);
	CU_ASSERT_EQUAL(r->algo[0].p1, 15 * M);
	CU_ASSERT_EQUAL(r->algo[1].type, 'G');
	CU_ASSERT_EQUAL(r->algo[1].cutoff, 16 * H);
	CU_ASSERT_EQUAL(r->algo[1].p1, 1 * H);
	CU_ASSERT_DOUBLE_EQUAL(r->algo[1].factor, 1.5, 1e-12);
	CU_ASSERT_EQUAL(r->algo[2].cutoff, 4 * D);
	CU_ASSERT_EQUAL(r->algo[2].p1, 6 * H);
}

/* ------------------------------------------------------------------ */
/* keys */

static void test_keys(void)
{
	static const struct {
		const char *host, *ip;
		unsigned port;
		bool inc;
		const char *want;
	} hk[] = {
		{ "mx.Example.COM", "192.0.2.1", 25, true, "T:mx.example.com:192.0.2.1" },
		{ "mx.example.com", "192.0.2.1", 0, true, "T:mx.example.com:192.0.2.1" },
		{ "mx.example.com", "192.0.2.1", 2525, true, "T:mx.example.com:192.0.2.1:2525" },
		{ "mx.example.com", "2001:DB8::1", 25, true, "T:mx.example.com:2001:db8::1" },
		{ "mx.example.com", "2001:db8::1", 2525, true, "T:mx.example.com:[2001:db8::1]:2525" },
		{ "mx.example.com", "192.0.2.1", 25, false, "T:mx.example.com" },
		{ "mx.example.com", "192.0.2.1", 2525, false, "T:mx.example.com:2525" },
		{ "mx.example.com", NULL, 25, true, "T:mx.example.com" },
		{ "127.0.0.1", "127.0.0.1", 2525, true, "T:127.0.0.1:127.0.0.1:2525" },
		{ "::1", "::1", 25, true, "T:[::1]:::1" },
		{ "::1", "::1", 2526, true, "T:[::1]:[::1]:2526" },
	};
	struct q_buf b = { 0 };
	size_t i;

	for (i = 0; i < sizeof(hk) / sizeof(hk[0]); i++) {
		CU_ASSERT_EQUAL(q_retry_key_host(&b, hk[i].host, hk[i].ip,
						 hk[i].port, hk[i].inc), 0);
		CU_ASSERT_STRING_EQUAL(b.data, hk[i].want);
		CU_ASSERT_EQUAL(b.len, strlen(hk[i].want));
	}
	/* the buffer is reset, not appended to */
	CU_ASSERT_EQUAL(q_retry_key_route(&b, "Example.COM"), 0);
	CU_ASSERT_STRING_EQUAL(b.data, "R:example.com");
	CU_ASSERT_EQUAL(q_retry_key_addr(&b, "Alice.Smith@Example.COM",
					 "1tV0aB-000042-Xy"), 0);
	CU_ASSERT_STRING_EQUAL(b.data, "Alice.Smith@example.com:1tV0aB-000042-Xy");
	CU_ASSERT_EQUAL(q_retry_key_addr(&b, "postmaster", "ID"), 0);
	CU_ASSERT_STRING_EQUAL(b.data, "postmaster:ID");
	q_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* records */

static void test_codec(void)
{
	struct q_retry_rec a, b;
	struct q_buf enc = { 0 };
	const char *err;
	size_t i;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.first_failed = T0;
	a.last_try = T0 + 100;
	a.next_try = T0 + 1000;
	a.expired = true;
	a.err = 111;
	a.code = 451;
	strcpy(a.kind, "rcpt_4xx");
	a.text = strdup("451 4.7.1 greylisted, try again");
	CU_ASSERT_EQUAL_FATAL(q_retry_rec_encode(&a, &enc), 0);
	CU_ASSERT_EQUAL((unsigned char)enc.data[0], 1);   /* version byte */
	CU_ASSERT_EQUAL(q_retry_rec_decode(enc.data, enc.len, &b, &err), 0);
	CU_ASSERT_EQUAL(b.first_failed, a.first_failed);
	CU_ASSERT_EQUAL(b.last_try, a.last_try);
	CU_ASSERT_EQUAL(b.next_try, a.next_try);
	CU_ASSERT_EQUAL(b.expired, true);
	CU_ASSERT_EQUAL(b.err, 111);
	CU_ASSERT_EQUAL(b.code, 451);
	CU_ASSERT_STRING_EQUAL(b.kind, "rcpt_4xx");
	CU_ASSERT_PTR_NOT_NULL_FATAL(b.text);
	CU_ASSERT_STRING_EQUAL(b.text, a.text);

	/* every truncation is refused, never misread; b stays as it was */
	for (i = 0; i < enc.len; i++) {
		err = NULL;
		CU_ASSERT_EQUAL(q_retry_rec_decode(enc.data, i, &b, &err), -1);
		CU_ASSERT_PTR_NOT_NULL(err);
	}
	CU_ASSERT_STRING_EQUAL(b.kind, "rcpt_4xx");
	/* a trailing byte too */
	CU_ASSERT_EQUAL(q_buf_addc(&enc, 'x'), 0);
	CU_ASSERT_EQUAL(q_retry_rec_decode(enc.data, enc.len, &b, &err), -1);

	/* an unknown version is refused with its number */
	CU_ASSERT_EQUAL(q_retry_rec_encode(&a, &enc), 0);
	enc.data[0] = 2;
	err = NULL;
	CU_ASSERT_EQUAL(q_retry_rec_decode(enc.data, enc.len, &b, &err), -1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(err);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 2"));

	/* no text round-trips as NULL; negative times survive */
	free(a.text);
	a.text = NULL;
	a.expired = false;
	a.first_failed = -5;
	CU_ASSERT_EQUAL(q_retry_rec_encode(&a, &enc), 0);
	CU_ASSERT_EQUAL(q_retry_rec_decode(enc.data, enc.len, &b, &err), 0);
	CU_ASSERT_PTR_NULL(b.text);
	CU_ASSERT_EQUAL(b.first_failed, -5);
	CU_ASSERT_EQUAL(b.expired, false);

	q_retry_rec_clear(&a);
	q_retry_rec_clear(&b);
	CU_ASSERT_PTR_NULL(b.text);
	q_buf_free(&enc);
}

/* ------------------------------------------------------------------ */
/* the retry database */

static struct q_hints *open_hints(void)
{
	char *dir = t_tmpdir();
	struct q_hints *h = NULL;
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	if (q_hints_open(dir, "smtp", &h, NULL, &err) != 0) {
		fprintf(stderr, "\n  q_hints_open %s: %s\n", dir, err);
		CU_FAIL_FATAL("q_hints_open");
	}
	return h;
}

static void test_db_fail_get_clear(void)
{
	struct q_hints *h = open_hints();
	const char *key = "T:mx.example.com:192.0.2.1";
	struct q_retry_rec rec, got;
	const char *err = NULL;
	char longtext[Q_RETRY_TEXT_MAX + 100];

	memset(&rec, 0, sizeof(rec));
	memset(&got, 0, sizeof(got));
	CU_ASSERT_EQUAL(q_retry_get(h, key, &got, &err), Q_NOTFOUND);

	CU_ASSERT_EQUAL(q_retry_fail(h, key, NULL, 0, "refused_MX", 0, 111,
				     "Connection refused", T0, &rec, &err), 0);
	CU_ASSERT_EQUAL(rec.first_failed, T0);
	CU_ASSERT_EQUAL(rec.next_try, T0 + 900);
	CU_ASSERT_EQUAL(q_retry_get(h, key, &got, &err), 0);
	CU_ASSERT_EQUAL(got.first_failed, T0);
	CU_ASSERT_EQUAL(got.last_try, T0);
	CU_ASSERT_EQUAL(got.next_try, T0 + 900);
	CU_ASSERT_EQUAL(got.err, 111);
	CU_ASSERT_STRING_EQUAL(got.kind, "refused_MX");
	CU_ASSERT_STRING_EQUAL(got.text, "Connection refused");

	/* a second failure continues the record (read-modify-write) */
	memset(longtext, 'x', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	CU_ASSERT_EQUAL(q_retry_fail(h, key, NULL, 0, "timeout_connect_MX", 0,
				     110, longtext, T0 + 900, NULL, &err), 0);
	CU_ASSERT_EQUAL(q_retry_get(h, key, &got, &err), 0);
	CU_ASSERT_EQUAL(got.first_failed, T0);
	CU_ASSERT_EQUAL(got.last_try, T0 + 900);
	CU_ASSERT_EQUAL(got.next_try, T0 + 1800);
	CU_ASSERT_STRING_EQUAL(got.kind, "timeout_connect_MX");
	CU_ASSERT_EQUAL(strlen(got.text), Q_RETRY_TEXT_MAX);

	/* a success deletes */
	CU_ASSERT_EQUAL(q_retry_clear(h, key, &err), 0);
	CU_ASSERT_EQUAL(q_retry_get(h, key, &got, &err), Q_NOTFOUND);
	CU_ASSERT_EQUAL(q_retry_clear(h, key, &err), Q_NOTFOUND);
	/* and the next failure starts a new record */
	CU_ASSERT_EQUAL(q_retry_fail(h, key, NULL, 0, "refused", 0, 111, NULL,
				     T0 + 5000, &rec, &err), 0);
	CU_ASSERT_EQUAL(rec.first_failed, T0 + 5000);
	CU_ASSERT_PTR_NULL(rec.text);

	q_retry_rec_clear(&rec);
	q_retry_rec_clear(&got);
	q_hints_close(&h);
}

/* q_retry_fail hands its key to H: the stored next tries are those of
 * q_retry_compute_key with that key, and two hosts failing at the same
 * moments end up with different ones. */
static void test_db_h_key(void)
{
	struct q_hints *h = open_hints();
	static const char *const keys[] = { "T:a.example:192.0.2.1",
					    "T:b.example:192.0.2.2" };
	struct q_retry_rule rh;
	struct q_retry_rec got[2], model;
	const char *err = NULL;
	size_t k;
	int step;

	parse_rule("H,4d,10m,3", &rh);
	memset(got, 0, sizeof(got));
	for (k = 0; k < 2; k++) {
		memset(&model, 0, sizeof(model));
		for (step = 0; step < 4; step++) {
			time_t now = T0 + step * 2 * H;

			q_retry_compute_key(&model, &rh, 0, keys[k], now);
			CU_ASSERT_EQUAL(q_retry_fail(h, keys[k], &rh, 0, "refused",
						     0, 111, NULL, now, &got[k],
						     &err), 0);
			CU_ASSERT_EQUAL(got[k].next_try, model.next_try);
			CU_ASSERT_EQUAL(got[k].first_failed, T0);
		}
	}
	CU_ASSERT_NOT_EQUAL(got[0].next_try, got[1].next_try);
	q_retry_rec_clear(&got[0]);
	q_retry_rec_clear(&got[1]);
	q_retry_rule_clear(&rh);
	q_hints_close(&h);
}

static void test_db_unknown_version(void)
{
	struct q_hints *h = open_hints();
	const char *key = "R:example.com";
	static const unsigned char future[] = { 9, 1, 2, 3, 4 };
	struct q_retry_rec rec;
	struct q_buf raw = { 0 };
	const char *err = NULL;

	memset(&rec, 0, sizeof(rec));
	CU_ASSERT_EQUAL_FATAL(q_hints_put(h, Q_DB_RETRY, key, strlen(key), future,
					  sizeof(future), &err), 0);
	err = NULL;
	CU_ASSERT_EQUAL(q_retry_get(h, key, &rec, &err), -1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(err);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 9"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, key));
	/* a failure does not overwrite what it cannot read */
	err = NULL;
	CU_ASSERT_EQUAL(q_retry_fail(h, key, NULL, 0, "lookup", 0, 0, "SERVFAIL",
				     T0, &rec, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(err);
	CU_ASSERT_EQUAL(q_hints_get(h, Q_DB_RETRY, key, strlen(key), &raw, &err), 0);
	CU_ASSERT_EQUAL(raw.len, sizeof(future));
	CU_ASSERT(raw.len == sizeof(future) && memcmp(raw.data, future, raw.len) == 0);
	q_buf_free(&raw);
	q_retry_rec_clear(&rec);
	q_hints_close(&h);
}

/* Two processes record failures on one key at the same time: the record
 * stays readable and keeps the first failure time written before. */
static void test_db_concurrent(void)
{
	char *dir = t_tmpdir();
	const char *key = "T:mx.example.com:192.0.2.7";
	struct q_hints *h = NULL;
	struct q_retry_rec rec;
	const char *err = NULL;
	pid_t pid[2];
	int i, st;

	memset(&rec, 0, sizeof(rec));
	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	CU_ASSERT_EQUAL_FATAL(q_hints_open(dir, "smtp", &h, NULL, &err), 0);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, key, NULL, 0, "refused", 0, 111,
					   "first", T0, NULL, &err), 0);
	q_hints_close(&h);
	for (i = 0; i < 2; i++) {
		pid[i] = fork();
		CU_ASSERT_FATAL(pid[i] >= 0);
		if (pid[i] == 0) {
			struct q_hints *ch = NULL;
			int k, bad = 0;

			if (q_hints_open(dir, "smtp", &ch, NULL, &err) != 0)
				_exit(2);
			for (k = 0; k < 50; k++) {
				if (q_retry_fail(ch, key, NULL, 0, "refused", 0,
						 111, "again", T0 + 1 + k, NULL,
						 &err) != 0)
					bad = 1;
			}
			q_hints_close(&ch);
			_exit(bad);
		}
	}
	for (i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(waitpid(pid[i], &st, 0), pid[i]);
		CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	CU_ASSERT_EQUAL_FATAL(q_hints_open(dir, "smtp", &h, NULL, &err), 0);
	CU_ASSERT_EQUAL(q_retry_get(h, key, &rec, &err), 0);
	CU_ASSERT_EQUAL(rec.first_failed, T0);
	CU_ASSERT(rec.last_try >= T0 + 1 && rec.last_try <= T0 + 50);
	q_retry_rec_clear(&rec);
	q_hints_close(&h);
}

void suite_retry(void)
{
	CU_pSuite s = CU_add_suite("retry", NULL, NULL);

	CU_add_test(s, "next try: table of failure sequences", test_compute_table);
	CU_add_test(s, "next try: a dead host's life, default rule",
		    test_compute_default_life);
	CU_add_test(s, "due, host use, delay_after_cutoff", test_due_and_use);
	CU_add_test(s, "next try: huge times and a clock at the edges",
		    test_compute_overflow);
	CU_add_test(s, "next try: H within G's bounds, a sweep of records",
		    test_compute_h);
	CU_add_test(s, "next try: H over a host's life, deterministic",
		    test_compute_h_life);
	CU_add_test(s, "next try: H differs from key to key", test_compute_h_keys);
	CU_add_test(s, "algorithm list: table", test_parse_table);
	CU_add_test(s, "algorithm list: every prefix", test_parse_prefixes);
	CU_add_test(s, "error kinds: valid names", test_kind_valid);
	CU_add_test(s, "error kinds: matching table", test_kind_match);
	CU_add_test(s, "rule selection", test_find_rule);
	CU_add_test(s, "default rule", test_default_rule);
	CU_add_test(s, "key formats", test_keys);
	CU_add_test(s, "record codec and versions", test_codec);
	CU_add_test(s, "db: fail, get, clear", test_db_fail_get_clear);
	CU_add_test(s, "db: q_retry_fail gives H its key", test_db_h_key);
	CU_add_test(s, "db: unknown version is not overwritten",
		    test_db_unknown_version);
	CU_add_test(s, "db: two processes failing one key", test_db_concurrent);
}
