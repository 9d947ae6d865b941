/*
 * tests/fuzz/fuzz_retry_rule.c - the retry-rule language of
 * libq/q_retry.c: q_retry_parse_algos (the algorithm list), the error
 * field (q_retry_kind_valid, q_retry_kind_match) and what is computed
 * from a parsed rule (q_retry_compute, q_retry_final_cutoff,
 * q_retry_host_use).
 *
 * Input: a text (cut at the first NUL). It is parsed as an algorithm
 * list, and used as a rule's error field and as a failure's kind.
 * Checked:
 *  - never a crash, a leak or undefined behaviour; an error has a text;
 *  - a parsed list: types F/G/H, cutoffs > 0 and increasing, intervals
 *    > 0, G and H factors > 1; q_retry_final_cutoff is the last cutoff (0
 *    without algorithms: such a rule expires at once);
 *  - parsing does not depend on the case of F/G/H (documented);
 *  - q_retry_kind_match: "*" and NULL match everything; a rule kind that
 *    q_retry_kind_valid refuses matches nothing; a valid kind matches
 *    itself for a code its form covers (rcpt_45x: 450..459 ...);
 *  - a failure every next_try from t0 under the parsed rule (40 steps):
 *    first_failed stays t0, next_try > now unless the rule has no
 *    algorithms, the interval never exceeds interval_max, expired is
 *    set exactly when now - t0 is past the final cutoff (and stays), and
 *    q_retry_host_use says USE at next_try and never USE before it for a
 *    recent message; each step's interval (computed with a retry key, as
 *    q_retry_fail does) is between half and all of what the rule with
 *    every H written as G gives for the same record (equal when the rule
 *    has no H), with the same expired flag, and the same again when
 *    computed twice.
 */
#include "config.h"
#include "q/retry.h"
#include "fuzz.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char *const kinds[] = {
	"refused", "refused_A", "refused_MX", "timeout", "timeout_A",
	"timeout_MX", "timeout_connect", "timeout_connect_A",
	"timeout_connect_MX", "lost_connection", "tls_required", "lookup",
	"auth_failed", "quota", "mail_4xx", "rcpt_4xx", "data_4xx", "rcpt_451",
	"rcpt_45x", "protocol", "mail_5xx",
};
static const int codes[] = { 0, 421, 450, 451, 459, 550 };

#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))
#define NCODES (sizeof(codes) / sizeof(codes[0]))

static void check_rule(const struct q_retry_rule *r)
{
	for (size_t i = 0; i < r->nalgo; i++) {
		const struct q_retry_algo *a = &r->algo[i];

		FZ_CHECK(a->type == 'F' || a->type == 'G' || a->type == 'H',
			 "algo %zu type %c", i, a->type);
		FZ_CHECK(a->cutoff > 0 && a->p1 > 0, "algo %zu cutoff %lld p1 %lld",
			 i, a->cutoff, a->p1);
		FZ_CHECK(a->type == 'F' || a->factor > 1.0, "algo %zu factor %g",
			 i, a->factor);
		FZ_CHECK(i == 0 || a->cutoff > r->algo[i - 1].cutoff,
			 "algo %zu cutoff not increasing", i);
	}
	FZ_CHECK(q_retry_final_cutoff(r) ==
		 (r->nalgo ? r->algo[r->nalgo - 1].cutoff : 0), "final cutoff");
}

/* rule with every H written as G (twin->algo malloc'd, or NULL) */
static void g_twin(const struct q_retry_rule *rule, struct q_retry_rule *twin)
{
	memset(twin, 0, sizeof(*twin));
	if (rule->nalgo == 0)
		return;
	twin->algo = malloc(rule->nalgo * sizeof(*twin->algo));
	if (twin->algo == NULL)
		fz_harness_fail("out of memory");
	memcpy(twin->algo, rule->algo, rule->nalgo * sizeof(*twin->algo));
	twin->nalgo = rule->nalgo;
	for (size_t i = 0; i < twin->nalgo; i++)
		if (twin->algo[i].type == 'H')
			twin->algo[i].type = 'G';
}

static void simulate(const struct q_retry_rule *rule, long long imax)
{
	static const char key[] = "T:mx.example.com:192.0.2.1";
	struct q_retry_rule twin;
	bool has_h = false;
	const time_t t0 = 1700000000;
	long long final = q_retry_final_cutoff(rule);
	long long cap = imax > 0 ? imax : 86400;
	struct q_retry_rec rec;
	time_t now = t0;
	bool was_expired = false;

	g_twin(rule, &twin);
	for (size_t i = 0; i < rule->nalgo; i++)
		has_h |= rule->algo[i].type == 'H';
	memset(&rec, 0, sizeof(rec));
	for (int step = 0; step < 40; step++) {
		struct q_retry_rec g = rec, again = rec;   /* no text: shallow */
		long long ih, ig;

		q_retry_compute(&g, &twin, imax, now);
		q_retry_compute_key(&again, rule, imax, key, now);
		q_retry_compute_key(&rec, rule, imax, key, now);
		ih = (long long)(rec.next_try - now);
		ig = (long long)(g.next_try - now);
		FZ_CHECK(again.next_try == rec.next_try, "step %d: H not "
			 "deterministic", step);
		FZ_CHECK(g.expired == rec.expired, "step %d: expired differs "
			 "from G's", step);
		FZ_CHECK(has_h ? ih >= ig / 2 && ih <= ig : ih == ig,
			 "step %d: interval %lld, G's %lld", step, ih, ig);
		FZ_CHECK(rec.first_failed == t0, "step %d: first_failed moved", step);
		FZ_CHECK(rec.last_try == now, "step %d: last_try", step);
		FZ_CHECK(rec.next_try >= now && rec.next_try - now <= cap,
			 "step %d: interval %lld (cap %lld)", step,
			 (long long)(rec.next_try - now), cap);
		if (rule->nalgo > 0)
			FZ_CHECK(rec.next_try > now, "step %d: no progress", step);
		FZ_CHECK(rec.expired == (rule->nalgo == 0 || now - t0 > final),
			 "step %d: expired %d after %lld s, final cutoff %lld",
			 step, rec.expired, (long long)(now - t0), final);
		FZ_CHECK(!was_expired || rec.expired, "step %d: unexpired", step);
		was_expired = rec.expired;
		FZ_CHECK(q_retry_due(&rec, rec.next_try) &&
			 (rec.next_try == now || !q_retry_due(&rec, rec.next_try - 1)),
			 "step %d: q_retry_due", step);
		FZ_CHECK(q_retry_host_use(&rec, rule, now, rec.next_try) ==
			 Q_RETRY_USE, "step %d: not usable at next_try", step);
		if (rec.next_try > now)
			FZ_CHECK(q_retry_host_use(&rec, rule, now, now) !=
				 Q_RETRY_USE, "step %d: usable before next_try "
				 "for a new message", step);
		if (rec.next_try == now)
			break;
		now = rec.next_try;
	}
	q_retry_rec_clear(&rec);
	free(twin.algo);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct q_retry_rule rule, rule2;
	const char *err = NULL;
	char *s = fz_strndup(data, size), *t;
	bool valid;
	int r;

	memset(&rule, 0, sizeof(rule));
	r = q_retry_parse_algos(s, &rule, &err);
	FZ_CHECK(r == 0 || r == -1, "q_retry_parse_algos returned %d", r);
	/* F/G/H are case-insensitive: the text with its algorithm letters
	 * upper-cased parses the same */
	t = strdup(s);
	if (t == NULL)
		fz_harness_fail("out of memory");
	/* only an item's first character is an algorithm letter ('h' is
	 * also the unit of hours) */
	for (char *p = t, *item = t; *p; p++) {
		if (*p == ';')
			item = p + 1;
		else if (p == item && (*p == ' ' || *p == '\t'))
			item = p + 1;
		else if (p == item && (*p == 'f' || *p == 'g' || *p == 'h'))
			*p = (char)toupper((unsigned char)*p);
	}
	memset(&rule2, 0, sizeof(rule2));
	if (strpbrk(s, "fgh") == NULL ||
	    strspn(s, "FGHfgh0123456789,;. \t") == strlen(s)) {
		int r2 = q_retry_parse_algos(t, &rule2, NULL);

		FZ_CHECK(r2 == r, "\"%s\" gives %d, upper-cased %d", s, r, r2);
		if (r == 0)
			FZ_CHECK(rule2.nalgo == rule.nalgo &&
				 (rule.nalgo == 0 || memcmp(rule.algo, rule2.algo,
				  rule.nalgo * sizeof(*rule.algo)) == 0),
				 "upper-cased text gives another rule");
		free(rule2.algo);
	}
	free(t);
	if (r == 0) {
		check_rule(&rule);
		simulate(&rule, 0);
		simulate(&rule, 3600);
		free(rule.algo);
	} else {
		FZ_CHECK(err != NULL && err[0] != '\0', "error without text");
	}

	valid = q_retry_kind_valid(s);
	FZ_CHECK(q_retry_kind_match("*", s, 451) && q_retry_kind_match(NULL, s, 0),
		 "\"*\" does not match everything");
	for (size_t i = 0; i < NKINDS; i++) {
		for (size_t c = 0; c < NCODES; c++) {
			bool m = q_retry_kind_match(s, kinds[i], codes[c]);

			if (!valid && strcmp(s, "*") != 0)
				FZ_CHECK(!m, "invalid rule kind \"%s\" matches %s/%d",
					 s, kinds[i], codes[c]);
		}
		(void)q_retry_kind_match(kinds[i], s, 451);
	}
	if (valid) {
		/* a kind matches itself; the 4xx forms with a code they cover */
		bool any = false;

		for (size_t c = 0; c < NCODES && !any; c++)
			any = q_retry_kind_match(s, s, codes[c]);
		for (int code = 400; code <= 499 && !any; code++)
			any = q_retry_kind_match(s, s, code);
		FZ_CHECK(any || q_retry_kind_match(s, s, 0),
			 "valid kind \"%s\" does not match itself", s);
	}
	free(s);
	return 0;
}
